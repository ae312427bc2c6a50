"""``Snapshot.sql`` and ``Snapshot.table`` scan the snapshot's Parquet files lazily, local and
on S3 (moto): DuckDB views over the files, so a ``count(*)`` never fetches the embeddings;
vectors are ``FLOAT[D]``; snapshots published before fixed-size vectors still read; and a
query cannot reach a file outside the output root. The snapshots here are written directly
(published tables of a known size), no pipeline run."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmx import schema, storage
from mmx.query import Snapshot, SnapshotError

N, D = 1500, 512  # the embedding column: N·D·4 bytes = 3 MB of incompressible floats
VOCAB = ["Action", "Comedy"]


def _trailers(fixed: bool) -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    ok = np.arange(N) % 10 != 0  # every tenth trailer failed: null embedding
    emb = pa.array(list(x), pa.list_(pa.float32()))
    emb = pc.if_else(pa.array(ok), emb, pa.nulls(N, emb.type))
    scores = pa.array(list(rng.uniform(size=(N, len(VOCAB))).astype(np.float32)),
                      pa.list_(pa.float32()))
    rows = {f.name: pa.nulls(N, f.type) for f in schema.TRAILERS}
    rows |= {
        "trailer_id": pa.array([f"trailer_{i:05d}" for i in range(N)]),
        "status": pa.array(np.where(ok, "ok", "failed")),
        "genres": pa.array([[VOCAB[i % 2]] for i in range(N)], pa.list_(pa.string())),
        "embedding": emb,
        "genre_scores": scores,
    }
    table = pa.table(rows, schema=schema.with_vocab(schema.TRAILERS, VOCAB))
    if fixed:
        table = table.cast(schema.with_vocab(
            schema.published(schema.TRAILERS, embedding=D, genre_scores=len(VOCAB)), VOCAB))
    return table


def _publish(out: str, fixed: bool = True) -> Snapshot:
    name = storage.new_snapshot_name()
    snap = storage.snapshot_uri(out, name)
    storage.write_table(_trailers(fixed), storage.join(snap, "trailers.parquet"))
    for table in ("scenes", "subgenres", "neighbours"):
        storage.write_table(schema.empty(schema.TABLES[table]),
                            storage.join(snap, f"{table}.parquet"))
    storage.write_json(storage.join(snap, "genres.json"), VOCAB)
    storage.publish(out, name, expected=storage.latest_name(out))
    return Snapshot.open(out)


@pytest.mark.parametrize("fixed", [True, False], ids=["float32[D]", "list-before-issue-14"])
def test_sql_and_table_read_the_files_lazily(out: str, fixed: bool, tmp_path) -> None:
    snap = _publish(out, fixed)
    assert snap.sql("SELECT count(*) AS n FROM trailers")["n"].to_pylist() == [N]
    ok = snap.sql("SELECT count(*) AS n FROM trailers WHERE embedding IS NOT NULL")
    assert ok["n"][0].as_py() == N - N // 10
    kind = snap.sql("SELECT typeof(embedding) AS t FROM trailers LIMIT 1")["t"][0].as_py()
    assert kind == (f"FLOAT[{D}]" if fixed else "FLOAT[]")
    if fixed:  # the fixed size is what DuckDB's array functions want
        near = snap.sql(
            "SELECT b.trailer_id, array_cosine_similarity(a.embedding, b.embedding) AS s "
            "FROM trailers a, trailers b WHERE a.trailer_id = 'trailer_00001' "
            "AND b.embedding IS NOT NULL ORDER BY s DESC LIMIT 1")
        assert near["trailer_id"][0].as_py() == "trailer_00001"
        assert near["s"][0].as_py() == pytest.approx(1.0, abs=1e-5)

    one = snap.table("trailers", columns=["trailer_id", "embedding"],
                     filters=pc.field("trailer_id") == "trailer_00003")
    assert one.column_names == ["trailer_id", "embedding"] and one.num_rows == 1
    assert schema.matrix(one["embedding"]).shape == (1, D)
    with pytest.raises(SnapshotError, match="nope"):
        snap.table("trailers", columns=["nope"])

    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    for query in (f"SELECT * FROM read_csv('{outside}')", "INSTALL httpfs",
                  "SET enable_external_access = true"):
        with pytest.raises(SnapshotError):
            snap.sql(query)


def test_count_does_not_fetch_the_embedding_column(s3_endpoint: str, monkeypatch) -> None:
    """Bytes fetched from S3 by ``SELECT count(*)`` and by a one-trailer lookup, counted at
    s3fs's range GET, against the size of the embedding column chunk."""
    import s3fs.core

    out = f"s3://mmx-test/scan-{storage.new_snapshot_name().lower()}/out"
    snap = _publish(out)
    fs, path = storage.filesystem(storage.join(snap.uri, "trailers.parquet"))
    meta = pq.ParquetFile(io.BytesIO(fs.cat_file(path))).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    at = next(i for i, n in enumerate(names) if n.startswith("embedding."))
    embedding_bytes = sum(meta.row_group(g).column(at).total_compressed_size
                          for g in range(meta.num_row_groups))
    assert embedding_bytes > 0.9 * N * D * 4  # the bulk of the file

    fetched: list[int] = []
    fetch = s3fs.core.S3File._fetch_range

    def counting(self, start: int, end: int) -> bytes:
        data = fetch(self, start, end)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    assert snap.sql("SELECT count(*) AS n FROM trailers")["n"][0].as_py() == N
    assert 0 < sum(fetched) < embedding_bytes / 20, fetched
    fetched.clear()
    got = snap.sql("SELECT status FROM trailers WHERE trailer_id = 'trailer_00007'")
    assert got["status"].to_pylist() == ["ok"]
    assert sum(fetched) < embedding_bytes / 20, fetched
    fetched.clear()  # and the embedding, when asked for, is fetched
    snap.sql("SELECT sum(len(embedding)) FROM trailers")
    assert sum(fetched) >= embedding_bytes
