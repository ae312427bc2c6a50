"""The ``subgenres`` table (DESIGN §4): what each sub-genre cluster is made of.

Owns how a cluster is described to analysts: its size, the genres most over-represented in it
relative to the whole archive (lift, with a minimum support), the ImageNet concepts its clips
show more often than the archive's (see ``mmx.experts.concepts``), exemplar trailers (members
nearest the centroid by cosine) and its centroid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from scipy import sparse

from mmx import schema
from mmx.index.vectors import l2_normalise


def genre_matrix(genres_per_trailer: Sequence[Sequence[str]], vocab: Sequence[str]) -> np.ndarray:
    """Multi-hot (N, G) bool matrix of each trailer's genres in ``vocab`` order.

    Genres outside ``vocab`` are ignored.
    """
    col = {g: j for j, g in enumerate(vocab)}
    rows, cols = [], []
    for i, genres in enumerate(genres_per_trailer):
        for g in genres or ():
            if g in col:
                rows.append(i)
                cols.append(col[g])
    y = np.zeros((len(genres_per_trailer), len(vocab)), dtype=bool)
    y[rows, cols] = True
    return y


def over_represented(
    labels: np.ndarray,
    counts: np.ndarray,
    units: np.ndarray,
    k: int,
    names: Sequence[str],
    top: int,
    min_support: np.ndarray | int,
) -> list[list[str]]:
    """Per cluster, up to ``top`` names whose share in the cluster beats the archive's.

    ``counts`` (N, V): occurrences of each name per trailer (multi-hot genres, or clips per
    concept); ``units`` (N,): what a share is out of (1 per labelled trailer, or clips per
    trailer). lift = (Σ_cluster counts / Σ_cluster units) / (Σ counts / Σ units); a name is
    listed when lift > 1 and at least ``min_support`` (scalar, or per cluster ``(k,)``)
    member trailers carry it; ranked by lift, then carriers, then name order.
    """
    v = counts.shape[1]
    if v == 0:
        return [[] for _ in range(k)]
    n = len(labels)
    member = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))  # (k, N)
    per_cluster = np.asarray(member @ counts.astype(np.float64))  # (k, V)
    carriers = np.asarray(member @ (counts > 0).astype(np.float64))  # (k, V) members carrying it
    units_in = member @ np.asarray(units, dtype=np.float64)  # (k,)
    base = counts.sum(axis=0) / max(float(np.sum(units)), 1.0)  # (V,)
    share = per_cluster / np.maximum(units_in, 1.0)[:, None]  # (k, V)
    lift = np.divide(share, base[None, :], out=np.zeros_like(share), where=base[None, :] > 0)
    support = np.broadcast_to(np.asarray(min_support, dtype=np.float64).reshape(-1, 1), (k, 1))
    eligible = (carriers >= support) & (lift > 1.0)  # (k, V)
    idx = np.broadcast_to(np.arange(v), (k, v))
    order = np.lexsort((idx, -carriers, -lift), axis=1)  # (k, V)
    arr = np.asarray(list(names), dtype=object)
    return [arr[order[i][eligible[i, order[i]]][:top]].tolist() for i in range(k)]


def describe_clusters(
    labels: npt.ArrayLike,
    genres_per_trailer: Sequence[Sequence[str]],
    vocab: Sequence[str],
    trailer_ids: Sequence[str],
    vectors: npt.ArrayLike,
    centroids: npt.ArrayLike,
    top: int = 3,
    exemplars: int = 5,
    *,
    min_support: int = 2,
    concept_counts: np.ndarray | None = None,
    concept_names: Sequence[str] = (),
    top_concepts: int = 5,
    concept_min_share: float = 0.2,
) -> pa.Table:
    """One ``schema.SUBGENRES`` row per centroid (empty clusters included, size 0).

    ``labels`` (N,) int cluster of each trailer; ``genres_per_trailer`` N lists of genre
    names (empty = unlabelled); ``trailer_ids`` (N,); ``vectors`` (N, D) float32;
    ``centroids`` (k, D) float32. ``top_genres``: up to ``top`` genres with lift > 1, where
    lift = P(genre | cluster) / P(genre | archive) over labelled trailers only, among genres
    carried by at least ``min_support`` labelled members (ties: higher count, then vocab
    order). ``top_concepts``: with ``concept_counts`` (N, V) clips per concept and their
    ``concept_names``, up to ``top_concepts`` concepts whose share of the cluster's clips
    beats the archive's, shown by at least ``min_support`` members and ``concept_min_share``
    of them. ``exemplars``: up to ``exemplars`` members with the highest cosine to the
    centroid. ``centroid``: the unit-norm centroid.
    """
    c = l2_normalise(centroids, name="centroids")
    k = len(c)
    lab = np.asarray(labels, dtype=np.int64)
    n = len(lab)
    x = l2_normalise(vectors, dim=c.shape[1])
    if not (len(x) == n == len(genres_per_trailer) == len(trailer_ids)):
        raise ValueError(
            f"describe_clusters: {n} labels, {len(genres_per_trailer)} genre lists, "
            f"{len(trailer_ids)} trailer_ids, {len(x)} vectors"
        )
    if n and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"describe_clusters: labels outside [0, {k})")
    sizes = np.bincount(lab, minlength=k)  # (k,)

    # Genre lift over labelled trailers: unlabelled ones would dilute every genre equally.
    y = genre_matrix(genres_per_trailer, vocab)  # (N, G)
    top_genres = over_represented(lab, y, y.any(axis=1), k, vocab, top, min_support)

    if concept_counts is not None and len(concept_names):
        counts = np.asarray(concept_counts)
        if counts.shape != (n, len(concept_names)):
            raise ValueError(
                f"describe_clusters: concept_counts {counts.shape}, expected "
                f"({n}, {len(concept_names)})"
            )
        support = np.maximum(min_support, np.ceil(concept_min_share * sizes))  # (k,)
        concepts = over_represented(
            lab, counts, counts.sum(axis=1), k, concept_names, top_concepts, support
        )
    else:
        concepts = [[] for _ in range(k)]

    # Exemplars: members sorted by cluster, then cosine to their centroid (desc), then row.
    sims = np.einsum("nd,nd->n", x, c[lab]) if n else np.zeros(0, np.float32)  # (N,)
    by_cluster = np.lexsort((np.arange(n), -sims, lab))  # (N,)
    starts = np.searchsorted(lab[by_cluster], np.arange(k))  # (k,)
    tids = np.asarray([str(t) for t in trailer_ids], dtype=object)
    exemplar_ids = [
        tids[by_cluster[starts[i] : starts[i] + min(exemplars, sizes[i])]].tolist()
        for i in range(k)
    ]
    return pa.table(
        {
            "subgenre": pa.array(np.arange(k, dtype=np.int32)),
            "size": pa.array(sizes.astype(np.int64)),
            "top_genres": pa.array(top_genres, type=pa.list_(pa.string())),
            "top_concepts": pa.array(concepts, type=pa.list_(pa.string())),
            "exemplars": pa.array(exemplar_ids, type=pa.list_(pa.string())),
            "centroid": schema.vectors(c),  # (k, D) → float32[D]
        },
        schema=schema.published(schema.SUBGENRES, centroid=c.shape[1]),
    )
