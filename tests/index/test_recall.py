"""Index recall vs exact search: IVF with few probes misses neighbours, the ladder finds enough."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmx.index.recall import measure_recall, nprobe_ladder, recall_at_k
from mmx.index.shards import ShardedIndex, build_index


def _vectors(n: int = 3000, d: int = 16, seed: int = 0) -> tuple[list[str], np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)  # no clusters
    return [f"t{i:05d}" for i in range(n)], x


def test_ladder_doubles_up_to_nlist() -> None:
    assert nprobe_ladder(1) == [1]
    assert nprobe_ladder(8) == [1, 2, 4, 8]
    assert nprobe_ladder(12) == [1, 2, 4, 8, 12]


def test_recall_counts_found_truth() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    found = np.array([[4, 3, 9, 9], [6, 5, -1, -1]])
    assert recall_at_k(found, truth) == pytest.approx((0.5 + 1.0) / 2)


def test_ivf_with_one_probe_misses_and_the_ladder_reaches_the_target(tmp_path: Path) -> None:
    tids, x = _vectors()
    build_index(str(tmp_path), tids, x, n_shards=3, model_version="m", exact_below=100,
                seed=0, nlist=32, encoding="flat")
    index = ShardedIndex.load(str(tmp_path), nprobe=1)
    got = measure_recall(index, tids, x, queries=200, target=0.95, seed=0)
    assert got["kind"] == "ivf" and got["shards"] == 3 and got["n_queries"] == 200
    assert got["nprobe"] == 1 and got["nlist"] == 32
    assert got["recall_at_10"] < 0.8  # uniform vectors: one list of 32 holds few true neighbours
    p = got["nprobe_for_target"]
    assert p is not None and 1 < p <= 32
    assert got["ladder"][str(p)] >= 0.95
    assert all(r < 0.95 for q, r in got["ladder"].items() if int(q) < p)
    again = ShardedIndex.load(str(tmp_path), nprobe=p)
    assert measure_recall(again, tids, x, queries=200, target=0.95, seed=0)["recall_at_10"] >= 0.95


def test_flat_index_is_exact(tmp_path: Path) -> None:
    tids, x = _vectors(n=300)
    build_index(str(tmp_path), tids, x, n_shards=2, model_version="m", exact_below=10_000, seed=0)
    got = measure_recall(ShardedIndex.load(str(tmp_path)), tids, x, queries=50, target=0.9, seed=0)
    assert got["kind"] == "flat" and got["recall_at_10"] == 1.0 and got["nprobe"] is None
    assert "exact" in got["note"]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    tids, x = _vectors(n=50)
    build_index(str(tmp_path), tids, x, n_shards=1, model_version="m", exact_below=10_000, seed=0)
    index = ShardedIndex.load(str(tmp_path))
    with pytest.raises(ValueError, match="target"):
        measure_recall(index, tids, x, queries=10, target=1.5, seed=0)
    with pytest.raises(ValueError, match="queries"):
        measure_recall(index, tids, x, queries=0, target=0.9, seed=0)
    with pytest.raises(ValueError, match="trailer_ids"):
        measure_recall(index, tids[:-1], x, queries=10, target=0.9, seed=0)


def test_exact_top_k_over_parts_equals_one_exact_search() -> None:
    import faiss

    from mmx.index.recall import exact_top_k
    from mmx.index.shards import stable_ids
    from mmx.index.vectors import l2_normalise

    tids, x = _vectors(n=500)
    xn = l2_normalise(x, name="x", dim=x.shape[1], copy=True)
    q = xn[[3, 100, 499]]
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(xn)
    _, pos = flat.search(q, 10)
    want = stable_ids(tids)[pos]  # (3, 10)
    parts = [(tids[i:i + 128], x[i:i + 128]) for i in range(0, 500, 128)]  # 4 parts, one short
    got = exact_top_k(q, iter(parts), 10, x.shape[1])
    assert [set(r) for r in got.tolist()] == [set(r) for r in want.tolist()]
    assert (exact_top_k(q, iter(parts[:1]), 200, x.shape[1]) == -1).sum() == 3 * 72  # 128 < 200
