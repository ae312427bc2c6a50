"""Ray adapter for sub-genre clustering, the sharded FAISS index and the neighbours table.

Every step reads the run's embeddings folder (:mod:`mmx.stages.embed`) in a Ray task or actor,
never in the driver:

* sub-genres: one task clusters (or, with a reused model, assigns to the published centroids),
  describes the clusters and writes each trailer's sub-genre;
* index: one task trains the index on a seeded sample (:func:`shards.training_rows`), then one
  task per shard reads its own rows (the ``shard`` column), fills a copy of the trained index
  and writes it; the manifest is written last. With a reused model the published shards are
  updated instead (:func:`shards.update_shard`: removed ids out, new vectors in);
* neighbours: an actor pool searches the sharded index for each trailer; with a reused model
  only the lists a change can touch are searched again, the others are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from mmx import schema, storage
from mmx.config import RunConfig
from mmx.index import describe, hierarchy, kmeans, recall, shards, stable
from mmx.index.neighbours import neighbours as top_neighbours
from mmx.stages import dataset

log = logging.getLogger(__name__)

ASSIGNMENTS = pa.schema([("trailer_id", pa.string()), ("subgenre", pa.int32()),
                         ("previous_subgenre", pa.int32())])


@dataclass
class SubGenres:
    table: pa.Table  # the ``subgenres`` table
    quality: dict = field(default_factory=dict)  # how k was chosen and how good the cut is


def read_embeddings(emb: str, columns: list[str] | None = None) -> pa.Table:
    """The embeddings folder (or the given columns), sorted by trailer_id (empty if none)."""
    from mmx.stages.embed import EMBEDDINGS

    if not dataset.has_parts(emb):
        empty = EMBEDDINGS.empty_table()
        return empty.select(columns) if columns else empty
    return storage.read_table(emb, columns).sort_by("trailer_id")


def matrix(column: pa.ChunkedArray | pa.Array, dim: int = 0) -> np.ndarray:
    """Vector column (list<float32> or float32[D]) → (N, D) float32: :func:`schema.matrix`."""
    return schema.matrix(column, dim)


def cluster_trailers(
    emb: str, labels: dict[str, list[str]], vocab: list[str], cfg: RunConfig, dest: str,
    previous: pa.Table | None = None, before: str | None = None,
) -> SubGenres:
    """Sub-genres of the embedded trailers, in a Ray task; each trailer's sub-genre (and its
    sub-genre in ``before``) is written to ``dest`` (:data:`ASSIGNMENTS`) and the ``subgenres``
    table returned.

    With ``previous`` (the published ``subgenres`` table of a reused model) trailers are
    assigned to the nearest published centroid instead of re-clustering, so sub-genre ids
    stay; its ``top_concepts`` are kept (the concepts of unchanged trailers are not read again).
    Otherwise, with ``before`` (the latest published snapshot, any model) the new clusters take
    the ids of the sub-genres they continue (:func:`mmx.index.stable.match_ids`: membership
    overlap of the trailers in both, not centroids, which a retrain moves to another space).
    With ``before``, ``quality["stability"]`` says how many trailers kept their id.
    """
    task = ray.remote(num_cpus=1, max_retries=cfg.resources.max_retries)(_cluster)
    table, quality = ray.get(task.remote(emb, labels, vocab, cfg, dest, previous, before))
    return SubGenres(table, quality)


def _cluster(emb: str, labels: dict[str, list[str]], vocab: list[str], cfg: RunConfig,
             dest: str, previous: pa.Table | None, before: str | None = None
             ) -> tuple[pa.Table, dict]:
    t = read_embeddings(emb, ["trailer_id", "embedding", "concepts"])
    ids = t["trailer_id"].to_pylist()
    if not ids:
        storage.write_table(ASSIGNMENTS.empty_table(), dest)
        return schema.empty(schema.SUBGENRES), {}
    x = matrix(t["embedding"])
    faiss.normalize_L2(x)
    ic = cfg.index
    if previous is not None and previous.num_rows:
        centroids = matrix(previous["centroid"])
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
    counts, names = _concept_counts(t["concepts"], cfg) if previous is None else (None, ())
    table = describe.describe_clusters(
        assign, [labels.get(i, []) for i in ids], vocab, ids, x, centroids,
        top=ic.top_genres, exemplars=ic.exemplars,
        concept_counts=counts, concept_names=names, top_concepts=ic.top_concepts,
        concept_min_share=ic.concept_min_share,
    )
    reused = previous is not None and previous.num_rows > 0
    if reused:
        table = table.set_column(table.schema.get_field_index("top_concepts"), "top_concepts",
                                 previous["top_concepts"])
    old = _before_subgenres(before)
    if reused:  # the published centroids, in their published order: their ids, unchanged
        named = previous["subgenre"].to_numpy().astype(np.int32)
        matching = stable.IdMatching(named, np.ones(len(named), bool), np.ones(len(named)), [],
                                     high_water=max(old.high_water, int(named.max())))
    else:
        matching = _match(t["trailer_id"], assign, len(centroids), old, ic.subgenre_min_jaccard)
    sub_ids = matching.ids[assign]  # (N,) published id of each trailer
    table = table.set_column(0, "subgenre", pa.array(matching.ids, pa.int32())).sort_by(
        "subgenre")
    at = pc.index_in(t["trailer_id"], value_set=old.trailers["trailer_id"])
    before_ids = old.trailers["subgenre"].take(at)  # null where the trailer is new
    if old.uri is not None:
        both = before_ids.is_valid().to_numpy(zero_copy_only=False)
        quality["stability"] = stable.stability(
            sub_ids[both], before_ids.drop_null().to_numpy(), matching) | {"before": old.uri}
    quality["id_high_water"] = matching.high_water
    storage.write_table(
        pa.table({"trailer_id": t["trailer_id"], "subgenre": pa.array(sub_ids, pa.int32()),
                  "previous_subgenre": before_ids.cast(pa.int32())}, schema=ASSIGNMENTS), dest)
    return table, quality


@dataclass
class _Before:
    """The latest published snapshot's sub-genres: ``trailers`` (trailer_id, subgenre) of its
    clustered trailers, ``ids`` (m,) its sub-genre ids, ``high_water`` the largest id ever
    used up to it; ``uri`` None when there is no published snapshot."""

    uri: str | None
    trailers: pa.Table
    ids: np.ndarray
    high_water: int


def _before_subgenres(before: str | None) -> _Before:
    """What :func:`_cluster` needs of the snapshot ``before`` (or an empty :class:`_Before`)."""
    empty = pa.table({"trailer_id": pa.array([], pa.string()),
                      "subgenre": pa.array([], pa.int32())})
    if before is None:
        return _Before(None, empty, np.zeros(0, np.int64), -1)
    trailers = storage.read_table(storage.join(before, "trailers.parquet"),
                                  ["trailer_id", "subgenre"])
    trailers = trailers.filter(trailers["subgenre"].is_valid()).cast(empty.schema)
    ids = storage.read_table(storage.join(before, "subgenres.parquet"), ["subgenre"])
    ids = ids["subgenre"].to_numpy().astype(np.int64)
    metrics_uri = storage.join(before, "metrics.json")
    recorded = (storage.read_json(metrics_uri).get("subgenres", {}).get("id_high_water", -1)
                if storage.exists(metrics_uri) else -1)
    return _Before(before, trailers, ids, max(int(recorded), int(ids.max()) if len(ids) else -1))


def _match(trailer_ids: pa.ChunkedArray, assign: np.ndarray, k: int, old: _Before,
           min_jaccard: float) -> stable.IdMatching:
    """Ids for the ``k`` new clusters (``assign`` (N,) of ``trailer_ids``) from ``old``."""
    at = pc.index_in(trailer_ids, value_set=old.trailers["trailer_id"])
    both = at.is_valid().to_numpy(zero_copy_only=False)  # (N,) clustered in both snapshots
    old_of = old.trailers["subgenre"].take(at.drop_null()).to_numpy().astype(np.int64)
    return stable.match_ids(assign[both], old_of, k, old_ids=old.ids, min_jaccard=min_jaccard,
                            high_water=old.high_water)


def _concept_counts(column: pa.ChunkedArray, cfg: RunConfig
                    ) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Clips per ImageNet concept ``(N, 1000)`` from each trailer's clip concepts, or
    ``(None, ())`` when concepts are off or unknown."""
    if cfg.index.top_concepts <= 0 or column.null_count == len(column):
        return None, ()
    from mmx.experts import concepts

    col = column.combine_chunks()
    n = len(col)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    classes = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.repeat(np.arange(n), lengths)
    counts = np.bincount(row * concepts.N_CLASSES + classes,
                         minlength=n * concepts.N_CLASSES).reshape(n, concepts.N_CLASSES)
    return counts.astype(np.int32), concepts.imagenet_names()


