"""The snapshot's tables, written column-wise from the run's folders (never row by row).

``trailers.parquet``: one row per input file. The ok trailers' rows are made in Ray tasks
from the embeddings folder joined with the small per-trailer metadata the driver holds (status,
labels, split, version …) and each trailer's sub-genre; the other rows come from that metadata
alone. ``scenes.parquet`` comes from the features store, ``neighbours.parquet`` from the
neighbours dataset, ``thumbnails.parquet`` (the report's pictures) from the features store too.
Each table is streamed in trailer order into one Parquet file.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from mmx import schema, storage
from mmx.stages import dataset
from mmx.stages.embed import EMBEDDINGS, shard_column
from mmx.stages.index import ASSIGNMENTS

log = logging.getLogger(__name__)

# the per-trailer metadata the driver assembles for the trailers table
META = pa.schema([f for f in schema.TRAILERS if f.name not in
                  ("predicted_genres", "suggested_genres", "genre_scores", "subgenre",
                   "previous_subgenre", "embedding")])


def write_trailers(meta: pa.Table, emb: str, assignments: str, vocab: list[str],
                   threshold: float, uri: str) -> int:
    """``trailers.parquet`` at ``uri`` from ``meta`` (:data:`META`, one row per input) and the
    ok trailers' embeddings and sub-genres; ``vocab`` is the genre model's (empty: no model,
    genre columns stay empty). ``embedding`` and ``genre_scores`` are published as
    ``float32[D]`` and ``float32[G]`` (:func:`schema.published`); rows without them hold
    nulls."""
    dims = {"embedding": _embedding_dim(emb), "genre_scores": len(vocab)}
    out_schema = schema.with_vocab(schema.published(schema.TRAILERS, **dims), vocab)
    meta = meta.select(META.names).cast(META)
    ok = meta.filter(pc.equal(meta["status"], "ok"))
    rest = meta.filter(pc.not_equal(meta["status"], "ok"))
    rest = _with_nulls(rest, out_schema)
    if dataset.has_parts(emb):
        ds = dataset.read(emb, columns=["trailer_id", "embedding", "genre_scores"]).map_batches(
            _ok_rows, batch_format="pyarrow", num_cpus=0.5,
            fn_kwargs={"meta": ok, "assignments": assignments, "vocab": vocab,
                       "threshold": threshold, "out_schema": out_schema},
        )
        if rest.num_rows:
            ds = ds.union(ray.data.from_arrow(rest))
        return dataset.write_file(ds, uri, out_schema, sort=["trailer_id"], sources=[emb])
    return dataset.write_file(None, uri, out_schema, extra=rest.sort_by("trailer_id"))


def _embedding_dim(emb: str) -> int:
    """D of the embeddings folder ``emb``: the length of its first vector (0: no parts)."""
    files = storage.list_files(emb, ".parquet") if dataset.has_parts(emb) else []
    for uri in files:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            for i in range(pf.num_row_groups):
                first = pf.read_row_group(i, columns=["embedding"])["embedding"].drop_null()
                if len(first):
                    return len(first[0])
    return 0


def _with_nulls(meta: pa.Table, out_schema: pa.Schema) -> pa.Table:
    """``meta`` rows as trailers rows without predictions, sub-genre or embedding."""
    n = meta.num_rows
    cols = {}
    for f in out_schema:
        if f.name in meta.column_names:
            cols[f.name] = meta[f.name]
        elif f.name in ("predicted_genres", "suggested_genres"):
            cols[f.name] = pa.array([[]] * n, f.type)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=out_schema)


def _ok_rows(batch: pa.Table, meta: pa.Table, assignments: str, vocab: list[str],
             threshold: float, out_schema: pa.Schema) -> pa.Table:
    """Trailers rows of a batch of embedded trailers (vectorised over the batch)."""
    at = pc.index_in(batch["trailer_id"], value_set=meta["trailer_id"])
    if at.null_count:
        raise ValueError("an embedded trailer has no metadata row")
    rows = meta.take(at)
    sub = storage.read_table(assignments).cast(ASSIGNMENTS)
    where = pc.index_in(batch["trailer_id"], value_set=sub["trailer_id"])
    subgenre = sub["subgenre"].take(where)
    previous_subgenre = sub["previous_subgenre"].take(where)
    n = batch.num_rows
    scores = batch["genre_scores"]
    if vocab:
        s = pc.list_flatten(scores.combine_chunks() if isinstance(scores, pa.ChunkedArray)
                            else scores).to_numpy(zero_copy_only=False).reshape(n, len(vocab))
        predicted = s >= threshold  # (B, G)
        genres = rows["genres"].combine_chunks()
        lengths = pc.list_value_length(genres).fill_null(0).to_numpy(zero_copy_only=False)
        col = pc.index_in(pc.list_flatten(genres), value_set=pa.array(vocab, pa.string()))
        row = np.repeat(np.arange(n), lengths)
        col = col.to_numpy(zero_copy_only=False)  # NaN where a genre is not the model's
        known = ~np.isnan(col.astype(np.float64))
        labelled = np.zeros((n, len(vocab)), dtype=bool)
        labelled[row[known], col[known].astype(np.int64)] = True
        has_labels = lengths > 0
        suggested = predicted & ~labelled & has_labels[:, None]
        genre_scores = scores.cast(out_schema.field("genre_scores").type)
    else:
        predicted = suggested = np.zeros((n, 0), dtype=bool)
        genre_scores = pa.nulls(n, out_schema.field("genre_scores").type)
    cols = {f.name: rows[f.name] for f in META}
    cols |= {
        "predicted_genres": _names(predicted, vocab),
        "suggested_genres": _names(suggested, vocab),
        "genre_scores": genre_scores,
        "subgenre": subgenre,
        "previous_subgenre": previous_subgenre,
        "embedding": batch["embedding"].cast(out_schema.field("embedding").type),
    }
    return pa.table({f.name: cols[f.name] for f in out_schema}, schema=out_schema)


def _names(hot: np.ndarray, vocab: list[str]) -> pa.Array:
    """(B, G) bool → list<string> of the genre names set in each row."""
    offsets = np.concatenate([[0], np.cumsum(hot.sum(axis=1))]).astype(np.int32)
    values = np.asarray(vocab, dtype=object)[np.nonzero(hot)[1]] if hot.size else []
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(list(values), pa.string()))


def write_scenes(store: str | None, uri: str, previous: str | None = None,
                 keep: list[str] | None = None) -> int:
    """``scenes.parquet``: one row per kept shot of every ok trailer of the features ``store``,
    plus the published shots (``previous`` scenes table) of the unchanged trailers ``keep``."""
    return _write_ok_rows(store, ["trailer_id", "n_clips", "clip_start", "clip_end", "fps"],
                          scenes_rows, uri, schema.SCENES, ["trailer_id", "clip_idx"],
                          previous, keep)


def write_thumbnails(store: str | None, uri: str, previous: str | None = None,
                     keep: list[str] | None = None) -> int:
    """``thumbnails.parquet``: the thumbnail of every ok trailer of the features ``store`` (null
    for rows cached before thumbnails were taken), plus the published ones (``previous``
    thumbnails table, when that snapshot has one) of the unchanged trailers ``keep``."""
    if previous is not None and not storage.exists(previous):
        previous = None  # a snapshot from before thumbnails: placeholders in the report
    return _write_ok_rows(store, ["trailer_id", "thumbnail"], _thumbnail_rows, uri,
                          schema.THUMBNAILS, ["trailer_id"], previous, keep)


def _thumbnail_rows(ok: pa.Table) -> pa.Table:
    return pa.table({"trailer_id": ok["trailer_id"], "jpeg": ok["thumbnail"]},
                    schema=schema.THUMBNAILS)


def _write_ok_rows(store: str | None, columns: list[str], rows: Any, uri: str,
                   out_schema: pa.Schema, sort: list[str], previous: str | None,
                   keep: list[str] | None) -> int:
    """One snapshot table from the ok rows of the features ``store`` (``columns`` mapped by
    ``rows``, a table → table function run in Ray tasks) plus the rows of the unchanged
    trailers ``keep`` from the ``previous`` snapshot's table, sorted by ``sort``."""
    parts = []
    if store is not None and dataset.has_parts(store):
        ds = dataset.read(store, columns=columns, where=col("status") == "ok")
        parts.append(ds.map_batches(rows, batch_format="pyarrow", num_cpus=0.5))
    if previous is not None and keep:
        parts.append(dataset.read(previous, where=col("trailer_id").is_in(list(keep))))
    if not parts:
        return dataset.write_file(None, uri, out_schema)
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    sources = [u for u in (store, previous) if u is not None]
    return dataset.write_file(ds, uri, out_schema, sort=sort, sources=sources)


