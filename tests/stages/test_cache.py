"""The ingest cache: loose rows compacted into parts, located by fingerprint, gathered into a
run's features store; a crash between compaction's steps loses and duplicates nothing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mmx import schema, storage
from mmx.config import build_config
from mmx.stages import cache as features_cache
from mmx.stages import store


def _row(i: int, n_clips: int = 2) -> pa.Table:
    row = {f.name: None for f in schema.FEATURES}
    row |= {"trailer_id": f"old_{i}", "uri": f"old/{i}.mp4", "fingerprint": f"fp{i:03d}",
            "size_bytes": 10 + i, "status": "ok", "reason": "", "n_clips": n_clips,
            "n_shots": n_clips, "fps": 24.0, "has_audio": False,
            "clip_start": [0, 10], "clip_end": [10, 20],
            "appearance": [float(i)] * (4 * n_clips), "audio": [], "audio_frames": [0, 0]}
    return pa.Table.from_pylist([row], schema=schema.FEATURES)


def _write_loose(cache: str, ids: range) -> None:
    for i in ids:
        storage.write_table(_row(i), features_cache.cached_path(cache, f"fp{i:03d}"))


def test_compact_locate_and_assemble(ray_session, out: str, request) -> None:
    if out.startswith("s3://"):
        request.getfixturevalue("s3_ray")
    cache = storage.join(out, "cache", "features-x")
    _write_loose(cache, range(7))
    assert features_cache.compact(cache, rows_per_file=3) == 7
    assert storage.list_files(cache, ".parquet") == []  # no loose rows left
    parts = storage.list_files(storage.join(cache, features_cache.PARTS), ".parquet")
    assert len(parts) == 1 + 3  # the index and ceil(7 / 3) parts
    where = features_cache.locate(cache)
    assert sorted(where) == [f"fp{i:03d}" for i in range(7)]
    assert len(set(where.values())) == 3

    _write_loose(cache, range(7, 9))  # a later night's rows, still loose
    assert features_cache.locate(cache)["fp008"].endswith("fp008.parquet")
    assert features_cache.compact(cache, rows_per_file=3) == 2
    assert len(set(features_cache.locate(cache).values())) == 4

    # this run's inputs: some cached contents under new names, one part read for two rows
    distinct = pa.table({"trailer_id": ["a", "b", "c"], "uri": ["x/a", "x/b", "x/c"],
                         "fingerprint": ["fp001", "fp002", "fp008"]})
    needed = features_cache.files_for(cache, distinct["fingerprint"])
    assert len(needed) == 2
    cfg = build_config(profile="tiny")
    meta = store.assemble(distinct, cache, storage.join(out, "work", "run", "features.parquet"),
                          cfg)
    assert meta["trailer_id"].to_pylist() == ["a", "b", "c"]
    assert meta["fingerprint"].to_pylist() == ["fp001", "fp002", "fp008"]
    assert meta["uri"].to_pylist() == ["x/a", "x/b", "x/c"]
    table = storage.read_table(storage.join(out, "work", "run", "features.parquet"))
    first = table.filter(pc.equal(table["trailer_id"], "b"))
    assert first["appearance"].to_pylist()[0] == [2.0] * 8  # fp002's features

    with pytest.raises(ValueError, match="not in the features cache"):
        features_cache.files_for(cache, pa.array(["fp999"]))


def test_crash_between_index_and_deletes_duplicates_nothing(ray_session, tmp_path) -> None:
    cache = str(tmp_path / "cache")
    _write_loose(cache, range(4))
    assert features_cache.compact(cache, rows_per_file=10) == 4
    # as if the previous compaction died after writing its index, before deleting loose rows
    _write_loose(cache, range(2))
    _write_loose(cache, range(4, 5))
    assert features_cache.compact(cache, rows_per_file=10) == 1  # only the really new row
    assert storage.list_files(cache, ".parquet") == []
    index = storage.read_table(storage.join(cache, features_cache.PARTS, features_cache.INDEX))
    assert sorted(index["fingerprint"].to_pylist()) == [f"fp{i:03d}" for i in range(5)]


def test_forget_drops_rows_and_nothing_else(ray_session, tmp_path) -> None:
    """--retry-failed: the rows of chosen fingerprints leave the cache (parts rewritten without
    them, loose rows deleted); every other row stays readable, none is indexed twice."""
    cache = str(tmp_path / "cache")
    _write_loose(cache, range(6))
    assert features_cache.compact(cache, rows_per_file=3) == 6
    _write_loose(cache, range(6, 8))  # loose
    failed = _row(8).set_column(4, "status", pa.array(["failed"]))
    storage.write_table(failed, features_cache.cached_path(cache, "fp008"))
    assert features_cache.statuses(cache, ["fp000", "fp008", "fp999"]) == {
        "fp000": "ok", "fp008": "failed"}

    assert features_cache.forget(cache, ["fp001", "fp007", "fp999"]) == 2
    where = features_cache.locate(cache)
    assert sorted(where) == ["fp000", "fp002", "fp003", "fp004", "fp005", "fp006", "fp008"]
    rows = storage.read_tables(sorted(set(where.values())), schema.FEATURES)
    assert sorted(rows["fingerprint"].to_pylist()) == sorted(where)  # fp001's old part is gone
    # a part that held only forgotten rows disappears
    assert features_cache.forget(cache, ["fp003", "fp004", "fp005"]) == 3
    parts = storage.list_files(storage.join(cache, features_cache.PARTS), ".parquet")
    assert len(parts) == 1 + 1  # the index and the part of fp000 and fp002