# --------------------------------------------------------------------------- the index


def build_index(emb: str, cfg: RunConfig, out: str, model_version: str) -> dict:
    """Train the index once on a seeded sample, fill and write ``cfg.index.n_shards`` shards
    in parallel Ray tasks (each reads its own rows), then write the manifest last."""
    remote = ray.remote(num_cpus=1, max_retries=cfg.resources.max_retries)
    trained, dim = ray.get(remote(_train).remote(emb, cfg))
    trained_ref = ray.put(trained)
    fs, path = storage.filesystem(out)
    refs = [remote(_fill_shard).remote(emb, s, trained_ref, dim, path, fs)
            for s in range(cfg.index.n_shards)]
    return shards.write_manifest(path, ray.get(refs), model_version=model_version, dim=dim,
                                 metric="cosine", fs=fs)


def _train(emb: str, cfg: RunConfig) -> tuple[bytes, int]:
    t = read_embeddings(emb, ["trailer_id", "embedding"])
    x = matrix(t["embedding"])
    ic = cfg.index
    rows = shards.training_rows(t["trailer_id"].to_pylist(), ic.train_sample, ic.seed)
    trained = shards.train_index(x[rows], n_total=len(x), exact_below=ic.exact_below,
                                 seed=ic.seed, encoding=ic.ivf_encoding)
    return shards.index_to_bytes(trained), int(x.shape[1])