def scenes_rows(ok: pa.Table) -> pa.Table:
    """One row per kept shot of every ok trailer (vectorised over the list columns)."""
    n = np.asarray(ok["n_clips"].to_numpy(zero_copy_only=False), dtype=np.int64)
    starts = pc.list_flatten(ok["clip_start"]).to_numpy(zero_copy_only=False)
    ends = pc.list_flatten(ok["clip_end"]).to_numpy(zero_copy_only=False)
    fps = np.repeat(ok["fps"].to_numpy(zero_copy_only=False), n)
    ids = pc.take(ok["trailer_id"], pa.array(np.repeat(np.arange(len(n)), n)))
    offsets = np.repeat(np.cumsum(n) - n, n)  # clip index = position - trailer's first
    clip_idx = np.arange(int(n.sum())) - offsets
    return pa.table(
        {
            "trailer_id": ids,
            "clip_idx": pa.array(clip_idx, pa.int32()),
            "start_frame": pa.array(starts, pa.int64()),
            "end_frame": pa.array(ends, pa.int64()),
            "start_s": pa.array(starts / fps, pa.float64()),
            "end_s": pa.array(ends / fps, pa.float64()),
        },
        schema=schema.SCENES,
    )


def write_neighbours(ds: ray.data.Dataset, uri: str, emb: str) -> int:
    """``neighbours.parquet`` from the neighbours dataset of the embeddings ``emb`` (which
    sizes the sort: k pairs per trailer are smaller than its vector), by trailer then rank."""
    return dataset.write_file(ds, uri, schema.NEIGHBOURS, sort=["trailer_id", "rank"],
                              sources=[emb])


