"""The publish stage's trailers table: fixed-size vectors (``float32[D]``, ``float32[G]``),
nulls for trailers without an embedding, and an incremental run's reuse of the embeddings of
a snapshot published before (fixed-size) or before issue 14 (``list<float32>``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmx import schema
from mmx.stages import publish
from mmx.stages.embed import EMBEDDINGS
from mmx.stages.index import ASSIGNMENTS

D, VOCAB = 6, ["Action", "Comedy", "Horror"]
OK = ["t0", "t1", "t2"]


def _meta() -> pa.Table:
    rows = [{"trailer_id": t, "status": "ok", "reason": "", "n_clips": 3,
             "genres": ["Action"] if t == "t0" else [], "split": "train"} for t in OK]
    rows.append({"trailer_id": "t9", "status": "failed", "reason": "decode", "n_clips": 0,
                 "genres": [], "split": "unseen"})
    cols = {f.name: [r.get(f.name) for r in rows] for f in publish.META}
    return pa.table(cols, schema=publish.META)


@pytest.fixture()
def published(ray_session, tmp_path, write_embeddings) -> tuple[pa.Table, np.ndarray]:
    """A trailers table written by the publish stage from a real embeddings folder."""
    x = np.random.default_rng(0).normal(size=(len(OK), D)).astype(np.float32)
    scores = np.random.default_rng(1).uniform(size=(len(OK), len(VOCAB))).astype(np.float32)
    emb = write_embeddings(tmp_path / "embeddings", OK, x, scores)
    pq.write_table(pa.table({"trailer_id": OK, "subgenre": pa.array([0, 1, 0], pa.int32()),
                             "previous_subgenre": pa.nulls(len(OK), pa.int32())},
                            schema=ASSIGNMENTS), tmp_path / "assignments.parquet")
    out = tmp_path / "trailers.parquet"
    n = publish.write_trailers(_meta(), emb, str(tmp_path / "assignments.parquet"), VOCAB,
                               0.5, str(out))
    assert n == len(OK) + 1
    return pq.read_table(out), x


def test_trailers_table_has_fixed_size_vectors(published: tuple[pa.Table, np.ndarray]) -> None:
    table, x = published
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), D)
    assert table.schema.field("genre_scores").type == pa.list_(pa.float32(), len(VOCAB))
    assert schema.vocab_of(table.schema) == VOCAB
    by_id = {t: i for i, t in enumerate(table["trailer_id"].to_pylist())}
    ok = table.take([by_id[t] for t in OK])
    np.testing.assert_array_equal(schema.matrix(ok["embedding"]), x)
    failed = table.take([by_id["t9"]])
    assert failed["embedding"].null_count == 1 and failed["genre_scores"].null_count == 1


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "list-before-issue-14"])
def test_reuse_embeddings_reads_either_vector_type(
    published: tuple[pa.Table, np.ndarray], old: bool, tmp_path
) -> None:
    table, x = published
    if old:  # a snapshot published before the vectors had a fixed size
        table = table.cast(schema.with_vocab(schema.TRAILERS, VOCAB))
    prev = tmp_path / "previous_trailers.parquet"
    pq.write_table(table, prev)
    dest = tmp_path / "reused"
    publish.reuse_embeddings(str(prev), ["t1", "t2"], 2, str(dest), 10)
    got = pq.read_table(dest).sort_by("trailer_id")
    assert got.schema.field("embedding").type == EMBEDDINGS.field("embedding").type
    assert got["trailer_id"].to_pylist() == ["t1", "t2"]
    np.testing.assert_array_equal(schema.matrix(got["embedding"]), x[1:])