def _shard_rows(emb: str, shard: int) -> pa.Table:
    """The trailer ids and embeddings of index shard ``shard``."""
    t = read_embeddings(emb, ["trailer_id", "shard", "embedding"])
    return t.filter(pc.equal(t["shard"], shard))


def _fill_shard(emb: str, shard: int, trained: bytes, dim: int, path: str,
                fs: object) -> dict:
    """One shard: a copy of the trained index filled with its vectors, written with its ids
    (a shard no trailer hashes to is written empty)."""
    faiss.omp_set_num_threads(1)
    t = _shard_rows(emb, shard)
    tids = t["trailer_id"].to_pylist()
    gids = shards.stable_ids(tids)
    blob = shards.build_shard(trained, gids, matrix(t["embedding"], dim))
    return shards.write_shard(path, shard, blob, gids, tids, fs=fs)


def update_index(previous: str, emb: str, remove: list[str], added: list[str], cfg: RunConfig,
                 out: str, model_version: str) -> dict:
    """The published index ``previous`` with the trailers ``remove`` taken out and the
    embedded trailers ``added`` put in (by shard, in parallel tasks), written to ``out``."""
    pfs, ppath = storage.filesystem(previous)
    manifest = storage.read_json(storage.join(previous, shards.MANIFEST))
    if manifest["n_shards"] != cfg.index.n_shards:
        raise ValueError(f"{previous} has {manifest['n_shards']} shards, the config "
                         f"{cfg.index.n_shards}: run with --recompute to rebuild the index")
    fs, path = storage.filesystem(out)
    gone = shards.stable_ids(remove) if remove else np.zeros(0, np.int64)
    by_shard = np.asarray([shards.shard_of(t, cfg.index.n_shards) for t in remove], np.int64)
    remote = ray.remote(num_cpus=1, max_retries=cfg.resources.max_retries)(_update_shard)
    added_ref = ray.put(pa.array(added, pa.string()))
    refs = [remote.remote(ppath, pfs, entry, int(manifest["dim"]),
                          gone[by_shard == entry["shard"]], emb, added_ref, path, fs)
            for entry in manifest["shards"]]
    return shards.write_manifest(path, ray.get(refs), model_version=model_version,
                                 dim=int(manifest["dim"]), metric="cosine", fs=fs)


