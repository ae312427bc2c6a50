"""The index stage over an embeddings folder: a shard that no trailer hashes to is written
empty (a small archive can leave one), and the index answers from the others."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmx.config import build_config
from mmx.index import shards
from mmx.stages import index
from mmx.stages.embed import EMBEDDINGS


def test_build_index_with_an_empty_shard(ray_session, tmp_path) -> None:
    cfg = build_config(profile="tiny")  # 2 shards
    ids = [t for t in (f"t{i:03d}" for i in range(200)) if shards.shard_of(t, 2) == 1][:6]
    x = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    emb = tmp_path / "embeddings"
    emb.mkdir()
    pq.write_table(pa.table({
        "trailer_id": ids, "shard": pa.array([1] * len(ids), pa.int32()),
        "embedding": pa.array(list(x), pa.list_(pa.float32())),
        "coarse_embedding": pa.nulls(len(ids), pa.list_(pa.float32())),
        "genre_scores": pa.nulls(len(ids), pa.list_(pa.float32())),
        "concepts": pa.nulls(len(ids), pa.list_(pa.int16())),
    }, schema=EMBEDDINGS), emb / "part-0.parquet")

    manifest = index.build_index(str(emb), cfg, str(tmp_path / "faiss"), "m1")
    assert manifest["ntotal"] == len(ids)
    assert sorted(s["count"] for s in manifest["shards"]) == [0, len(ids)]
    loaded = shards.ShardedIndex.load(str(tmp_path / "faiss"))
    _, found = loaded.search(x[:2], 1)
    assert found[:, 0].tolist() == ids[:2]  # each vector finds itself
