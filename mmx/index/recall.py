"""How good the sharded index is: recall@k against exact search, and the nprobe it needs.

An IVF index visits only ``nprobe`` of its ``nlist`` lists per query, so it can miss true
neighbours. Each run measures it on a seeded sample of its own vectors as queries: recall@k =
the share of the exact top-k (a ``faiss.IndexFlatIP`` over the same L2-normalised vectors)
that the sharded index returns, at the configured nprobe and along a ladder 1, 2, 4, … nlist,
whose first rung reaching the recall target is reported. A flat (exact) index has recall 1.0
by construction; it is reported as such without searching.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def measure_recall(index: ShardedIndex, trailer_ids: Sequence[str], vectors: npt.ArrayLike, *,
                   queries: int, target: float, seed: int, k: int = 10) -> dict:
    """recall@``k`` of ``index`` vs exact search over the indexed ``vectors`` (N, D) float32
    (row i = ``trailer_ids[i]``), on ``queries`` of them drawn with ``seed``.

    Returns ``{kind, shards, n_queries, k, recall_at_10 (recall_at_k), nprobe, recall_target,
    nprobe_for_target, ladder}``; ``ladder`` maps each nprobe tried to its recall, and
    ``nprobe_for_target`` is the smallest reaching ``target`` (None if none does). For a flat
    index recall is 1.0 and nprobe None.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"recall target must be in (0, 1], got {target}")
    if queries < 1:
        raise ValueError(f"recall queries must be >= 1, got {queries}")
    x = l2_normalise(vectors, name="vectors", dim=index.dim, copy=True)  # (N, D)
    if len(x) != len(trailer_ids):
        raise ValueError(f"{len(trailer_ids)} trailer_ids for {len(x)} vectors")
    ivfs = [faiss.try_extract_index_ivf(s) for s in index.shards]
    ivf = bool(ivfs) and all(v is not None for v in ivfs)
    n_q = min(int(queries), len(x))
    out = {"kind": "ivf" if ivf else "flat", "shards": len(index.shards), "n_queries": n_q,
           "k": k, "recall_target": float(target)}
    if not ivf or n_q == 0:
        return out | {f"recall_at_{k}": 1.0, "nprobe": None,
                      "nprobe_for_target": None, "ladder": {},
                      "note": "exact (flat) index: recall is 1.0 by construction"
                      if not ivf else "no vectors"}
    rows = np.sort(np.random.default_rng(seed).choice(len(x), size=n_q, replace=False))
    q = x[rows]  # (Q, D)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    kk = min(k, len(x))
    _, pos = exact.search(q, kk)  # (Q, kk) row positions
    gids = stable_ids([str(t) for t in trailer_ids])  # (N,) the index's global ids
    truth = np.where(pos >= 0, gids[np.maximum(pos, 0)], -1)  # (Q, kk)

    def recall(nprobe: int) -> float:
        _, found = index.search_ids(q, kk, nprobe=nprobe)
        return recall_at_k(found, truth)

    nlist = int(ivfs[0].nlist)
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