def _update_shard(ppath: str, pfs: object, entry: dict, dim: int, gone: np.ndarray,
                  emb: str, added: pa.Array, path: str, fs: object) -> dict:
    """One published shard with ``gone`` ids out and its ``added`` trailers in, written."""
    faiss.omp_set_num_threads(1)
    s = int(entry["shard"])
    with pfs.open(f"{ppath.rstrip('/')}/{entry['index_file']}", "rb") as fh:
        blob = fh.read()
    with pfs.open(f"{ppath.rstrip('/')}/{entry['ids_file']}", "rb") as fh:
        id_map = pq.read_table(fh)
    t = _shard_rows(emb, s)
    t = t.filter(pc.is_in(t["trailer_id"], value_set=added))
    tids = t["trailer_id"].to_pylist()
    new_ids = shards.stable_ids(tids)
    keep = pc.invert(pc.is_in(id_map["id"], value_set=pa.array(gone, pa.int64())))
    id_map = id_map.filter(keep)
    vectors = matrix(t["embedding"], dim)
    blob = shards.update_shard(blob, gone, new_ids, vectors)
    all_ids = np.concatenate([id_map["id"].to_numpy(), new_ids])
    all_tids = id_map["trailer_id"].to_pylist() + tids
    return shards.write_shard(path, s, blob, all_ids, all_tids, fs=fs)


def measure_index(index_uri: str, emb: str, cfg: RunConfig) -> dict:
    """recall@10 of the written sharded index vs exact search, at the configured nprobe, and
    the smallest nprobe reaching ``cfg.index.recall_target`` (:func:`recall.measure_recall`),
    measured in a Ray task on a seeded sample of ``cfg.index.recall_queries`` trailers."""
    task = ray.remote(num_cpus=1, max_retries=cfg.resources.max_retries)(_measure)
    return ray.get(task.remote(index_uri, emb, cfg))


def _measure(index_uri: str, emb: str, cfg: RunConfig) -> dict:
    faiss.omp_set_num_threads(1)
    fs, path = storage.filesystem(index_uri)
    loaded = shards.ShardedIndex.load(path, fs=fs, nprobe=cfg.index.nprobe)
    ic = cfg.index
    ids = read_embeddings(emb, ["trailer_id"])["trailer_id"]  # sorted
    rows = recall.sample_rows(len(ids), ic.recall_queries, ic.seed)
    if not recall.is_ivf(loaded):  # exact: nothing to measure, no vector read
        return recall.measure_recall_parts(loaded, np.zeros((len(rows), loaded.dim), np.float32),
                                           [], len(ids), target=ic.recall_target)
    # the queries' rows, then every vector one batch at a time (never the whole archive)
    afs, apath = dataset.arrow_fs(emb)
    data = pads.dataset(apath, filesystem=afs, format="parquet")
    wanted = ids.take(pa.array(rows))
    picked = data.to_table(columns=["trailer_id", "embedding"],
                           filter=pc.is_in(pc.field("trailer_id"), value_set=wanted))
    picked = picked.sort_by("trailer_id")
    parts = ((b["trailer_id"].to_pylist(), matrix(b["embedding"], loaded.dim))
             for b in data.to_batches(columns=["trailer_id", "embedding"],
                                      batch_size=ic.recall_batch))
    return recall.measure_recall_parts(loaded, matrix(picked["embedding"], loaded.dim), parts,
                                       len(ids), target=ic.recall_target)


# --------------------------------------------------------------------------- neighbours


