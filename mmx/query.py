"""Read a published snapshot: its tables, DuckDB SQL over them, and nearest trailers.

Owns the analysts' Python entry point (DESIGN §4): :class:`Snapshot` opens the latest or a named
snapshot, local or s3://; ``table``/``sql`` read it; ``similar`` finds the trailers nearest one
in the archive; ``similar_to_video`` runs the real ingest core (decode once, shots, CPU experts,
the appearance CNN) and the snapshot's own model on a video that is NOT in the archive, in this
process (no Ray), and searches the snapshot's sharded FAISS index.

Nothing is read whole unless asked for. ``table`` reads only the columns and row groups a
query needs (pyarrow projection and filter pushdown); ``sql`` gives DuckDB views over the
snapshot's Parquet files, so DuckDB itself skips the columns and row groups a query does not
touch. Works on local folders and s3:// alike: on an object store DuckDB reads through mmx's
own fsspec filesystem (``register_filesystem``), so no DuckDB extension has to be downloaded.
Importing this module (and running ``sql``, ``similar``, ``subgenres``) needs neither torch
nor Ray: the slim ``pip install mmx[query]``; ``similar-video`` needs the full install.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmx import schema, storage
from mmx.config import DEFAULT_WORKDIR, RunConfig, config_from_dict
from mmx.index.shards import IndexIntegrityError
from mmx.layout import OutputLayout

QUERY_META_KEY = b"mmx.query"  # schema metadata of similar_to_video's table: the query video


class SnapshotError(LookupError):
    """No snapshot where one was expected, or a query about something it does not hold."""


class SnapshotIntegrityError(SnapshotError, IndexIntegrityError):
    """The snapshot's FAISS index is missing, incomplete or fails its checksums.

    Both a :class:`SnapshotError` (what the ``mmx`` command reports) and an
    :class:`~mmx.index.shards.IndexIntegrityError` (what the index raised).
    """


class VideoQueryError(SnapshotError):
    """A query video could not be analysed (unreadable, too short, too long…)."""


@dataclass
class VideoEmbedding:
    """What the snapshot's model makes of one video outside the archive.

    ``embedding`` (D,) float32 fine-grained trailer embedding (the index's space);
    ``genre_scores`` (G,) float32 sigmoid scores in vocabulary order; ``predicted_genres`` those
    at or above the run's threshold; ``n_clips`` kept shots; ``timings_s`` seconds per step.
    """

    path: str
    n_clips: int
    duration_s: float
    embedding: np.ndarray
    genre_scores: np.ndarray
    predicted_genres: list[str]
    timings_s: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (no vectors)."""
        return {
            "path": self.path,
            "n_clips": self.n_clips,
            "duration_s": round(self.duration_s, 3),
            "predicted_genres": self.predicted_genres,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }


@dataclass
class Snapshot:
    """One complete snapshot under ``<out>/snapshots/<name>/``."""

    uri: str
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)  # index, models, CNN

    @classmethod
    def open(cls, out: str | None = None, name: str | None = None) -> Snapshot:
        """The snapshot LATEST names (or ``name``) under ``out`` (default ``.mmx/out``)."""
        out = out or str((Path(DEFAULT_WORKDIR) / "out").resolve())
        if name:
            uri = OutputLayout(out).snapshot(name)
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

    def table(
        self, name: str, columns: list[str] | None = None, filters: Any = None
    ) -> pa.Table:
        """One of the snapshot's tables (trailers, scenes, subgenres, neighbours).

        ``columns``: read only these; ``filters``: a pyarrow expression (e.g.
        ``pc.field("trailer_id").isin(ids)``) or DNF list, applied while reading so row groups
        whose statistics rule them out are skipped. Vector columns are ``float32[D]``
        (``list<float32>`` in snapshots published before issue 14; :func:`mmx.schema.matrix`
        reads both).
        """
        fs, path = storage.filesystem(self._file(name))
        try:
            return pq.read_table(path, filesystem=fs, columns=columns, filters=filters)
        except (pa.ArrowInvalid, KeyError, TypeError) as err:
            raise SnapshotError(f"{name}: {err}") from err

    def table_schema(self, name: str) -> pa.Schema:
        """The Arrow schema of one of the snapshot's tables (read from its footer only)."""
        fs, path = storage.filesystem(self._file(name))
        return pq.read_schema(path, filesystem=fs)

    def _file(self, name: str) -> str:
        if name not in schema.TABLES:
            raise SnapshotError(f"unknown table {name!r}; tables: {sorted(schema.TABLES)}")
        return storage.join(self.uri, f"{name}.parquet")

    def genres(self) -> list[str]:
        return list(storage.read_json(storage.join(self.uri, "genres.json")))

    def metrics(self) -> dict:
        return dict(storage.read_json(storage.join(self.uri, "metrics.json")))

    def config(self) -> RunConfig:
        """The resolved run configuration the snapshot was built with (``config.json``)."""
        if "config" not in self._cache:
            values = storage.read_json(storage.join(self.uri, "config.json"))
            self._cache["config"] = config_from_dict(values)
        return self._cache["config"]

    @property
    def out(self) -> str:
        """The output root the snapshot lives under (``<out>/snapshots/<name>``)."""
        return self.uri.rstrip("/").rsplit("/", 2)[0]

    def model_uri(self, phase: str) -> str:
        """Checkpoint folder of the snapshot's ``fine`` or ``coarse`` model: the folder named
        by ``model.json`` (an incremental snapshot reuses an earlier run's model), else
        ``<out>/models/<snapshot name>``."""
        pointer = storage.join(self.uri, "model.json")
        if storage.exists(pointer):
            return storage.join(storage.read_json(pointer)["model_dir"], phase)
        return storage.join(OutputLayout(self.out).model_dir(self.name), phase)

    def sql(self, query: str) -> pa.Table:
        """Run DuckDB SQL with the tables available by name (``FROM trailers``…).

        Each table is a view over its Parquet file, so DuckDB reads only the columns and row
        groups the query needs; vector columns are ``FLOAT[D]`` (``array_cosine_similarity``).
        """
        import duckdb

        # the query sees the snapshot's tables and the files under its output root (README
        # recipe 6 reads every snapshot); nothing else: no other file, no network, no
        # extension installs, and the query cannot turn any of that back on
        con = duckdb.connect(config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        })
        try:
            fs, root = storage.filesystem(self.out)
            if "file" in fs.protocol:
                allowed = str(Path(root).resolve())
                views = {n: str(Path(storage.filesystem(self._file(n))[1]).resolve())
                         for n in schema.TABLES}
            else:  # DuckDB reads the object store through mmx's fsspec filesystem
                con.register_filesystem(_scan_filesystem(fs))
                allowed = self.out.rstrip("/")
                views = {n: self._file(n) for n in schema.TABLES}
            con.execute(f"SET allowed_directories = [{_sql_str(allowed + '/')}]")
            con.execute("SET enable_external_access = false")
            for name, path in views.items():
                con.execute(f"CREATE VIEW {name} AS {_scan(path, self.table_schema(name))}")
            con.execute("SET lock_configuration = true")
            rel = con.sql(query)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as err:
            raise SnapshotError(f"SQL error: {err}") from err
        finally:
            con.close()

    def similar(self, trailer_id: str, k: int = 10) -> pa.Table:
        """The ``k`` trailers nearest ``trailer_id`` by cosine similarity of embeddings.

        Reads the one row of ``trailer_id`` (its embedding only) and the index, then the
        genres of the ``k`` results. Columns: rank int32 (1 = nearest), trailer_id, score
        float32 (cosine), genres.
        """
        row = self.table("trailers", columns=["trailer_id", "status", "reason", "embedding"],
                         filters=pc.field("trailer_id") == trailer_id)
        if row.num_rows == 0:
            raise SnapshotError(f"unknown trailer {trailer_id!r}")
        if row["embedding"].null_count:
            status = row["status"][0].as_py()
            reason = row["reason"][0].as_py()
            raise SnapshotError(f"{trailer_id} has no embedding ({status}: {reason})")
        query = schema.matrix(row["embedding"].slice(0, 1))[0]  # (D,)
        return self.similar_to_embedding(query, k, exclude=trailer_id)

    def similar_to_embedding(
        self, embedding: np.ndarray, k: int = 10, *, exclude: str | None = None
    ) -> pa.Table:
        """The ``k`` trailers nearest a (D,) float32 embedding; ``exclude`` drops one id."""
        if k < 1:
            raise SnapshotError(f"k must be >= 1, got {k}")
        query = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        scores, ids = self.search(query, k + (1 if exclude else 0))
        keep = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i and i != exclude]
        keep = keep[:k]
        trailers = self.table("trailers", columns=["trailer_id", "genres"],
                              filters=pc.field("trailer_id").isin([i for i, _ in keep]))
        genres = dict(
            zip(trailers["trailer_id"].to_pylist(), trailers["genres"].to_pylist(), strict=True)
        )
        return pa.table(
            {
                "rank": pa.array(range(1, len(keep) + 1), pa.int32()),
                "trailer_id": pa.array([i for i, _ in keep], pa.string()),
                "score": pa.array([float(s) for _, s in keep], pa.float32()),
                "genres": pa.array([genres.get(i) or [] for i, _ in keep], pa.list_(pa.string())),
            }
        )

    def embed_video(self, path: str) -> VideoEmbedding:
        """Run the snapshot's ingest and model on one local video file, in this process.

        Decode once + shots + CPU experts (:func:`mmx.ingest.analyse_trailer` with the run's
        video/shots/experts config), the image experts that run in a pool (the appearance CNN)
        on the sampled frames (mean over the frames of each clip), then the snapshot's fine and
        coarse models (per-title experts have no input here: they are masked). Raises
        :class:`VideoQueryError` when the video cannot be indexed (same rules as the job).
        """
        from mmx.errors import TrailerError
        from mmx.ingest import analyse_trailer
        from mmx.train.loop import predict

        cfg = self.config()
        if not Path(path).is_file():
            raise VideoQueryError(f"{path}: no such file")
        t0 = time.perf_counter()
        try:
            tf = analyse_trailer(path, cfg.video, cfg.shots, cfg.experts)
        except TrailerError as err:
            raise VideoQueryError(f"{path}: {err.reason}") from err
        timings = {"analyse": time.perf_counter() - t0}

        t = time.perf_counter()
        pooled = self._pool_experts(tf.frames)  # name → (C, D)
        timings["appearance"] = time.perf_counter() - t

        t = time.perf_counter()
        fine, coarse, genres = self._models()
        data = _trailer_set(_features_row(path, tf, pooled, cfg.experts.names), fine, genres)
        batch = cfg.resources.embed_batch
        pred = predict(fine, data, batch, coarse_model=coarse)
        timings["embed"] = time.perf_counter() - t
        scores = pred.scores[0].astype(np.float32)  # (G,)
        threshold = cfg.train.threshold
        return VideoEmbedding(
            path=str(path),
            n_clips=int(tf.clips.shape[0]),
            duration_s=float(tf.info.duration_s),
            embedding=pred.embeddings[0].astype(np.float32),  # (D,)
            genre_scores=scores,
            predicted_genres=[g for g, v in zip(genres, scores, strict=True) if v >= threshold],
            timings_s=timings,
        )

    def similar_to_video(self, path: str, k: int = 10) -> pa.Table:
        """The ``k`` archive trailers nearest a video that is not in the archive.

        Same columns as :meth:`similar`; the query's own description (clips, predicted
        genres, timings) is in the schema metadata under ``mmx.query`` (see
        :func:`query_of`).
        """
        video = self.embed_video(path)
        table = self.similar_to_embedding(video.embedding, k)
        return table.replace_schema_metadata({QUERY_META_KEY: json.dumps(video.summary())})

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores (Q, k) float32, trailer ids (Q, k) object) for (Q, D) float32
        query embeddings, over the snapshot's sharded index (loaded and checksum-verified once
        per :class:`Snapshot`; a corrupt index raises :class:`SnapshotIntegrityError`)."""
        return self.index().search(queries, k)

    def index(self) -> Any:
        """The snapshot's :class:`~mmx.index.shards.ShardedIndex`, verified on first use."""
        if "index" not in self._cache:
            from mmx.index.shards import ShardedIndex

            fs, path = storage.filesystem(storage.join(self.uri, "faiss"))
            try:
                self._cache["index"] = ShardedIndex.load(
                    path, fs=fs, nprobe=self.config().index.nprobe
                )
            except IndexIntegrityError as err:
                raise SnapshotIntegrityError(
                    f"snapshot {self.name}: refusing its FAISS index: {err}"
                ) from err
        return self._cache["index"]

    def subgenres(self, centroids: bool = False) -> pa.Table:
        """The sub-genre clusters; the ``centroid`` vectors only when asked (they are long)."""
        names = self.table_schema("subgenres").names
        return self.table("subgenres", None if centroids else [n for n in names
                                                                 if n != "centroid"])

    # ------------------------------------------------------------------ models (cached)

    def _models(self) -> tuple[Any, Any, list[str]]:
        """(fine model, coarse model, genre vocabulary), loaded once."""
        if "models" not in self._cache:
            from mmx.train.loop import load_model

            try:
                fine, meta = load_model(self.model_uri("fine"))
                coarse, _ = load_model(self.model_uri("coarse"))
            except FileNotFoundError as err:
                raise SnapshotError(f"snapshot {self.name}: cannot load its model ({err})") from err
            self._cache["models"] = (fine, coarse, list(meta.get("genres") or self.genres()))
        return self._cache["models"]

    def _pool_experts(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """The run's pool image experts (the appearance CNN) on sampled frames
        (C, F, h, w, 3) uint8: name → (C, dim) float32 (mean over each clip's frames)."""
        from mmx.experts.registry import get_expert, plan
        from mmx.ingest import image_features

        experts = self.config().experts
        out = {}
        for name in plan(experts.names).pool_image:
            if name not in self._cache:
                self._cache[name] = get_expert(name, experts)
            expert = self._cache[name]
            if frames.shape[0] * frames.shape[1] == 0:
                out[name] = np.zeros((frames.shape[0], expert.dim), np.float32)
            else:
                out[name] = image_features(expert, frames, self.config().resources.appearance_batch)
        return out


def _scan(path: str, table: pa.Schema) -> str:
    """DuckDB ``SELECT`` over one Parquet file, its ``float32[D]`` columns typed ``FLOAT[D]``
    (DuckDB reads a Parquet fixed-size list back as a variable ``FLOAT[]``)."""
    casts = [f"CAST({f.name} AS FLOAT[{f.type.list_size}]) AS {f.name}" for f in table
             if pa.types.is_fixed_size_list(f.type)]
    replace = f" REPLACE ({', '.join(casts)})" if casts else ""
    return f"SELECT *{replace} FROM read_parquet({_sql_str(path)})"


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan_filesystem(fs: Any) -> Any:
    """A copy of the object-store filesystem ``fs`` for DuckDB: no read-ahead cache, so a
    query that needs one column chunk fetches that chunk, not megabytes around it."""
    return type(fs)(**{**fs.storage_options, "default_cache_type": "none"})


def query_of(table: pa.Table) -> dict[str, Any]:
    """The query video's description stored by :meth:`Snapshot.similar_to_video`."""
    raw = (table.schema.metadata or {}).get(QUERY_META_KEY)
    return json.loads(raw) if raw else {}


def similar_to_video(
    path: str, k: int = 10, *, out: str | None = None, snapshot: str | None = None
) -> pa.Table:
    """:meth:`Snapshot.similar_to_video` on the latest (or named) snapshot under ``out``."""
    return Snapshot.open(out, snapshot).similar_to_video(path, k)


def _features_row(
    path: str, tf: Any, pooled: dict[str, np.ndarray], names: Sequence[str]
) -> pa.Table:
    """A one-row ``features`` table (schema.features_schema of the run's experts) for an
    analysed video, built the way the ingest stage builds its rows (per-clip arrays flattened
    row-major); ``pooled``: the pool image experts' (C, D) vectors."""
    from mmx.experts.registry import plan

    def flat(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else np.ascontiguousarray(values, np.float32).reshape(-1)

    table_schema = schema.features_schema(plan(names).shot)
    row = {name: None for name in table_schema.names}
    row.update(
        trailer_id=Path(path).stem,
        uri=str(path),
        status="ok",
        reason="",
        fps=float(tf.info.fps),
        n_frames=int(tf.info.n_frames),
        duration_s=float(tf.info.duration_s),
        has_audio=bool(tf.has_audio),
        n_shots=len(tf.shots),
        n_clips=int(tf.clips.shape[0]),
        clip_start=tf.clips[:, 0].astype(np.int64),
        clip_end=tf.clips[:, 1].astype(np.int64),
        **{name: flat(v) for name, v in {**tf.features, **pooled}.items()},  # (C × D)
        **{plan(names).audio or "audio": flat(tf.audio)},  # (C × A × Da)
        audio_frames=tf.audio_frames.astype(np.int32),
    )
    return pa.Table.from_pylist([row], schema=table_schema)


def _trailer_set(features: pa.Table, model: Any, genres: list[str]) -> Any:
    """The model's input for ``features`` rows, with the expert order the model was built
    with (a video missing an expert still lines up; its mask is False)."""
    from mmx.train.data import TrailerSet, trailer_set_from_table

    data = trailer_set_from_table(features, {}, genres)
    return TrailerSet(data.trailers, model.expert_dims, model.audio_dim, genres)
