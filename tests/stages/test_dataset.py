"""Ray Data over mmx's storage: one sorted Parquet file per published table, the sort sized
from the data (not Ray's default of 200 partitions whatever the size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmx.stages import dataset

SCHEMA = pa.schema([("trailer_id", pa.string()), ("rank", pa.int32()), ("x", pa.float32())])


def _parts(folder: Path, n_parts: int, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for p in range(n_parts):
        ids = [f"t{rng.integers(10**6):07d}" for _ in range(rows)]
        pq.write_table(pa.table({"trailer_id": ids,
                                 "rank": pa.array(rng.integers(0, 5, rows), pa.int32()),
                                 "x": pa.array(rng.random(rows), pa.float32())}),
                       folder / f"part-{p}.parquet")


def test_sort_partitions_follow_the_size_of_the_sources(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _parts(tmp_path / "a", 3, 200)
    pq.write_table(pa.table({"v": np.random.default_rng(2).random(20_000)}), tmp_path / "b.parquet")
    size = sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
    assert dataset.sort_partitions([str(tmp_path / "a")]) == 1  # a small table: one partition
    assert dataset.sort_partitions([]) == 1
    assert dataset.sort_partitions([str(tmp_path / "missing")]) == 1
    monkeypatch.setattr(dataset, "SORT_PARTITION_BYTES", size // 4)
    assert dataset.sort_partitions([str(tmp_path / "a")]) == 5  # ceil(size / (size // 4))
    both = dataset.sort_partitions([str(tmp_path / "a"), str(tmp_path / "b.parquet")])
    assert both > 5  # a file counts too
    monkeypatch.setattr(dataset, "SORT_PARTITION_BYTES", 1)
    assert dataset.sort_partitions([str(tmp_path / "a")]) == dataset.MAX_SORT_PARTITIONS


@pytest.mark.parametrize("partition_bytes", [dataset.SORT_PARTITION_BYTES, 2_000])
def test_write_file_sorts_across_partitions(ray_session, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            partition_bytes: int) -> None:
    """A small table (sorted by the driver) or several partitions (a tiny partition size,
    sorted by Ray Data): the file is sorted either way."""
    if partition_bytes == 2_000:  # Ray Data sorts, not the driver
        monkeypatch.setattr(dataset, "DRIVER_SORT_BYTES", 0)
    _parts(tmp_path / "in", 4, 300, seed=1)
    monkeypatch.setattr(dataset, "SORT_PARTITION_BYTES", partition_bytes)
    src = str(tmp_path / "in")
    assert (dataset.sort_partitions([src]) > 1) == (partition_bytes == 2_000)
    out = str(tmp_path / "out.parquet")
    n = dataset.write_file(dataset.read(src), out, SCHEMA, sort=["trailer_id", "rank"],
                           sources=[src])
    table = pq.read_table(out)
    assert n == table.num_rows == 1200
    keys = list(zip(table["trailer_id"].to_pylist(), table["rank"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    expected = pq.read_table(src).sort_by([("trailer_id", "ascending"), ("rank", "ascending")])
    assert sorted(table["x"].to_pylist()) == sorted(expected["x"].to_pylist())
