"""The run's features store: rows cached before a column existed still load."""

from __future__ import annotations

import pyarrow as pa

from mmx import schema
from mmx.stages.store import _rename


def test_rows_cached_before_thumbnails_get_a_null_thumbnail() -> None:
    old = schema.FEATURES.remove(schema.FEATURES.get_field_index("thumbnail"))
    cols = {f.name: pa.nulls(2, f.type) for f in old}
    cols |= {"trailer_id": pa.array(["a", "b"]), "uri": pa.array(["a", "b"]),
             "fingerprint": pa.array(["f1", "f2"]), "status": pa.array(["ok", "ok"])}
    batch = pa.table(cols, schema=old)
    names = pa.table({"fingerprint": ["f2"], "trailer_id": ["renamed"], "uri": ["s3://x/b"]})
    out = _rename(batch, names)
    assert out.schema.equals(schema.FEATURES)
    assert out.to_pylist()[0]["trailer_id"] == "renamed"
    assert out["thumbnail"].to_pylist() == [None]
