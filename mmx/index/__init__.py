"""Trailer-embedding index: sub-genre k-means, the sharded FAISS index, neighbours, cluster notes.

Pure functions and one reader class; no Ray here (the L3 stage runs e.g. one task per shard).
Similarity everywhere is cosine (inner product of L2-normalised float32 vectors).
"""

from mmx.index.describe import describe_clusters, genre_matrix, over_represented
from mmx.index.kmeans import assign, choose_k, cluster
from mmx.index.neighbours import neighbours
from mmx.index.shards import (
    IdCollisionError,
    IndexIntegrityError,
    ShardedIndex,
    build_index,
    build_shard,
    index_from_bytes,
    index_to_bytes,
    partition,
    shard_of,
    stable_id,
    stable_ids,
    train_index,
    write_index,
    write_manifest,
    write_shard,
)
from mmx.index.vectors import l2_normalise

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