class NeighbourActor:
    """Loads the sharded index once; searches the neighbours of a batch of trailers.

    With ``previous`` (a reused model's published neighbours table) a trailer's list is
    searched again only when it may have changed: it is new or changed itself (``fresh``),
    one of its neighbours is gone or changed (``stale``), it had fewer than k neighbours, or a
    fresh trailer scores at least as high as its last neighbour; otherwise its published list
    is kept as it is.
    """

    def __init__(self, index_uri: str, cfg: RunConfig, previous: str | None, emb: str,
                 fresh: list[str], stale: list[str]) -> None:
        fs, path = storage.filesystem(index_uri)
        faiss.omp_set_num_threads(1)
        self.index = shards.ShardedIndex.load(path, fs=fs, nprobe=cfg.index.nprobe)
        self.k = cfg.index.neighbours
        self.keep: pa.Table | None = None
        if previous is None:
            return
        gone = pa.array(sorted(set(stale) | set(fresh)), pa.string())
        keep = storage.read_table(previous).cast(schema.NEIGHBOURS)
        keep = keep.filter(pc.invert(pc.is_in(keep["trailer_id"], value_set=gone)))
        self.touched = set(keep.filter(pc.is_in(keep["neighbour_id"], value_set=gone))
                           ["trailer_id"].to_pylist())
        per = keep.group_by("trailer_id").aggregate([("score", "min"), ("score", "count")])
        self.floor = dict(zip(per["trailer_id"].to_pylist(),
                              zip(per["score_min"].to_pylist(), per["score_count"].to_pylist(),
                                  strict=True), strict=True))
        self.keep = keep
        self.fresh_ids = set(fresh)
        e = read_embeddings(emb, ["trailer_id", "embedding"])
        e = e.filter(pc.is_in(e["trailer_id"], value_set=pa.array(fresh, pa.string())))
        self.fresh = matrix(e["embedding"]) if e.num_rows else None
        if self.fresh is not None:
            faiss.normalize_L2(self.fresh)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch["trailer_id"].to_pylist()
        x = matrix(batch["embedding"])
        if self.keep is None or not ids:
            return top_neighbours(self.index, ids, x, self.k)
        redo = np.asarray([t in self.fresh_ids or t in self.touched
                           or self.floor.get(t, (0.0, 0))[1] < self.k for t in ids], dtype=bool)
        if self.fresh is not None:
            q = np.ascontiguousarray(x, dtype=np.float32).copy()
            faiss.normalize_L2(q)
            floor = np.asarray([self.floor.get(t, (np.inf, 0))[0] for t in ids], np.float32)
            redo |= ((q @ self.fresh.T) >= floor[:, None] - 1e-6).any(axis=1)  # (B, F)
        parts = []
        rows = np.flatnonzero(redo)
        if len(rows):
            parts.append(top_neighbours(self.index, [ids[i] for i in rows], x[rows], self.k))
        kept = [ids[i] for i in np.flatnonzero(~redo)]
        if kept:
            parts.append(self.keep.filter(pc.is_in(self.keep["trailer_id"],
                                                   value_set=pa.array(kept, pa.string()))))
        return pa.concat_tables([p.cast(schema.NEIGHBOURS) for p in parts])


def find_neighbours(index_uri: str, emb: str, cfg: RunConfig, previous: str | None = None,
                    fresh: list[str] | None = None, stale: list[str] | None = None
                    ) -> ray.data.Dataset:
    """Top-k neighbours of every embedded trailer (itself excluded), via the sharded index,
    as a dataset of ``neighbours`` rows. With ``previous`` (the published neighbours table of
    the reused model), only the lists that ``fresh`` (new or changed, embedded this run) or
    ``stale`` (removed or changed) trailers can touch are searched again."""
    return dataset.read(emb, columns=["trailer_id", "embedding"]).map_batches(
        NeighbourActor,
        batch_size=4096,
        batch_format="pyarrow",
        fn_constructor_kwargs={"index_uri": index_uri, "cfg": cfg, "previous": previous,
                               "emb": emb, "fresh": list(fresh or []),
                               "stale": list(stale or [])},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cfg.resources.embed_pool)),
        num_cpus=1,
    )
