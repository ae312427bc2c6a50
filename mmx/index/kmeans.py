"""Sub-genre clustering: spherical k-means on trailer embeddings (FAISS), choice of k, assignment.

Owns how trailers become sub-genres: ``cluster`` for a full run, ``choose_k`` when the number of
sub-genres is ``auto`` (cosine silhouette), ``assign`` for incremental runs that keep the
published centroids and place new trailers by nearest centroid. All similarity is cosine.

Memory and time at archive scale (1M × 2048 float32 = 8 GiB): the input is never copied.
k-means is trained on a seeded sample of at most ``MAX_POINTS_PER_CENTROID * k`` rows (capped
at ``MAX_TRAIN_POINTS``), and only that sample is normalised (a copy of the sample); then every
row is assigned to its nearest centroid in row blocks. Assignment needs no normalised copy:
for unit centroids, argmax of the inner product equals argmax of the cosine for any positive
row scale (an all-zero row scores 0 against every centroid either way).
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np
import numpy.typing as npt
from sklearn.metrics import silhouette_score

from mmx.index.vectors import as_matrix, l2_normalise, row_blocks

# Lloyd iterations from several k-means++ starts, best objective kept: on planted clusters a
# single start lands in a local minimum (two centroids in one cluster) about half the time.
DEFAULT_NREDO = 10
# k-means trains on a seeded sample of max_points_per_centroid * k points (at most
# MAX_TRAIN_POINTS: 256k × 2048 float32 = 2 GiB); labels use every point.
MAX_POINTS_PER_CENTROID = 1024
MAX_TRAIN_POINTS = 262_144
# With more than this many sample points per centroid, the ``nredo`` k-means++ restarts run on a
# seeded sub-sample of this size and only the best start is refined on the whole sample (the
# restarts cost nredo × the refinement otherwise: ~10 min instead of ~1.5 for k=64 at D=2048).
RESTART_POINTS_PER_CENTROID = 128
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

    ``vectors`` is not copied or modified. k-means trains on a normalised seeded sample
    (:func:`train_sample`), then every vector gets its nearest centroid by cosine
    (:func:`assign`, in row blocks). Clusters are numbered by decreasing size (ties: the
    cluster whose first member comes first), so sub-genre 0 is the largest. Deterministic for
    a given ``seed`` (and FAISS thread count).

    Returns ``labels`` (N,) int32 in ``[0, k)`` and ``centroids`` (k, D) float32, unit norm.
    """
    x = as_matrix(vectors)  # no copy for C-contiguous float32 input
    n, d = x.shape
    if n == 0:
        raise ValueError("cluster: no vectors")
    if k < 1:
        raise ValueError(f"cluster: k must be >= 1, got {k}")
    k = min(int(k), n)
    if k == 1:
        total = np.zeros((1, d), dtype=np.float64)
        for rows in row_blocks(n):
            total += l2_normalise(x[rows]).sum(axis=0, dtype=np.float64)
        centroids = l2_normalise(total.astype(np.float32))
        return np.zeros(n, dtype=np.int32), centroids
    sample = train_sample(x, k, seed=seed)  # (M, D) normalised copy of <= MAX_TRAIN_POINTS rows
    init = None
    n_restart = RESTART_POINTS_PER_CENTROID * k
    if nredo > 1 and len(sample) > n_restart:
        # Restarts are for escaping bad starts, not for precision: pick the best of ``nredo``
        # starts on a seeded sub-sample, then refine that one on the whole sample.
        sub = np.random.default_rng(seed + 1).choice(len(sample), size=n_restart, replace=False)
        init = _kmeans(sample[np.sort(sub)], k, seed=seed, niter=niter, nredo=nredo).centroids
        nredo = 1
    km = _kmeans(sample, k, seed=seed, niter=niter, nredo=nredo, init=init)
    del sample
    centroids = l2_normalise(km.centroids)
    labels = assign(x, centroids)
    return _order_by_size(labels, centroids)


def _kmeans(
    sample: np.ndarray,
    k: int,
    *,
    seed: int,
    niter: int,
    nredo: int,
    init: np.ndarray | None = None,
) -> faiss.Kmeans:
    """Seeded spherical FAISS k-means on all of ``sample`` (M, D) (unit rows), k-means++ starts
    unless ``init`` (k, D) centroids are given."""
    km = faiss.Kmeans(
        sample.shape[1],
        k,
        niter=niter,
        nredo=nredo,
        seed=int(seed),
        spherical=True,
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
        min_points_per_centroid=1,  # small archives are fine; silences FAISS's warning
        max_points_per_centroid=-(-len(sample) // k),  # the sample is already drawn: use it all
        verbose=False,
    )
    km.train(sample, init_centroids=init)
    return km


def train_sample(
    vectors: npt.ArrayLike,
    k: int,
    *,
    seed: int,
    max_points_per_centroid: int | None = None,
    max_points: int | None = None,
) -> np.ndarray:
    """The rows k-means trains on: L2-normalised copy (M, D) float32 of a seeded sample.

    ``M = min(N, max_points_per_centroid * k, max_points)`` (defaults
    :data:`MAX_POINTS_PER_CENTROID`, :data:`MAX_TRAIN_POINTS`); all rows (in order) when N <= M,
    else a seeded uniform sample without replacement, in row order.
    """
    x = as_matrix(vectors)
    per_centroid = max_points_per_centroid or MAX_POINTS_PER_CENTROID
    m = min(len(x), per_centroid * int(k), max_points or MAX_TRAIN_POINTS)
    if m >= len(x):
        return l2_normalise(x)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), size=m, replace=False))
    return l2_normalise(x[rows], copy=False)  # x[rows] is already a copy


def assign(
    vectors: npt.ArrayLike, centroids: npt.ArrayLike, *, chunk: int | None = None
) -> np.ndarray:
    """Nearest centroid by cosine: ``vectors`` (N, D), ``centroids`` (k, D) → labels (N,) int32.

    Works in row blocks of ``chunk`` rows (default ``vectors.CHUNK_ROWS``) on the caller's
    array, with no normalised copy: with unit centroids the inner product ranks centroids as
    the cosine does.
    """
    c = l2_normalise(centroids, name="centroids")
    x = as_matrix(vectors, dim=c.shape[1])
    if len(x) == 0:
        return np.zeros(0, dtype=np.int32)
    if len(c) == 0:
        raise ValueError("assign: no centroids")
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    labels = np.empty(len(x), dtype=np.int32)
    for rows in row_blocks(len(x), chunk):
        _, nearest = index.search(x[rows], 1)  # (chunk, 1)
        labels[rows] = nearest[:, 0]
    return labels


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
    x = as_matrix(vectors)  # cosine silhouette and cluster() are scale-invariant: no copy
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
