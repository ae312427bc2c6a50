"""Ray adapter for sub-genre clustering, the sharded FAISS index and the neighbours table.

The index is trained once per model version in the driver (on a sample), then each shard
is filled in its own Ray task from that one trained index, with explicit global ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import faiss
import numpy as np
import pyarrow as pa
import ray

from mmx import schema, storage
from mmx.config import RunConfig
from mmx.index import describe, hierarchy, kmeans, shards
from mmx.index.neighbours import neighbours as top_neighbours

log = logging.getLogger(__name__)


@dataclass
class SubGenres:
    labels: np.ndarray  # (N,) int32 sub-genre per embedded trailer, in ``emb`` row order
    centroids: np.ndarray  # (k, D) float32
    table: pa.Table  # the ``subgenres`` table
    quality: dict = field(default_factory=dict)  # how k was chosen and how good the cut is


def _vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """list<float32> column → (N, D) float32, L2-normalised (cosine via inner product)."""
    rows = column.to_pylist()
    if not rows:
        return np.zeros((0, 0), np.float32)
    x = np.asarray(rows, dtype=np.float32)  # (N, D)
    faiss.normalize_L2(x)
    return x


def cluster_trailers(
    emb: pa.Table,
    labels: dict[str, list[str]],
    vocab: list[str],
    cfg: RunConfig,
    centroids: np.ndarray | None = None,
    features: pa.Table | None = None,
) -> SubGenres:
    """k-means sub-genres on the fine-grained embeddings, described by genre lift and, given
    the ok ``features`` rows (their appearance column), by over-represented ImageNet concepts.

    With ``centroids`` (an incremental run) trailers are assigned to the nearest existing
    sub-genre instead of re-clustering, so sub-genre numbers stay stable between nights.
    ``index.n_subgenres = 0`` (auto) cuts Ward's hierarchy where the data's structure is
    (:mod:`mmx.index.hierarchy`); ``k > 0`` runs spherical k-means with that k.
    """
    ids = emb["trailer_id"].to_pylist()
    x = _vectors(emb["embedding"])
    if len(ids) == 0:
        return SubGenres(
            np.zeros(0, np.int32), np.zeros((0, 0), np.float32), schema.empty(schema.SUBGENRES)
        )
    ic = cfg.index
    if centroids is not None and len(centroids):
        assign = kmeans.assign(x, centroids)
        quality = {"k": len(centroids), "rule": "nearest published centroid (no re-clustering)"}
    elif ic.n_subgenres == 0:
        cut = hierarchy.ward_subgenres(
            x, k_min=ic.min_subgenres, k_max=ic.max_subgenres, tolerance=ic.subgenre_tolerance,
            sample=ic.subgenre_sample, seed=ic.seed,
        )
        assign, centroids, quality = cut.labels, cut.centroids, cut.quality()
        log.info("sub-genres: k = %d (%s)", cut.k, cut.rule)
    else:
        k = (kmeans.choose_k(x, ic.k_range, seed=ic.seed) if ic.k_range
             else min(ic.n_subgenres, len(ids)))
        assign, centroids = kmeans.cluster(x, k, seed=ic.seed)
        quality = {"k": len(centroids), "rule": "k-means, k from the config"}
    counts, names = _concepts(features, ids, cfg)
    table = describe.describe_clusters(
        assign, [labels.get(t, []) for t in ids], vocab, ids, x, centroids,
        top=cfg.index.top_genres, exemplars=cfg.index.exemplars,
        concept_counts=counts, concept_names=names, top_concepts=cfg.index.top_concepts,
        concept_min_share=cfg.index.concept_min_share,
    )
    return SubGenres(assign.astype(np.int32), centroids, table, quality)


def _concepts(
    features: pa.Table | None, ids: list[str], cfg: RunConfig
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Clips per ImageNet concept ``(N, 1000)`` of the trailers ``ids`` (in that order), or
    ``(None, ())`` when concepts are off or there are no appearance features."""
    if (
        features is None
        or cfg.index.top_concepts <= 0
        or "appearance" not in cfg.experts.names
        or features.num_rows == 0
    ):
        return None, ()
    from mmx.experts import concepts

    row_of = {t: i for i, t in enumerate(features["trailer_id"].to_pylist())}
    missing = [t for t in ids if t not in row_of]
    if missing:
        raise ValueError(f"no features for embedded trailers {missing[:5]}")
    rows = features.take(pa.array([row_of[t] for t in ids], pa.int64()))
    weight, bias = concepts.classifier_head(cfg.experts)
    return concepts.concept_counts(rows, weight, bias), concepts.imagenet_names()


def build_index(
    trailer_ids: pa.ChunkedArray,
    embeddings: pa.ChunkedArray,
    cfg: RunConfig,
    out: str,
    model_version: str,
) -> dict:
    """Train the index once, fill and write ``cfg.index.n_shards`` shards in parallel Ray
    tasks (explicit global ids), then write the manifest last. Returns the manifest."""
    ids = trailer_ids.to_pylist()
    x = _vectors(embeddings)
    ic = cfg.index
    trained = shards.train_index(
        x[: ic.train_sample], n_total=len(ids), exact_below=ic.exact_below, seed=ic.seed,
        encoding=ic.ivf_encoding,
    )
    trained_ref = ray.put(shards.index_to_bytes(trained))
    gids = shards.stable_ids(ids)
    fs, path = storage.filesystem(out)
    task = ray.remote(num_cpus=1, max_retries=cfg.resources.max_retries)(_build_and_write)
    refs = [
        task.remote(path, s, trained_ref, gids[rows], [ids[i] for i in rows], x[rows], fs)
        for s, rows in enumerate(shards.partition(ids, ic.n_shards))
    ]
    entries = ray.get(refs)
    return shards.write_manifest(
        path, entries, model_version=model_version, dim=int(x.shape[1]), metric="cosine", fs=fs
    )


def _build_and_write(
    path: str, shard_no: int, trained: bytes, gids: np.ndarray, tids: list[str],
    x: np.ndarray, fs: object,
) -> dict:
    """One shard: a copy of the trained index filled with its vectors, written with its ids."""
    faiss.omp_set_num_threads(1)
    blob = shards.build_shard(trained, gids, x)
    return shards.write_shard(path, shard_no, blob, gids, tids, fs=fs)


def find_neighbours(index_uri: str, emb: pa.Table, cfg: RunConfig) -> pa.Table:
    """Top-k neighbours of every embedded trailer (itself excluded), via the sharded index."""
    fs, path = storage.filesystem(index_uri)
    index = shards.ShardedIndex.load(path, fs=fs, nprobe=cfg.index.nprobe)
    ids = emb["trailer_id"].to_pylist()
    if not ids:
        return schema.empty(schema.NEIGHBOURS)
    table = top_neighbours(index, ids, _vectors(emb["embedding"]), cfg.index.neighbours)
    return schema.conform(table, schema.NEIGHBOURS)
