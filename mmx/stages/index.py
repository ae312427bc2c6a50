"""Ray adapter for sub-genre clustering, the sharded FAISS index and the neighbours table.

The index is trained once per model version in the driver (on a sample), then each shard
is filled in its own Ray task from that one trained index, with explicit global ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import ray

from mmx import schema, storage
from mmx.config import RunConfig
from mmx.index import describe, kmeans, neighbours, shards

log = logging.getLogger(__name__)


@dataclass
class SubGenres:
    labels: np.ndarray  # (N,) int32 sub-genre per embedded trailer, in ``emb`` row order
    centroids: np.ndarray  # (k, D) float32
    table: pa.Table  # the ``subgenres`` table


def _vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """list<float32> column → (N, D) float32, L2-normalised (cosine via inner product)."""
    rows = column.to_pylist()
    if not rows:
        return np.zeros((0, 0), np.float32)
    x = np.asarray(rows, dtype=np.float32)  # (N, D)
    faiss.normalize_L2(x)
    return x


def cluster_trailers(
    emb: pa.Table, labels: dict[str, list[str]], vocab: list[str], cfg: RunConfig
) -> SubGenres:
    """k-means sub-genres on the fine-grained embeddings, described by genre lift."""
    ids = emb["trailer_id"].to_pylist()
    x = _vectors(emb["embedding"])
    if len(ids) == 0:
        return SubGenres(np.zeros(0, np.int32), np.zeros((0, 0), np.float32), schema.empty(schema.SUBGENRES))
    k = min(cfg.index.n_subgenres, len(ids))
    assign, centroids = kmeans.cluster(x, k, seed=cfg.index.seed)
    table = describe.describe_clusters(
        assign, [labels.get(t, []) for t in ids], vocab, ids, x, centroids
    )
    return SubGenres(assign.astype(np.int32), centroids, schema.conform(table, schema.SUBGENRES))


def build_index(
    trailer_ids: pa.ChunkedArray, embeddings: pa.ChunkedArray, cfg: RunConfig, out: str,
    model_version: str,
) -> dict:
    """Train the index once, fill ``cfg.index.n_shards`` shards in parallel Ray tasks, and
    write them with their id maps and manifest under ``out``. Returns the manifest."""
    ids = trailer_ids.to_pylist()
    x = _vectors(embeddings)
    n_shards = cfg.index.n_shards
    trained = shards.train_index(
        x, n_total=len(ids), exact_below=cfg.index.exact_below, seed=cfg.index.seed
    )
    trained_ref = ray.put(faiss.serialize_index(trained).tobytes())
    shard_no = np.asarray([shards.shard_of(t, n_shards) for t in ids], dtype=np.int64)
    gids = np.asarray([shards.stable_id(t) for t in ids], dtype=np.int64)
    tasks, parts = [], []
    build = ray.remote(num_cpus=1, max_retries=cfg.resources.max_retries)(shards.build_shard)
    for s in range(n_shards):
        sel = np.flatnonzero(shard_no == s)
        parts.append((s, gids[sel], [ids[i] for i in sel]))
        tasks.append(build.remote(trained_ref, gids[sel], x[sel]))
    blobs = ray.get(tasks)
    fs, path = storage.filesystem(out)
    return shards.write_index(
        path,
        [(s, blob, g, t) for (s, g, t), blob in zip(parts, blobs, strict=True)],
        model_version=model_version,
        dim=int(x.shape[1]) if x.size else 0,
        metric="cosine",
        fs=fs,
    )


def find_neighbours(index_uri: str, emb: pa.Table, cfg: RunConfig) -> pa.Table:
    """Top-k neighbours of every embedded trailer (itself excluded), via the sharded index."""
    fs, path = storage.filesystem(index_uri)
    index = shards.ShardedIndex.load(path, fs=fs)
    ids = emb["trailer_id"].to_pylist()
    if not ids:
        return schema.empty(schema.NEIGHBOURS)
    table = neighbours.neighbours(index, ids, _vectors(emb["embedding"]), cfg.index.neighbours)
    return schema.conform(table, schema.NEIGHBOURS)
