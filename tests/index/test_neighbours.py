"""Neighbours table: top-k per trailer without itself, equal to brute-force cosine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmx import schema
from mmx.index.neighbours import neighbours
from mmx.index.shards import ShardedIndex, build_index


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Seeded clustered vectors (n, dim) float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    x = centres[rng.integers(0, 8, size=n)] + 0.5 * rng.normal(size=(n, dim))
    return x.astype(np.float32)


def load(tmp_path: Path, x: np.ndarray, tids: list[str]) -> ShardedIndex:
    build_index(str(tmp_path), tids, x, n_shards=3, model_version="m", exact_below=10**6, seed=0)
    return ShardedIndex.load(str(tmp_path))


def test_neighbours_match_brute_force_without_self(tmp_path: Path) -> None:
    x = clustered(400)
    tids = [f"t{i:04d}" for i in range(len(x))]
    index = load(tmp_path, x, tids)
    k = 5
    table = neighbours(index, tids, x, k, batch_size=64)
    assert table.schema.equals(schema.NEIGHBOURS)
    assert table.num_rows == len(x) * k
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T  # (N, N)
    np.fill_diagonal(sims, -np.inf)
    want_rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (N, k)
    got = table.to_pydict()
    np.testing.assert_array_equal(got["trailer_id"], np.repeat(tids, k))
    np.testing.assert_array_equal(got["rank"], np.tile(np.arange(1, k + 1), len(x)))
    np.testing.assert_array_equal(got["neighbour_id"], np.asarray(tids)[want_rows].ravel())
    np.testing.assert_allclose(
        got["score"], np.take_along_axis(sims, want_rows, axis=1).ravel(), atol=1e-5
    )
    assert not any(a == b for a, b in zip(got["trailer_id"], got["neighbour_id"], strict=True))
    # Batch size does not change the answer.
    assert neighbours(index, tids, x, k, batch_size=1000).equals(table)


def test_self_is_dropped_even_behind_an_identical_twin(tmp_path: Path) -> None:
    x = clustered(30)
    x[1] = x[0]  # twins: either may come first in the raw result list
    tids = [f"t{i}" for i in range(len(x))]
    table = neighbours(load(tmp_path, x, tids), tids[:2], x[:2], 3).to_pydict()
    assert table["neighbour_id"][0] == "t1" and table["neighbour_id"][3] == "t0"
    assert "t0" not in table["neighbour_id"][:3] and "t1" not in table["neighbour_id"][3:]


def test_small_index_gives_fewer_rows(tmp_path: Path) -> None:
    x = clustered(3)
    tids = ["a", "b", "c"]
    table = neighbours(load(tmp_path, x, tids), tids, x, 5)
    assert table.num_rows == 6  # each trailer has only two others
    assert table.column("rank").to_pylist() == [1, 2] * 3
