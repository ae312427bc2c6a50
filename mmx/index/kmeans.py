"""Sub-genre clustering: spherical k-means on trailer embeddings (FAISS), choice of k, assignment.

Owns how trailers become sub-genres: ``cluster`` for a full run, ``choose_k`` when the number of
sub-genres is ``auto`` (cosine silhouette), ``assign`` for incremental runs that keep the
published centroids and place new trailers by nearest centroid. All similarity is cosine.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np
import numpy.typing as npt
from sklearn.metrics import silhouette_score

from mmx.index.vectors import l2_normalise

# Lloyd iterations from several k-means++ starts, best objective kept: on planted clusters a
# single start lands in a local minimum (two centroids in one cluster) about half the time.
DEFAULT_NREDO = 10
# FAISS subsamples max_points_per_centroid * k points for training; labels use every point.
MAX_POINTS_PER_CENTROID = 1024
# silhouette is O(n^2): score on at most this many points (seeded sample).
SILHOUETTE_SAMPLE = 5000


def cluster(
    vectors: npt.ArrayLike,
    k: int,
    *,
    seed: int,
    niter: int = 25,
    nredo: int = DEFAULT_NREDO,
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of ``vectors`` (N, D) float32 into ``min(k, N)`` clusters.

    Vectors are L2-normalised first; clusters are numbered by decreasing size (ties: the
    cluster whose first member comes first), so sub-genre 0 is the largest. Deterministic for
    a given ``seed`` (and FAISS thread count).

    Returns ``labels`` (N,) int32 in ``[0, k)`` and ``centroids`` (k, D) float32, unit norm.
    """
    x = l2_normalise(vectors)
    n, d = x.shape
    if n == 0:
        raise ValueError("cluster: no vectors")
    if k < 1:
        raise ValueError(f"cluster: k must be >= 1, got {k}")
    k = min(int(k), n)
    if k == 1:
        centroids = l2_normalise(x.mean(axis=0, keepdims=True))
        return np.zeros(n, dtype=np.int32), centroids
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        nredo=nredo,
        seed=int(seed),
        spherical=True,
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
        min_points_per_centroid=1,  # small archives are fine; silences FAISS's warning
        max_points_per_centroid=MAX_POINTS_PER_CENTROID,
        verbose=False,
    )
    km.train(x)
    centroids = l2_normalise(km.centroids)
    labels = assign(x, centroids)
    return _order_by_size(labels, centroids)


def assign(vectors: npt.ArrayLike, centroids: npt.ArrayLike) -> np.ndarray:
    """Nearest centroid by cosine: ``vectors`` (N, D), ``centroids`` (k, D) → labels (N,) int32."""
    c = l2_normalise(centroids, name="centroids")
    x = l2_normalise(vectors, dim=c.shape[1])
    if len(x) == 0:
        return np.zeros(0, dtype=np.int32)
    if len(c) == 0:
        raise ValueError("assign: no centroids")
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    _, nearest = index.search(x, 1)  # (N, 1)
    return nearest[:, 0].astype(np.int32)


def choose_k(
    vectors: npt.ArrayLike,
    k_range: Iterable[int],
    seed: int,
    *,
    niter: int = 25,
    sample_size: int = SILHOUETTE_SAMPLE,
) -> int:
    """Pick the k in ``k_range`` whose spherical k-means has the best cosine silhouette.

    ``vectors`` (N, D) float32. Candidates outside ``[2, N-1]`` (where silhouette is undefined)
    are skipped; ties go to the smaller k. With no valid candidate, returns the largest
    candidate clamped to ``[1, N]``.
    """
    x = l2_normalise(vectors)
    n = len(x)
    candidates = sorted({int(k) for k in k_range})
    if not candidates:
        raise ValueError("choose_k: k_range is empty")
    rng_sample = sample_size if n > sample_size else None
    best_k, best_score = None, -np.inf
    for k in candidates:
        if not 2 <= k <= n - 1:
            continue
        labels, _ = cluster(x, k, seed=seed, niter=niter)
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette_score(
            x, labels, metric="cosine", sample_size=rng_sample, random_state=seed
        )
        if score > best_score:
            best_k, best_score = k, score
    if best_k is None:
        return max(1, min(candidates[-1], n))
    return best_k


def _order_by_size(labels: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by decreasing size (ties: earliest first member); drop nothing."""
    k = len(centroids)
    sizes = np.bincount(labels, minlength=k)  # (k,)
    first = np.full(k, len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    order = np.lexsort((first, -sizes))  # new label i = old label order[i]
    new_of_old = np.empty(k, dtype=np.int32)
    new_of_old[order] = np.arange(k, dtype=np.int32)
    return new_of_old[labels], np.ascontiguousarray(centroids[order])
