"""Ray Data over mmx's storage: datasets read from and written to local paths or s3://.

Past ingest nothing of the archive's size passes through the driver as a whole table: stages
read Parquet folders as Ray Data datasets, transform them in tasks or actors and write Parquet
folders again. A published table that must be one file (``trailers.parquet`` …) is streamed
batch by batch, in order, into one Parquet writer (:func:`write_file`): the driver holds one
batch at a time, except for a table whose sources are small enough
(:data:`DRIVER_SORT_BYTES`) that sorting it in the driver is cheaper than Ray Data's sort.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from mmx import storage


def arrow_fs(uri: str) -> tuple[pafs.FileSystem | None, str]:
    """(pyarrow filesystem, path) for Ray Data: None for local paths (Ray's own), else the
    fsspec filesystem of :mod:`mmx.storage` (same credentials chain and endpoint) wrapped."""
    fs, path = storage.filesystem(uri)
    if "://" not in uri or uri.startswith("file://"):
        return None, path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def read(uris: str | Sequence[str], columns: list[str] | None = None, where: Any = None,
         **kwargs: Any) -> ray.data.Dataset:
    """A dataset of the Parquet file(s) or folder(s) ``uris`` (one filesystem), with the rows
    matching ``where`` (a ``ray.data.expressions`` predicate, pushed down to the reader)."""
    many = [uris] if isinstance(uris, str) else list(uris)
    fs, _ = arrow_fs(many[0])
    paths = [arrow_fs(u)[1] for u in many]
    ds = ray.data.read_parquet(paths if len(paths) > 1 else paths[0], filesystem=fs, **kwargs)
    if columns is not None:
        ds = ds.select_columns(columns)  # pushed down into the reader by Ray Data's optimizer
    return ds if where is None else ds.filter(expr=where)


def has_parts(folder: str) -> bool:
    """Whether the folder ``folder`` holds Parquet parts (a stage with no rows writes none)."""
    fs, path = storage.filesystem(folder)
    return fs.exists(path) and bool(fs.glob(f"{path.rstrip('/')}/*.parquet"))


def write(ds: ray.data.Dataset, uri: str, rows_per_file: int, append: bool = False) -> None:
    """Write ``ds`` as a folder of Parquet files of at least ``rows_per_file`` rows each
    (compacted: many trailers per file, not one object per trailer). Parts already in the
    folder are removed first unless ``append``."""
    fs, path = arrow_fs(uri)
    sfs, spath = storage.filesystem(uri)
    if not append and sfs.exists(spath):  # a killed attempt's parts: never mixed with this attempt's
        sfs.rm(spath, recursive=True)
    storage.makedirs(uri)
    ds.write_parquet(path, filesystem=fs, min_rows_per_file=max(1, rows_per_file),
                     compression="zstd")


# Bytes of input per partition of a sort. Ray Data's default (its hash-shuffle parallelism,
# 200) takes over whenever the input's block count is unknown (every Parquet read): 400+ tasks
# for a table of 11 rows, ~30 s each on a laptop. Sized from the data instead.
SORT_PARTITION_BYTES = 256 * 2**20
MAX_SORT_PARTITIONS = 200
# A table whose sources weigh at most this is sorted by the driver (:func:`_sorted_batches`).
DRIVER_SORT_BYTES = 64 * 2**20


def sources_bytes(sources: Sequence[str]) -> int:
    """Size on storage of the Parquet ``sources`` (files or folders; missing ones weigh 0)."""
    total = 0
    for uri in sources:
        fs, path = storage.filesystem(uri)
        if fs.exists(path):
            total += int(fs.du(path, total=True)) if fs.isdir(path) else int(fs.size(path))
    return total


def sort_partitions(sources: Sequence[str]) -> int:
    """Partitions for sorting a dataset read from the Parquet ``sources`` (files or folders):
    one per :data:`SORT_PARTITION_BYTES` of their size on storage, 1 to
    :data:`MAX_SORT_PARTITIONS`."""
    return _partitions(sources_bytes(sources))


def _partitions(total: int) -> int:
    return max(1, min(MAX_SORT_PARTITIONS, -(-total // SORT_PARTITION_BYTES)))


def write_file(ds: ray.data.Dataset | None, uri: str, schema: pa.Schema,
               extra: pa.Table | None = None, sort: Sequence[str] = (),
               sources: Sequence[str] = ()) -> int:
    """Stream ``ds`` (sorted by ``sort`` when given) and then ``extra`` into ONE Parquet file
    ``uri`` of ``schema``; returns its row count.

    ``sources``: the Parquet files/folders ``ds`` reads (or ones at least as big), which size
    the sort (:func:`sort_partitions`).

    The file appears whole or not at all: a local file is written under a temporary name and
    renamed; an object-store upload that fails is discarded, never completed.
    """
    rows = 0
    fs, path = storage.filesystem(uri)
    local = "://" not in uri or uri.startswith("file://")
    target = f"{path}.tmp-{uuid.uuid4().hex[:8]}" if local else path
    if local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fh = fs.open(target, "wb")
    try:
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            if ds is not None:
                for batch in _sorted_batches(ds, list(sort), sources, schema):
                    if batch.num_rows:
                        writer.write_table(batch.select(schema.names).cast(schema))
                        rows += batch.num_rows
            if extra is not None and extra.num_rows:
                writer.write_table(extra.select(schema.names).cast(schema))
                rows += extra.num_rows
    except BaseException:
        if not local and hasattr(fh, "discard"):
            fh.discard()  # an s3 multipart upload aborted, not completed
        else:
            fh.close()
        if local and os.path.exists(target):
            os.remove(target)
        raise
    fh.close()
    if local:
        os.replace(target, path)
    return rows


def _sorted_batches(ds: ray.data.Dataset, sort: list[str], sources: Sequence[str],
                    schema: pa.Schema) -> Iterator[pa.Table]:
    """The batches of ``ds`` in ``sort`` order (as they come when ``sort`` is empty).

    A table whose sources weigh at most :data:`DRIVER_SORT_BYTES` is sorted by the driver:
    Ray Data's sort costs a sampling pass and a shuffle (seconds of scheduling for a few
    thousand rows, four tables per run) to do what one ``sort_by`` does in milliseconds. Bigger
    tables are sorted by Ray Data into partitions sized from the data
    (:func:`sort_partitions`), and stream through the driver one batch at a time.
    """
    if not sort:
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=8192)
        return
    total = sources_bytes(sources)  # listed once: on S3 a listing per source folder
    if total <= DRIVER_SORT_BYTES:
        parts = [b.select(schema.names).cast(schema)
                 for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
        if parts:
            table = pa.concat_tables(parts)
            table = table.sort_by([(c, "ascending") for c in sort])
            for start in range(0, table.num_rows, 8192):  # row groups as the streamed path's
                yield table.slice(start, 8192)
        return
    ds.context.default_hash_shuffle_parallelism = _partitions(total)  # read at run time
    yield from ds.sort(sort).iter_batches(batch_format="pyarrow", batch_size=8192)
