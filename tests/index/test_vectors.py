"""Vector hygiene: chunked checks and normalisation, copy vs in place, no full-size temporaries."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mmx.index import vectors
from mmx.index.vectors import as_matrix, l2_normalise, row_blocks


@pytest.fixture()
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 rows, so a few dozen rows exercise the block boundaries."""
    monkeypatch.setattr(vectors, "CHUNK_ROWS", 7)


def test_row_blocks_cover_every_row_once() -> None:
    blocks = list(row_blocks(23, 7))
    assert [(b.start, b.stop) for b in blocks] == [(0, 7), (7, 14), (14, 21), (21, 23)]
    assert list(row_blocks(0, 7)) == []


def test_normalise_across_blocks_matches_numpy(small_chunks: None) -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(30, 5)) * rng.uniform(0.1, 9, size=(30, 1))).astype(np.float32)
    x[[3, 20]] = 0.0  # zero rows, in two different blocks
    want = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    before = x.copy()
    got = l2_normalise(x)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not got[[3, 20]].any()
    np.testing.assert_array_equal(x, before)  # copy=True leaves the input alone
    assert not np.shares_memory(got, x)


def test_normalise_in_place(small_chunks: None) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(25, 4)).astype(np.float32) * 3
    out = l2_normalise(x, copy=False)
    assert out is x
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    # A view is normalised in place too; a non-float32 input is converted (the input is kept).
    y = rng.normal(size=(10, 4)).astype(np.float32) * 5
    l2_normalise(y[2:8], copy=False)
    np.testing.assert_allclose(np.linalg.norm(y[2:8], axis=1), 1.0, atol=1e-6)
    assert np.linalg.norm(y[0]) > 1.5
    z = rng.normal(size=(10, 4)) * 5  # float64
    out = l2_normalise(z, copy=False)
    assert out.dtype == np.float32 and np.linalg.norm(z[0]) > 1.5


def test_nan_rows_are_counted_in_every_block(small_chunks: None) -> None:
    x = np.ones((30, 3), dtype=np.float32)
    x[1, 0] = np.nan
    x[15, 2] = np.inf
    x[29] = np.nan
    with pytest.raises(ValueError, match="3 row"):
        as_matrix(x)
    with pytest.raises(ValueError, match="width 4"):
        as_matrix(np.ones((2, 3), np.float32), dim=4)


def test_no_full_size_temporaries() -> None:
    """Checks and in-place normalisation allocate at most a block, not an (N, D) array."""
    x = np.random.default_rng(2).normal(size=(60_000, 64)).astype(np.float32)  # 15 MiB
    tracemalloc.start()
    try:
        assert as_matrix(x) is x
        l2_normalise(x, copy=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 2, f"peak {peak} bytes for a {x.nbytes}-byte input"
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
