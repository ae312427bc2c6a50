"""Read a published snapshot: its tables, DuckDB SQL over them, and nearest trailers.

Works on local folders and s3:// alike: tables are read through fsspec/pyarrow and handed to
DuckDB as Arrow tables, so no DuckDB extension has to be downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmx import schema, storage
from mmx.config import DEFAULT_WORKDIR


class SnapshotError(LookupError):
    """No snapshot where one was expected, or a query about something it does not hold."""


@dataclass
class Snapshot:
    """One complete snapshot under ``<out>/snapshots/<name>/``."""

    uri: str
    _tables: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, out: str | None = None, name: str | None = None) -> Snapshot:
        """The snapshot LATEST names (or ``name``) under ``out`` (default ``.mmx/out``)."""
        out = out or str((Path(DEFAULT_WORKDIR) / "out").resolve())
        if name:
            uri = storage.snapshot_uri(out, name)
            if not storage.exists(storage.join(uri, storage.COMPLETE)):
                raise SnapshotError(f"no complete snapshot {name!r} under {out}")
            return cls(uri)
        uri = storage.latest(out)
        if uri is None:
            raise SnapshotError(f"no published snapshot under {out} (run the job first)")
        return cls(uri)

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def table(self, name: str) -> pa.Table:
        """One of the snapshot's tables (trailers, scenes, subgenres, neighbours)."""
        if name not in schema.TABLES:
            raise SnapshotError(f"unknown table {name!r}; tables: {sorted(schema.TABLES)}")
        if name not in self._tables:
            self._tables[name] = storage.read_table(storage.join(self.uri, f"{name}.parquet"))
        return self._tables[name]

    def genres(self) -> list[str]:
        return list(storage.read_json(storage.join(self.uri, "genres.json")))

    def metrics(self) -> dict:
        return dict(storage.read_json(storage.join(self.uri, "metrics.json")))

    def sql(self, query: str) -> pa.Table:
        """Run DuckDB SQL with the tables available by name (``FROM trailers``…)."""
        import duckdb

        con = duckdb.connect()
        try:
            for name in schema.TABLES:
                con.register(name, self.table(name))
            rel = con.sql(query)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as err:
            raise SnapshotError(f"SQL error: {err}") from err
        finally:
            con.close()

    def similar(self, trailer_id: str, k: int = 10) -> pa.Table:
        """The ``k`` trailers nearest ``trailer_id`` by cosine similarity of embeddings."""
        trailers = self.table("trailers")
        row = trailers.filter(pc.equal(trailers["trailer_id"], trailer_id))
        if row.num_rows == 0:
            raise SnapshotError(f"unknown trailer {trailer_id!r}")
        if row["embedding"][0].as_py() is None:
            status = row["status"][0].as_py()
            reason = row["reason"][0].as_py()
            raise SnapshotError(f"{trailer_id} has no embedding ({status}: {reason})")
        query = np.asarray([row["embedding"][0].as_py()], dtype=np.float32)
        scores, ids = self.search(query, k + 1)
        keep = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i and i != trailer_id]
        keep = keep[:k]
        genres = dict(
            zip(trailers["trailer_id"].to_pylist(), trailers["genres"].to_pylist(), strict=True)
        )
        return pa.table(
            {
                "rank": pa.array(range(1, len(keep) + 1), pa.int32()),
                "trailer_id": [i for i, _ in keep],
                "score": pa.array([float(s) for _, s in keep], pa.float32()),
                "genres": [genres.get(i) or [] for i, _ in keep],
            }
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, trailer ids) for (Q, D) float32 query embeddings."""
        from mmx.index.shards import ShardedIndex

        index = ShardedIndex.load(storage.join(self.uri, "faiss"))
        return index.search(queries, k)

    def subgenres(self) -> pa.Table:
        return self.table("subgenres")
