"""The index stage over an embeddings folder: a shard that no trailer hashes to is written
empty (a small archive can leave one), and the index answers from the others."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmx.config import build_config
from mmx.index import shards
from mmx.stages import index


def test_build_index_with_an_empty_shard(ray_session, tmp_path, write_embeddings) -> None:
    cfg = build_config(profile="tiny")  # 2 shards
    ids = [t for t in (f"t{i:03d}" for i in range(200)) if shards.shard_of(t, 2) == 1][:6]
    x = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    emb = write_embeddings(tmp_path / "embeddings", ids, x)

    manifest = index.build_index(emb, cfg, str(tmp_path / "faiss"), "m1")
    assert manifest["ntotal"] == len(ids)
    assert sorted(s["count"] for s in manifest["shards"]) == [0, len(ids)]
    loaded = shards.ShardedIndex.load(str(tmp_path / "faiss"))
    _, found = loaded.search(x[:2], 1)
    assert found[:, 0].tolist() == ids[:2]  # each vector finds itself


def test_reclustering_keeps_the_previous_ids(tmp_path, write_embeddings) -> None:
    """A re-clustering (another embedding space) names its clusters after the previous
    snapshot's by shared members: ids, previous_subgenre per trailer, stability figure."""
    cfg = build_config(profile="tiny", overrides={"index": {"n_subgenres": 3}})
    rng = np.random.default_rng(1)
    group = np.repeat([0, 1, 2], [12, 8, 5])  # distinct sizes: k-means numbers them by size
    centres = rng.normal(size=(3, 8)) * 5
    x = (centres[group] + rng.normal(size=(len(group), 8))).astype(np.float32)
    ids = [f"t{i:03d}" for i in range(len(group))]
    emb = write_embeddings(tmp_path / "embeddings", ids, x)
    before = tmp_path / "before"
    before.mkdir()
    old_name = np.array([9, 2, 7])  # what the previous snapshot called each group
    known = ids[:-1]  # the last trailer is new this run
    pq.write_table(pa.table({"trailer_id": known,
                             "subgenre": pa.array(old_name[group[:-1]], pa.int32())}),
                   before / "trailers.parquet")
    pq.write_table(pa.table({"subgenre": pa.array([2, 7, 9, 11], pa.int32())}),
                   before / "subgenres.parquet")  # 11: retired since (no member left)
    (before / "metrics.json").write_text('{"subgenres": {"id_high_water": 14}}')

    table, quality = index._cluster(emb, {}, [], cfg, str(tmp_path / "assign.parquet"), None,
                                    str(before))
    assert table["subgenre"].to_pylist() == [2, 7, 9]  # the previous names, sorted
    got = pq.read_table(tmp_path / "assign.parquet").to_pylist()
    assert [r["subgenre"] for r in got] == old_name[group].tolist()
    assert [r["previous_subgenre"] for r in got] == old_name[group[:-1]].tolist() + [None]
    s = quality["stability"]
    assert s["kept_share"] == 1.0 and s["n"] == len(known) and s["ari"] == 1.0
    assert (s["matched"], s["new"], s["retired"], s["retired_ids"]) == (3, 0, 1, [11])
    assert quality["id_high_water"] == 14

    cfg4 = build_config(profile="tiny", overrides={"index": {"n_subgenres": 4}})
    table, quality = index._cluster(emb, {}, [], cfg4, str(tmp_path / "assign4.parquet"), None,
                                    str(before))
    assert table["subgenre"].to_pylist() == [2, 7, 9, 15]  # one new: above all ever used
    assert quality["stability"]["new"] == 1 and quality["id_high_water"] == 15


def test_measure_index_of_a_flat_index(tmp_path, write_embeddings) -> None:
    cfg = build_config(profile="tiny")
    ids = [f"t{i:03d}" for i in range(30)]
    x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    emb = write_embeddings(tmp_path / "embeddings", ids, x)
    shards.build_index(str(tmp_path / "faiss"), ids, x, n_shards=2, model_version="m",
                       exact_below=1000, seed=0)
    got = index._measure(str(tmp_path / "faiss"), emb, cfg)
    assert got["kind"] == "flat" and got["recall_at_10"] == 1.0 and got["shards"] == 2
    assert got["n_queries"] == 30 and got["recall_target"] == cfg.index.recall_target


def test_measure_index_of_an_ivf_index_reads_the_vectors_in_parts(
    tmp_path, write_embeddings,
) -> None:
    from dataclasses import replace

    from mmx.index.recall import measure_recall

    cfg = build_config(profile="tiny")
    cfg = replace(cfg, index=replace(cfg.index, recall_batch=97, recall_queries=64, nprobe=1))
    ids = [f"t{i:04d}" for i in range(1500)]
    x = np.random.default_rng(1).normal(size=(1500, 8)).astype(np.float32)
    emb = write_embeddings(tmp_path / "embeddings", ids, x)
    shards.build_index(str(tmp_path / "faiss"), ids, x, n_shards=2, model_version="m",
                       exact_below=100, seed=0, nlist=16, encoding="flat")
    got = index._measure(str(tmp_path / "faiss"), emb, cfg)  # 16 steps of 97 vectors
    assert got["kind"] == "ivf" and got["n_queries"] == 64 and got["nprobe"] == 1
    loaded = shards.ShardedIndex.load(str(tmp_path / "faiss"), nprobe=1)
    whole = measure_recall(loaded, ids, x, queries=64, target=cfg.index.recall_target,
                           seed=cfg.index.seed)  # the same, all vectors in memory
    assert got == whole and got["recall_at_10"] < 1.0
