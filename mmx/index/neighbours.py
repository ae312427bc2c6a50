"""The ``neighbours`` table (DESIGN §4): each trailer's top-k most similar other trailers.

Owns the query side of the published index: batched searches against a :class:`ShardedIndex`,
removing each trailer from its own result list, and the table's Arrow schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mmx import schema
from mmx.index.shards import ShardedIndex
from mmx.index.vectors import as_matrix


def neighbours(
    index: ShardedIndex,
    trailer_ids: Sequence[str],
    vectors: npt.ArrayLike,
    k: int,
    *,
    batch_size: int = 4096,
    nprobe: int | None = None,
) -> pa.Table:
    """Top-``k`` neighbours of each trailer, itself excluded, as a ``schema.NEIGHBOURS`` table.

    ``trailer_ids`` (N,) and ``vectors`` (N, D) float32 are the query trailers (normally the
    indexed ones). Each batch searches ``k + 1`` and drops the trailer's own id wherever it
    appears (if it is absent, e.g. an IVF miss, the first ``k`` others are kept). Rows are
    ordered by query order, then rank; a trailer gets fewer than ``k`` rows only when the index
    holds fewer than ``k + 1`` vectors.
    """
    tids = np.empty(len(trailer_ids), dtype=object)
    tids[:] = [str(t) for t in trailer_ids]
    x = as_matrix(vectors, dim=index.dim)
    if len(x) != len(tids):
        raise ValueError(f"neighbours: {len(tids)} trailer_ids for {len(x)} vectors")
    if k < 1:
        raise ValueError(f"neighbours: k must be >= 1, got {k}")
    columns: dict[str, list[np.ndarray]] = {f.name: [] for f in schema.NEIGHBOURS}
    for start in range(0, len(x), batch_size):
        query_tids = tids[start : start + batch_size]  # (B,)
        scores, found = index.search(x[start : start + batch_size], k + 1, nprobe=nprobe)
        keep = np.isfinite(scores) & (found != query_tids[:, None])  # (B, k+1)
        rank = np.cumsum(keep, axis=1)  # (B, k+1): 1-based rank among kept
        keep &= rank <= k
        rows, cols = np.nonzero(keep)  # row-major: ranks ascend within a query
        columns["trailer_id"].append(query_tids[rows])
        columns["rank"].append(rank[rows, cols].astype(np.int32))
        columns["neighbour_id"].append(found[rows, cols])
        columns["score"].append(scores[rows, cols].astype(np.float32))
    arrays = [
        pa.array(np.concatenate(columns[f.name]) if columns[f.name] else [], type=f.type)
        for f in schema.NEIGHBOURS
    ]
    return pa.Table.from_arrays(arrays, schema=schema.NEIGHBOURS)
