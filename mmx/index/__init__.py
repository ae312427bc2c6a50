"""Trailer-embedding index: sub-genre k-means, the sharded FAISS index, neighbours, cluster notes.

Pure functions and one reader class; no Ray here (the L3 stage runs e.g. one task per shard).
Similarity everywhere is cosine (inner product of L2-normalised float32 vectors).

The names below are imported on first use (PEP 562), so ``from mmx.index.shards import …``
(the query side: ``mmx sql``/``similar``) does not pull scikit-learn and scipy in with k-means.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "describe_clusters": "describe", "genre_matrix": "describe", "over_represented": "describe",
    "assign": "kmeans", "choose_k": "kmeans", "cluster": "kmeans",
    "neighbours": "neighbours",
    "l2_normalise": "vectors",
    **{name: "shards" for name in (
        "IdCollisionError", "IndexIntegrityError", "ShardedIndex", "build_index", "build_shard",
        "index_from_bytes", "index_to_bytes", "partition", "shard_of", "stable_id",
        "stable_ids", "train_index", "write_index", "write_manifest", "write_shard")},
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mmx.index' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mmx.index.{_HOME[name]}"), name)


__all__ = [
    "IdCollisionError",
    "IndexIntegrityError",
    "ShardedIndex",
    "assign",
    "build_index",
    "build_shard",
    "choose_k",
    "cluster",
    "describe_clusters",
    "genre_matrix",
    "index_from_bytes",
    "index_to_bytes",
    "l2_normalise",
    "neighbours",
    "over_represented",
    "partition",
    "shard_of",
    "stable_id",
    "stable_ids",
    "train_index",
    "write_index",
    "write_manifest",
    "write_shard",
]
