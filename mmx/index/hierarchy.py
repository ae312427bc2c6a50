"""Sub-genres whose number follows the data: Ward's hierarchy on a sample, cut by a criterion.

Owns how a full run turns trailer embeddings into sub-genres when ``index.n_subgenres`` is
``auto`` (0). k-means needs k; choosing it by silhouette over a short range favours a few big
clusters and collapses the many small groups that sub-genres are (PITFALLS). Here:

1. Ward's agglomerative clustering of the L2-normalised embeddings (Ward on unit vectors merges
   by the increase of within-cluster cosine dispersion), on a seeded sample of at most
   ``sample`` trailers (the linkage is O(n²) memory), gives every k at once;
2. the dendrogram is cut at the k the rule picks among ``[k_min, k_max]`` (see
   :func:`choose_cut`), from the cosine silhouette of each cut on the sample;
3. the cut's clusters become unit centroids; every trailer (sample or not) joins its nearest
   centroid (:func:`mmx.index.kmeans.assign`), as an incremental run's new trailers do later,
   and clusters are numbered by decreasing size.

All similarity is cosine; deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mmx.index.kmeans import _order_by_size, assign
from mmx.index.vectors import as_matrix, l2_normalise


@dataclass
class Hierarchy:
    """The chosen cut: ``labels`` (N,) int32, ``centroids`` (k, D) float32 unit norm, and
    the figures behind the choice (``curve``: k → silhouette of that cut on the sample)."""

    labels: np.ndarray
    centroids: np.ndarray
    k: int
    rule: str
    curve: dict[int, float] = field(default_factory=dict)
    n_sample: int = 0

    def quality(self) -> dict[str, object]:
        """Cluster-quality figures for ``metrics.json``."""
        sizes = np.bincount(self.labels, minlength=self.k)
        return {
            "k": int(self.k),
            "rule": self.rule,
            "silhouette": round(float(self.curve.get(self.k, float("nan"))), 4),
            "best_silhouette_k": int(max(self.curve, key=self.curve.get)) if self.curve else None,
            "sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                      "max": int(sizes.max()), "singletons": int((sizes == 1).sum())},
            "n_sample": int(self.n_sample),
            "curve": {str(k): round(float(v), 4) for k, v in sorted(self.curve.items())},
        }


def choose_cut(curve: dict[int, float], tolerance: float) -> int:
    """The finest cut whose silhouette is within ``tolerance`` of the best one.

    Silhouette alone peaks where the coarsest real split is (genres, not sub-genres); the
    curve is flat across the finer levels nested inside it. Taking the largest k still within
    ``tolerance`` (an absolute silhouette difference) of the peak keeps the fine level as long
    as its clusters are nearly as well separated as the coarse ones.
    """
    if not curve:
        raise ValueError("choose_cut: empty curve")
    best = max(curve.values())
    return max(k for k, v in curve.items() if v >= best - tolerance)


def ward_subgenres(
    vectors: npt.ArrayLike,
    *,
    k: int = 0,
    k_min: int = 2,
    k_max: int = 0,
    tolerance: float = 0.01,
    sample: int = 4000,
    seed: int = 0,
) -> Hierarchy:
    """Cut Ward's hierarchy of ``vectors`` (N, D) and assign every row to the nearest centroid.

    ``k > 0`` cuts at that k; ``k = 0`` picks it with :func:`choose_cut` over
    ``[k_min, k_max]`` (``k_max = 0``: half the sample, at most 400). ``sample`` caps the rows
    the hierarchy is built on (seeded). Returns a :class:`Hierarchy`.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import silhouette_score

    x = as_matrix(vectors)
    n = len(x)
    if n == 0:
        raise ValueError("ward_subgenres: no vectors")
    if n < 3:
        labels = np.arange(n, dtype=np.int32)
        return Hierarchy(labels, l2_normalise(x.copy()), n, "too few trailers", {}, n)
    rows = np.arange(n)
    if n > sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    z = l2_normalise(x[rows].astype(np.float64), copy=True)  # (M, D)
    tree = linkage(z, method="ward")
    m = len(z)
    curve: dict[int, float] = {}
    if k > 0:
        chosen, rule = min(k, m), "fixed"
    else:
        hi = k_max if k_max > 0 else min(m // 2, 400)
        hi = max(min(hi, m - 1), 2)
        lo = min(max(k_min, 2), hi)
        distances = 1.0 - np.clip(z @ z.T, -1.0, 1.0)  # (M, M) cosine distance
        np.fill_diagonal(distances, 0.0)
        for cut in range(lo, hi + 1):
            labels = fcluster(tree, cut, criterion="maxclust")
            if len(np.unique(labels)) < 2:
                continue
            curve[cut] = float(silhouette_score(distances, labels, metric="precomputed"))
        chosen = choose_cut(curve, tolerance) if curve else lo
        rule = f"finest Ward cut within {tolerance} of the best cosine silhouette"
    sample_labels = fcluster(tree, chosen, criterion="maxclust") - 1  # (M,) 0-based
    k_found = int(sample_labels.max()) + 1
    sums = np.zeros((k_found, z.shape[1]))
    np.add.at(sums, sample_labels, z)
    centroids = l2_normalise(sums.astype(np.float32))  # (k, D)
    labels = assign(x, centroids)
    # a centroid that won no row (rare: its sample members moved to a neighbour) is dropped
    used = np.unique(labels)
    if len(used) < k_found:
        centroids = centroids[used]
        labels = np.searchsorted(used, labels).astype(np.int32)
    labels, centroids = _order_by_size(labels, centroids)
    return Hierarchy(labels, centroids, len(centroids), rule, curve, m)
