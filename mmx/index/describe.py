"""The ``subgenres`` table (DESIGN §4): what each sub-genre cluster is made of.

Owns how a cluster is described to analysts: its size, the genres most over-represented in it
relative to the whole archive (lift, with a minimum support), and exemplar trailers (members
nearest the centroid by cosine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mmx.index.vectors import l2_normalise

SUBGENRES_SCHEMA = pa.schema(
    [
        ("subgenre", pa.int32()),
        ("size", pa.int64()),
        ("top_genres", pa.list_(pa.string())),  # by decreasing lift vs the archive
        ("exemplars", pa.list_(pa.string())),  # trailer_ids, nearest the centroid first
    ]
)


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
) -> pa.Table:
    """One ``SUBGENRES_SCHEMA`` row per centroid (empty clusters included, size 0).

    ``labels`` (N,) int cluster of each trailer; ``genres_per_trailer`` N lists of genre
    names (empty = unlabelled); ``trailer_ids`` (N,); ``vectors`` (N, D) float32;
    ``centroids`` (k, D) float32. ``top_genres``: up to ``top`` genres with lift > 1, where
    lift = P(genre | cluster) / P(genre | archive) over labelled trailers only, among genres
    carried by at least ``min_support`` labelled members (ties: higher count, then vocab
    order). ``exemplars``: up to ``exemplars`` members with the highest cosine to the centroid.
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

    # Lift over labelled trailers: unlabelled ones would dilute every genre equally.
    g = len(vocab)
    y = genre_matrix(genres_per_trailer, vocab)  # (N, G)
    labelled = y.any(axis=1)  # (N,)
    rows, cols = np.nonzero(y)  # one pair per (trailer, genre) it carries
    per_cluster = np.bincount(lab[rows] * g + cols, minlength=k * g).reshape(k, g)  # (k, G)
    labelled_in = np.bincount(lab[labelled], minlength=k)  # (k,)
    base = y.sum(axis=0) / max(int(labelled.sum()), 1)  # (G,) archive frequency
    share = per_cluster / np.maximum(labelled_in, 1)[:, None]  # (k, G)
    lift = np.divide(share, base[None, :], out=np.zeros_like(share), where=base[None, :] > 0)
    eligible = (per_cluster >= min_support) & (lift > 1.0)  # (k, G)
    # Rank genres per cluster: lift desc, count desc, vocab order.
    genre_idx = np.broadcast_to(np.arange(g), (k, g))
    order = np.lexsort((genre_idx, -per_cluster, -lift), axis=1)  # (k, G)
    vocab_arr = np.asarray(list(vocab), dtype=object)
    top_genres = [vocab_arr[order[i][eligible[i, order[i]]][:top]].tolist() for i in range(k)]

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
            "exemplars": pa.array(exemplar_ids, type=pa.list_(pa.string())),
        },
        schema=SUBGENRES_SCHEMA,
    )
