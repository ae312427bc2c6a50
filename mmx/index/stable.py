"""Sub-genre ids that keep their meaning across retrains.

A retrain re-clusters the archive in a new embedding space, and the clustering numbers its
clusters afresh (by size). A saved query on "sub-genre 7" must still mean the same trailers next
week, so the new clusters are matched to the previous snapshot's sub-genres and take over their
ids.

Why membership, not centroids: after a retrain the embedding space is another model's, so the
cosine between a new centroid and an old one compares coordinates of two unrelated spaces and
means nothing. What both snapshots share is the trailers: a new cluster continues an old
sub-genre when they hold mostly the same trailers. The similarity is the Jaccard index of the
two member sets, counted over the trailers present in both snapshots (trailers new this run or
gone since carry no evidence either way); the one-to-one matching maximising the total Jaccard
is the Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`). A pair below
``min_jaccard`` is no match: a cluster that is mostly something else must not inherit a name.
Unmatched new clusters get fresh ids above every id ever used, so a retired id is never
reused for other content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score


@dataclass(frozen=True)
class IdMatching:
    """How new clusters were named: ``ids`` (k,) int32 the published id of new cluster ``j``;
    ``matched`` (k,) bool whether that id continues a previous sub-genre; ``jaccard`` (k,)
    float64 the membership Jaccard of the matched pair (0 for a fresh id); ``retired`` the
    previous ids no new cluster continues; ``high_water`` the largest id ever used so far."""

    ids: np.ndarray
    matched: np.ndarray
    jaccard: np.ndarray
    retired: list[int]
    high_water: int


def membership_jaccard(new: np.ndarray, old: np.ndarray, k_new: int, old_ids: np.ndarray
                       ) -> np.ndarray:
    """Jaccard of cluster member sets: ``new`` (N,) int new cluster index in [0, k_new) and
    ``old`` (N,) int previous id, for the same N trailers (present in both snapshots);
    ``old_ids`` (m,) the previous ids, in column order. Returns (k_new, m) float64."""
    m = len(old_ids)
    if len(new) == 0 or m == 0:
        return np.zeros((k_new, m))
    col = np.searchsorted(old_ids, old)  # old_ids sorted: (N,) column of each trailer's old id
    both = sparse.csr_matrix((np.ones(len(new)), (new, col)), shape=(k_new, m)).toarray()
    size_new = both.sum(axis=1)  # (k_new,) members present in both snapshots
    size_old = both.sum(axis=0)  # (m,)
    union = size_new[:, None] + size_old[None, :] - both  # (k_new, m)
    return np.divide(both, union, out=np.zeros_like(both), where=union > 0)


def match_ids(new: npt.ArrayLike, old: npt.ArrayLike, k_new: int, *, old_ids: npt.ArrayLike,
              min_jaccard: float, high_water: int = -1) -> IdMatching:
    """Name the ``k_new`` new clusters after the previous sub-genres they continue.

    ``new`` (N,) int new cluster index and ``old`` (N,) int the same trailer's previous id, over
    the trailers present in both snapshots (ok in both); ``old_ids`` every previous sub-genre id
    (also those with no such trailer); ``high_water`` the largest id any earlier snapshot used
    (-1: none beyond ``old_ids``). Pairs are chosen by the Hungarian assignment on membership
    Jaccard; a pair below ``min_jaccard`` (or with no shared trailer) is not a match, and every
    unmatched new cluster gets a fresh id, counting up from above every id ever used.
    """
    new = np.asarray(new, dtype=np.int64)
    old = np.asarray(old, dtype=np.int64)
    ids_old = np.unique(np.asarray(old_ids, dtype=np.int64))
    if new.shape != old.shape or new.ndim != 1:
        raise ValueError(f"match_ids: new {new.shape} and old {old.shape} must be equal (N,)")
    if len(new) and (new.min() < 0 or new.max() >= k_new):
        raise ValueError(f"match_ids: new cluster indices outside [0, {k_new})")
    if len(old) and not np.isin(old, ids_old).all():
        raise ValueError("match_ids: a previous sub-genre id is not among old_ids")
    if not 0.0 < min_jaccard <= 1.0:
        raise ValueError(f"match_ids: min_jaccard must be in (0, 1], got {min_jaccard}")
    sim = membership_jaccard(new, old, k_new, ids_old)  # (k_new, m)
    ids = np.full(k_new, -1, dtype=np.int64)
    jac = np.zeros(k_new)
    if sim.size:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        good = sim[rows, cols] >= min_jaccard
        ids[rows[good]] = ids_old[cols[good]]
        jac[rows[good]] = sim[rows[good], cols[good]]
    matched = ids >= 0
    top = max(int(high_water), int(ids_old.max()) if len(ids_old) else -1)
    ids[~matched] = top + 1 + np.arange(int((~matched).sum()))
    retired = sorted(set(ids_old.tolist()) - set(ids[matched].tolist()))
    return IdMatching(ids.astype(np.int32), matched, jac, retired,
                      high_water=max(top, int(ids.max()) if k_new else top))


def stability(new_ids: npt.ArrayLike, old_ids: npt.ArrayLike, matching: IdMatching) -> dict:
    """The ``subgenres.stability`` figure of ``metrics.json``: over the ``n`` trailers present
    in both snapshots, ``new_ids`` (n,) their published sub-genre now and ``old_ids`` (n,)
    before. ``kept_share``: share that kept their id; ``ari``: adjusted Rand index of the two
    partitions (1 = the same grouping, whatever the names); cluster counts matched / new /
    retired."""
    a = np.asarray(new_ids, dtype=np.int64)
    b = np.asarray(old_ids, dtype=np.int64)
    n = len(a)
    return {
        "n": n,
        "kept_share": float(np.mean(a == b)) if n else None,
        "ari": float(adjusted_rand_score(b, a)) if n else None,
        "matched": int(matching.matched.sum()),
        "new": int((~matching.matched).sum()),
        "retired": len(matching.retired),
        "retired_ids": matching.retired,
        "rule": "Hungarian assignment on membership Jaccard of shared trailers",
    }
