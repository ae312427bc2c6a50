"""Vector hygiene shared by the index package: shape/dtype checks and L2 normalisation.

Owns the one rule every index module relies on: similarity is cosine, computed as the inner
product of L2-normalised float32 vectors. Nothing else in ``mmx.index`` normalises by hand.

Memory: at archive scale (1M × 2048 float32 = 8 GiB) a full-size temporary is as costly as
the data, so every pass here works in row blocks of :data:`CHUNK_ROWS` and never allocates an
(N, D) temporary beyond the one output array (none at all with ``copy=False``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

# Rows per block of the chunked passes (16k × 2048 float32 = 128 MiB).
CHUNK_ROWS = 16_384


def row_blocks(n: int, chunk: int | None = None) -> Iterator[slice]:
    """Consecutive row slices covering ``range(n)``, ``chunk`` (default :data:`CHUNK_ROWS`)
    rows each, the last shorter."""
    chunk = chunk or CHUNK_ROWS
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def as_matrix(
    vectors: npt.ArrayLike, *, name: str = "vectors", dim: int | None = None
) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 array of shape (N, D).

    No copy when ``vectors`` already is one. Raises ``ValueError`` if it is not 2-D, has the
    wrong width ``dim`` or holds NaN/inf (FAISS would index those silently and return garbage
    neighbours); the check runs in row blocks.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: expected width {dim}, got shape {x.shape}")
    if x.size:
        bad = 0
        for rows in row_blocks(len(x)):
            finite = np.isfinite(x[rows]).all(axis=1)  # (chunk,)
            bad += int((~finite).sum())
        if bad:
            raise ValueError(f"{name}: {bad} row(s) contain NaN or inf")
    return x


def l2_normalise(
    vectors: npt.ArrayLike, *, name: str = "vectors", dim: int | None = None, copy: bool = True
) -> np.ndarray:
    """L2-normalised float32 ``vectors`` (N, D); all-zero rows stay zero.

    ``copy=True`` (default) returns a new array and leaves the input alone. ``copy=False``
    normalises in place when ``vectors`` already is a C-contiguous float32 array (the caller's
    array changes) and otherwise normalises the converted copy; either way, use the result.
    """
    x = as_matrix(vectors, name=name, dim=dim)
    out = np.empty_like(x) if copy and _shares(x, vectors) else x
    for rows in row_blocks(len(x)):
        block = x[rows]  # (chunk, D) view
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]  # (chunk, 1)
        np.divide(block, norms, out=out[rows], where=norms > 0)
        out[rows][(norms == 0)[:, 0]] = 0.0
    return out


def _shares(x: np.ndarray, original: object) -> bool:
    """True if ``x`` (from :func:`as_matrix`) may be, or view, the caller's ``original``."""
    return isinstance(original, np.ndarray) and np.may_share_memory(x, original)
