"""The run's features store: the cached feature rows of this run's trailers, compacted.

Ingest caches one row per content fingerprint, compacted into parts of many rows
(:mod:`mmx.stages.cache`). After ingest the rows of this run's distinct trailers are read by
Ray Data from the parts that hold them, renamed to this run's trailer ids and locations, and
written once as a folder of Parquet files of many trailers each
(``work/<run>/features.parquet/``). Training, embedding and the scenes table read that folder;
the driver reads only its small columns (:data:`META_COLUMNS`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mmx import schema, storage
from mmx.config import RunConfig
from mmx.stages import cache as features_cache
from mmx.stages import dataset
from mmx.titles import TitleVectors, attach

# what the driver reads of the store: every column but the features themselves
META_COLUMNS = ["trailer_id", "uri", "fingerprint", "size_bytes", "status", "reason", "fps",
                "n_frames", "duration_s", "has_audio", "n_shots", "n_clips"]


def assemble(distinct: pa.Table, cache: str, dest: str, cfg: RunConfig,
             titles: TitleVectors | None = None) -> pa.Table:
    """Write the features rows of ``distinct`` (trailer_id, uri, fingerprint: one row per
    distinct content, all cached) to the folder ``dest``; return their :data:`META_COLUMNS`.
    ``titles``: the cached vectors of the run's per-title experts, one more column each
    (:func:`mmx.titles.attach`; None: no sidecar, the store is the video experts' only)."""
    if distinct.num_rows == 0:
        return schema.FEATURES.empty_table().select(META_COLUMNS)
    from mmx.stages.ingest import features_schema

    cached_schema = features_schema(cfg)  # the video experts' columns, as cached
    table_schema = cached_schema
    for name in titles.names if titles is not None else ():
        table_schema = table_schema.append(pa.field(name, pa.list_(pa.float32())))
    names = distinct.select(["fingerprint", "trailer_id", "uri"])
    paths = features_cache.files_for(cache, names["fingerprint"])
    ds = dataset.read(paths, schema=cached_schema).map_batches(
        _rename, batch_format="pyarrow",
        fn_kwargs={"names": names, "table_schema": table_schema, "titles": titles},
        num_cpus=0.5,
    )
    dataset.write(ds, dest, cfg.resources.store_rows_per_file)
    return read_meta(dest)


def _rename(batch: pa.Table, names: pa.Table, table_schema: pa.Schema = schema.FEATURES,
            titles: TitleVectors | None = None) -> pa.Table:
    """This run's trailer_id and uri for each cached row of this run's inputs (found by its
    fingerprint: the same bytes may have been featurised under another name or location); a
    part's rows of other contents are dropped."""
    at = pc.index_in(batch["fingerprint"], value_set=names["fingerprint"])
    if at.null_count:
        keep = pc.is_valid(at)
        batch, at = batch.filter(keep), at.filter(keep)
    batch = batch.set_column(0, "trailer_id", names["trailer_id"].take(at))
    batch = batch.set_column(1, "uri", names["uri"].take(at))
    if "thumbnail" not in batch.column_names:  # a row cached before thumbnails were taken
        batch = batch.append_column("thumbnail", pa.nulls(batch.num_rows, pa.binary()))
    if titles is not None:
        batch = attach(batch, titles)
    return batch.select(table_schema.names).cast(table_schema)


def read_meta(store: str) -> pa.Table:
    """The store's small columns (:data:`META_COLUMNS`), sorted by trailer_id."""
    return storage.read_table(store, META_COLUMNS).sort_by("trailer_id")
