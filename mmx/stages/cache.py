"""The ingest cache: features rows keyed by content fingerprint, compacted into parts.

Ingest writes each trailer's row as soon as it is featurised, one small file per trailer
(``<cache>/<fingerprint>.parquet``): a killed run keeps every trailer it finished. After ingest
:func:`compact` moves those loose rows into parts of many rows each
(``<cache>/parts/<id>.parquet``, ``resources.store_rows_per_file`` rows) and records which part
holds which fingerprint in one index file (``<cache>/parts/_index.parquet``), so that the cache
of a large archive is a few hundred objects rather than one per trailer, and a run reads only
the parts that hold its trailers (:func:`locate`).

Crash safety: a part is written (atomically) before the index names it, and loose rows are
deleted only after the index is written. A crash in between leaves loose rows that the next
compaction moves again (those already indexed are just deleted) and at worst a part no index
names, which nothing reads.
"""

from __future__ import annotations

import logging
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from mmx import schema, storage

log = logging.getLogger(__name__)

PARTS = "parts"
INDEX = "_index.parquet"
INDEX_SCHEMA = pa.schema([("fingerprint", pa.string()), ("part", pa.string())])


def cached_path(cache: str, fingerprint: str) -> str:
    """Where ingest writes the (loose) features row of content ``fingerprint``."""
    return storage.join(cache, f"{fingerprint}.parquet")


def _index_uri(cache: str) -> str:
    return storage.join(cache, PARTS, INDEX)


def _read_index(cache: str) -> pa.Table:
    uri = _index_uri(cache)
    if not storage.exists(uri):
        return INDEX_SCHEMA.empty_table()
    return storage.read_table(uri).cast(INDEX_SCHEMA)


def _loose(cache: str) -> dict[str, str]:
    """fingerprint → URI of each loose row."""
    return {u.rsplit("/", 1)[-1].removesuffix(".parquet"): u
            for u in storage.list_files(cache, ".parquet")}


def locate(cache: str) -> dict[str, str]:
    """fingerprint → URI of the file holding its cached row (a part, or a loose row)."""
    index = _read_index(cache)
    parts = storage.join(cache, PARTS)
    where = {fp: storage.join(parts, part) for fp, part in zip(
        index["fingerprint"].to_pylist(), index["part"].to_pylist(), strict=True)}
    return where | _loose(cache)


@ray.remote(num_cpus=0.5)
def _write_part(paths: list[str], part: str, table_schema: pa.Schema) -> None:
    """Concatenate the loose rows ``paths`` into the part file ``part``."""
    storage.write_table(storage.read_tables(paths, table_schema), part)


def compact(cache: str, rows_per_file: int, table_schema: pa.Schema = schema.FEATURES) -> int:
    """Move the loose rows of ``cache`` into parts of ``rows_per_file`` rows (in Ray tasks);
    return how many rows were moved. ``table_schema``: the run's features schema (the built-in
    one plus a column per further expert, :func:`mmx.stages.ingest.features_schema`)."""
    loose = _loose(cache)
    if not loose:
        return 0
    index = _read_index(cache)
    indexed = set(index["fingerprint"].to_pylist())
    stale = [u for fp, u in loose.items() if fp in indexed]  # a crashed compaction's leftovers
    todo = sorted(fp for fp in loose if fp not in indexed)
    step = max(1, rows_per_file)
    groups = [todo[i:i + step] for i in range(0, len(todo), step)]
    names = [f"{uuid.uuid4().hex}.parquet" for _ in groups]
    refs = [_write_part.remote([loose[fp] for fp in group], storage.join(cache, PARTS, name),
                               table_schema)
            for group, name in zip(groups, names, strict=True)]
    ray.get(refs)
    # a loose row's file is named by its fingerprint: the groups say what each part holds
    added = pa.table({
        "fingerprint": pa.array(todo, pa.string()),
        "part": pa.array(np.repeat(names, [len(g) for g in groups]), pa.string()),
    })
    storage.write_table(pa.concat_tables([index, added]), _index_uri(cache))
    doomed = [loose[fp] for fp in todo] + stale
    fs, _ = storage.filesystem(cache)
    for i in range(0, len(doomed), 1000):
        fs.rm([storage.filesystem(u)[1] for u in doomed[i:i + 1000]])
    log.info("features cache: %d rows compacted into %d parts", len(todo), len(groups))
    return len(todo)


def statuses(cache: str, fingerprints: list[str]) -> dict[str, str]:
    """fingerprint → cached status of those of ``fingerprints`` that are cached (reads only the
    status column of the files holding them)."""
    where = locate(cache)
    wanted = {fp for fp in fingerprints if fp in where}
    found: dict[str, str] = {}
    for uri in sorted({where[fp] for fp in wanted}):
        t = storage.read_table(uri, ["fingerprint", "status"])
        found |= {fp: st for fp, st in zip(t["fingerprint"].to_pylist(),
                                           t["status"].to_pylist(), strict=True) if fp in wanted}
    return found


def forget(cache: str, fingerprints: list[str]) -> int:
    """Drop the cached rows of ``fingerprints`` (their next run decodes them again); return how
    many were cached. The parts holding them are rewritten without them under new names, the
    index written, and only then the old parts deleted (a crash leaves at worst an unnamed
    part, never a row the index names twice)."""
    doomed = set(fingerprints)
    loose = [u for fp, u in _loose(cache).items() if fp in doomed]
    index = _read_index(cache)
    hit = pc.is_in(index["fingerprint"], value_set=pa.array(sorted(doomed), pa.string()))
    old_parts = sorted(set(index.filter(hit)["part"].to_pylist()))
    renamed: dict[str, str] = {}
    for part in old_parts:
        rows = storage.read_table(storage.join(cache, PARTS, part))
        rows = rows.filter(pc.invert(pc.is_in(rows["fingerprint"],
                                               value_set=pa.array(sorted(doomed), pa.string()))))
        if rows.num_rows:
            renamed[part] = f"{uuid.uuid4().hex}.parquet"
            storage.write_table(rows, storage.join(cache, PARTS, renamed[part]))
    if old_parts:
        kept = index.filter(pc.invert(hit))
        parts = [renamed.get(p, p) for p in kept["part"].to_pylist()]
        storage.write_table(kept.set_column(1, "part", pa.array(parts, pa.string())),
                            _index_uri(cache))
    fs, _ = storage.filesystem(cache)
    gone = loose + [storage.join(cache, PARTS, p) for p in old_parts]
    if gone:
        fs.rm([storage.filesystem(u)[1] for u in gone])
    n = len({u.rsplit("/", 1)[-1].removesuffix(".parquet") for u in loose}
            | set(index.filter(hit)["fingerprint"].to_pylist()))
    log.info("features cache: forgot %d rows (%d parts rewritten)", n, len(old_parts))
    return n


def files_for(cache: str, fingerprints: pa.Array | pa.ChunkedArray) -> list[str]:
    """The files (parts or loose rows) holding the rows of ``fingerprints``, all cached."""
    where = locate(cache)
    missing = [fp for fp in pc.unique(fingerprints).to_pylist() if fp not in where]
    if missing:
        raise ValueError(f"{len(missing)} fingerprints are not in the features cache {cache}, "
                         f"e.g. {missing[0]}")
    return sorted({where[fp] for fp in fingerprints.to_pylist()})