def reuse_embeddings(previous_trailers: str, ids: list[str], n_shards: int, dest: str,
                     rows_per_file: int) -> None:
    """Copy the published embedding and genre scores of the trailers ``ids`` (unchanged since
    the reused model embedded them) into the run's embeddings folder ``dest``."""
    if not ids:
        return
    ds = dataset.read(previous_trailers, columns=["trailer_id", "embedding", "genre_scores"],
                      where=col("trailer_id").is_in(list(ids)))
    ds = ds.map_batches(_as_embeddings, batch_format="pyarrow", num_cpus=0.5,
                        fn_kwargs={"n_shards": n_shards})
    dataset.write(ds, dest, rows_per_file)


def _as_embeddings(batch: pa.Table, n_shards: int) -> pa.Table:
    """Published trailers rows (float32[D] vectors, or list<float32> in snapshots published
    before issue 14) as rows of the run's embeddings folder (list<float32>)."""
    return pa.table({
        "trailer_id": batch["trailer_id"],
        "shard": shard_column(batch["trailer_id"], n_shards),
        "embedding": batch["embedding"].cast(EMBEDDINGS.field("embedding").type),
        "coarse_embedding": pa.nulls(batch.num_rows, pa.list_(pa.float32())),
        "genre_scores": batch["genre_scores"].cast(EMBEDDINGS.field("genre_scores").type),
        "concepts": pa.nulls(batch.num_rows, EMBEDDINGS.field("concepts").type),
    }, schema=EMBEDDINGS)


def coarse_sample(emb: str, k: int) -> tuple[list[str], np.ndarray] | None:
    """At most ``k`` evenly spaced trailers' coarse embeddings ``(ids, (N, D) float32)`` from
    the run's embeddings folder ``emb`` (for the report's coarse map); None when it holds none.
    Reads only the sampled rows' vectors into the driver."""
    import pyarrow.dataset as pads

    from mmx.report import sample_rows

    try:
        fs, path = dataset.arrow_fs(emb)
        data = pads.dataset(path, filesystem=fs, format="parquet")
        if "coarse_embedding" not in data.schema.names:
            return None
        valid = pc.field("coarse_embedding").is_valid()
        ids = data.to_table(columns=["trailer_id"], filter=valid)["trailer_id"]
        if len(ids) == 0:
            return None
        rows = data.to_table(columns=["trailer_id", "coarse_embedding"], filter=pc.is_in(
            pc.field("trailer_id"), value_set=ids.take(pa.array(sample_rows(len(ids), k)))))
        n = rows.num_rows
        flat = pc.list_flatten(rows["coarse_embedding"].combine_chunks()).to_numpy(
            zero_copy_only=False)
        return rows["trailer_id"].to_pylist(), flat.astype(np.float32).reshape(n, -1)
    except Exception as err:  # noqa: BLE001 - the report's map, never a reason to fail a run
        log.warning("no coarse embeddings for the report: %s", err)
        return None
