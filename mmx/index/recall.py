"""How good the sharded index is: recall@k against exact search, and the nprobe it needs.

An IVF index visits only ``nprobe`` of its ``nlist`` lists per query, so it can miss true
neighbours. Each run measures it on a seeded sample of its own vectors as queries: recall@k =
the share of the exact top-k (a ``faiss.IndexFlatIP`` over the same L2-normalised vectors)
that the sharded index returns, at the configured nprobe and along a ladder 1, 2, 4, … nlist,
whose first rung reaching the recall target is reported. A flat (exact) index has recall 1.0
by construction; it is reported as such without searching.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import faiss
import numpy as np
import numpy.typing as npt

from mmx.index.shards import ShardedIndex, stable_ids
from mmx.index.vectors import l2_normalise


def nprobe_ladder(nlist: int) -> list[int]:
    """1, 2, 4, … below ``nlist``, then ``nlist`` itself (which is exact for IVF)."""
    ladder = [1 << i for i in range(max(int(nlist), 1).bit_length()) if (1 << i) < nlist]
    return ladder + [int(nlist)]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (Q, k) int64 ids found in the same row of ``found``
    (Q, k) int64 (-1 = empty slot, never counted)."""
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)  # (Q, k, k)
    per_row = hits.any(axis=1).sum(axis=1)  # (Q,)
    want = np.maximum((truth >= 0).sum(axis=1), 1)  # (Q,)
    return float(np.mean(per_row / want))


def is_ivf(index: ShardedIndex) -> bool:
    """Whether every shard of ``index`` is an IVF index (else it is exact: flat)."""
    ivfs = [faiss.try_extract_index_ivf(s) for s in index.shards]
    return bool(ivfs) and all(v is not None for v in ivfs)


def exact_top_k(queries: np.ndarray, parts: Iterable[tuple[Sequence[str], npt.ArrayLike]],
                k: int, dim: int) -> np.ndarray:
    """The exact top-``k`` global ids (Q, k) int64 (-1 = fewer than k vectors) of L2-normalised
    ``queries`` (Q, D) by inner product over all ``parts`` (trailer ids, (B, D) vectors),
    merged part by part: memory is one part, not the archive."""
    q = len(queries)
    best_s = np.full((q, k), -np.inf, np.float32)
    best_i = np.full((q, k), -1, np.int64)
    for ids, vectors in parts:
        if len(ids) == 0:
            continue
        x = l2_normalise(vectors, name="vectors", dim=dim, copy=True)  # (B, D)
        scores = queries @ x.T  # (Q, B)
        gids = stable_ids([str(t) for t in ids])  # (B,)
        all_s = np.concatenate([best_s, scores], axis=1)  # (Q, k + B)
        all_i = np.concatenate([best_i, np.broadcast_to(gids, scores.shape)], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]  # (Q, k) the k best, unordered
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_i = np.take_along_axis(all_i, top, axis=1)
    return np.where(np.isfinite(best_s), best_i, -1)


def measure_recall(index: ShardedIndex, trailer_ids: Sequence[str], vectors: npt.ArrayLike, *,
                   queries: int, target: float, seed: int, k: int = 10) -> dict:
    """:func:`measure_recall_parts` over vectors held in memory: (N, D) float32 ``vectors``,
    row i = ``trailer_ids[i]``; ``queries`` of them drawn with ``seed``."""
    x = np.asarray(vectors, np.float32)
    if len(x) != len(trailer_ids):
        raise ValueError(f"{len(trailer_ids)} trailer_ids for {len(x)} vectors")
    rows = sample_rows(len(x), queries, seed)
    return measure_recall_parts(index, x[rows], [(list(trailer_ids), x)], len(x),
                                target=target, k=k)


def sample_rows(n: int, queries: int, seed: int) -> np.ndarray:
    """The sorted rows (Q,) of ``n`` used as queries: ``min(queries, n)`` drawn with ``seed``."""
    if queries < 1:
        raise ValueError(f"recall queries must be >= 1, got {queries}")
    return np.sort(np.random.default_rng(seed).choice(n, size=min(int(queries), n),
                                                      replace=False))


def measure_recall_parts(index: ShardedIndex, query_vectors: npt.ArrayLike,
                         parts: Iterable[tuple[Sequence[str], npt.ArrayLike]], n: int, *,
                         target: float, k: int = 10) -> dict:
    """recall@``k`` of ``index`` vs exact search over all ``n`` indexed vectors, given as
    ``parts`` (trailer ids, (B, D) float32) read one at a time, for (Q, D) ``query_vectors``
    (some of those vectors).

    Returns ``{kind, shards, n_queries, k, recall_at_10 (recall_at_k), nprobe, recall_target,
    nprobe_for_target, ladder}``; ``ladder`` maps each nprobe tried to its recall, and
    ``nprobe_for_target`` is the smallest reaching ``target`` (None if none does). For a flat
    index recall is 1.0 and nprobe None, and ``parts`` is not read.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"recall target must be in (0, 1], got {target}")
    ivf = is_ivf(index)
    n_q = len(query_vectors)
    out = {"kind": "ivf" if ivf else "flat", "shards": len(index.shards), "n_queries": n_q,
           "k": k, "recall_target": float(target)}
    if not ivf or n_q == 0:
        return out | {f"recall_at_{k}": 1.0, "nprobe": None,
                      "nprobe_for_target": None, "ladder": {},
                      "note": "exact (flat) index: recall is 1.0 by construction"
                      if not ivf else "no vectors"}
    q = l2_normalise(query_vectors, name="queries", dim=index.dim, copy=True)  # (Q, D)
    kk = min(k, n)
    truth = exact_top_k(q, parts, kk, index.dim)  # (Q, kk) global ids

    def recall(nprobe: int) -> float:
        _, found = index.search_ids(q, kk, nprobe=nprobe)
        return recall_at_k(found, truth)

    nlist = int(faiss.try_extract_index_ivf(index.shards[0]).nlist)
    ladder = {}
    for p in nprobe_ladder(nlist):
        ladder[p] = recall(p)
        if ladder[p] >= target:
            break
    at_target = next((p for p, r in ladder.items() if r >= target), None)
    configured = max(1, min(int(index.nprobe), nlist))
    at_configured = ladder[configured] if configured in ladder else recall(configured)
    return out | {f"recall_at_{k}": at_configured,
                  "nprobe": configured, "nlist": nlist, "nprobe_for_target": at_target,
                  "ladder": {str(p): r for p, r in ladder.items()}}
