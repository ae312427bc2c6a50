"""Vector hygiene shared by the index package: shape/dtype checks and L2 normalisation.

Owns the one rule every index module relies on: similarity is cosine, computed as the inner
product of L2-normalised float32 vectors. Nothing else in ``mmx.index`` normalises by hand.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def as_matrix(
    vectors: npt.ArrayLike, *, name: str = "vectors", dim: int | None = None
) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 array of shape (N, D).

    Raises ``ValueError`` if it is not 2-D, has the wrong width ``dim`` or holds NaN/inf
    (FAISS would index those silently and return garbage neighbours).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: expected width {dim}, got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf")
    return x


def l2_normalise(
    vectors: npt.ArrayLike, *, name: str = "vectors", dim: int | None = None
) -> np.ndarray:
    """L2-normalised float32 copy of ``vectors`` (N, D); all-zero rows stay zero."""
    x = as_matrix(vectors, name=name, dim=dim)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
