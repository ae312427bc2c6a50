"""Ray Data ingest: fingerprint → decode + shots + CPU experts (tasks) → appearance CNN
(actor pool, shots batched across trailers) → one ``features`` row per input file.

Each trailer is decoded once inside the task that consumes its frames; only a few small
frames per shot travel on to the CNN actors, never a decoded video (PITFALLS).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from mmx import archive, schema, storage
from mmx.config import RunConfig
from mmx.errors import TrailerError

log = logging.getLogger(__name__)

_FRAME_COLS = ("frames", "frames_shape")


def fingerprint_inputs(files: list[archive.InputFile], cfg: RunConfig) -> pa.Table:
    """(trailer_id, uri, size_bytes, fingerprint) for every input, hashed in parallel tasks."""
    if not files:
        return pa.table({"trailer_id": [], "uri": [], "size_bytes": [], "fingerprint": []})
    items = [{"trailer_id": f.trailer_id, "uri": f.uri, "size_bytes": f.size_bytes} for f in files]
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 64))
    ds = ds.map(_fingerprint_row, num_cpus=0.5)
    rows = ds.take_all()
    rows.sort(key=lambda r: r["trailer_id"])
    return pa.Table.from_pylist(rows)


def _fingerprint_row(row: dict[str, Any]) -> dict[str, Any]:
    try:
        row["fingerprint"] = archive.fingerprint(row["uri"])
    except OSError as err:  # unreadable: decoding will report it as failed
        row["fingerprint"] = f"unreadable-{type(err).__name__}"
    return row


def extract_features(inputs: pa.Table, cfg: RunConfig, cache: str) -> pa.Table:
    """Run decode+shots+CPU experts and the appearance actor pool over ``inputs``.

    ``inputs`` has trailer_id, uri, size_bytes and fingerprint, one row per distinct content.
    Every result (ok, excluded or failed: the same bytes give the same result) is written to
    ``<cache>/<fingerprint>.parquet`` as soon as its batch finishes, so a killed run loses at
    most the trailers in flight and the rerun skips what is cached. Returns one small row per
    input (trailer_id, fingerprint, status, reason).
    """
    res = cfg.resources
    ds = ray.data.from_arrow(inputs)
    ds = ds.repartition(max(1, inputs.num_rows))  # one trailer per block: spread decode tasks
    ds = ds.map_batches(
        _analyse_batch,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"cfg": cfg},
        num_cpus=res.decode_cpus,
        compute=ray.data.TaskPoolStrategy(size=res.decode_concurrency),
    )
    ds = ds.map_batches(
        AppearanceActor,
        batch_size=res.appearance_trailers,
        batch_format="pyarrow",
        fn_constructor_kwargs={"cfg": cfg},
        compute=ray.data.ActorPoolStrategy(
            min_size=res.appearance_pool_min, max_size=res.appearance_pool_max
        ),
        num_cpus=res.appearance_cpus,
        num_gpus=res.appearance_gpus,
    )
    ds = ds.map_batches(
        _write_cache, batch_size=None, batch_format="pyarrow", fn_kwargs={"cache": cache},
        num_cpus=0.25,
    )
    parts = ray.get(ds.to_arrow_refs())
    return pa.concat_tables(parts) if parts else pa.Table.from_pylist([], schema=_STATUS)


_STATUS = pa.schema(
    [("trailer_id", pa.string()), ("fingerprint", pa.string()), ("status", pa.string()),
     ("reason", pa.string())]
)


def cached_path(cache: str, fingerprint: str) -> str:
    """Where the features row of content ``fingerprint`` is cached."""
    return storage.join(cache, f"{fingerprint}.parquet")


def _write_cache(batch: pa.Table, cache: str) -> pa.Table:
    """Write each row to its own cache file (atomic) keyed by content; return status rows."""
    for i, fingerprint in enumerate(batch["fingerprint"].to_pylist()):
        storage.write_table(batch.slice(i, 1), cached_path(cache, fingerprint))
    return batch.select(_STATUS.names).cast(_STATUS)


def _analyse_batch(batch: pa.Table, cfg: RunConfig) -> pa.Table:
    """One trailer (a 1-row table) → its features row plus the frames the CNN needs."""
    rows = [_analyse(row, cfg) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=_with_frames(schema.FEATURES))


def _with_frames(base: pa.Schema) -> pa.Schema:
    return base.append(pa.field("frames", pa.binary())).append(
        pa.field("frames_shape", pa.list_(pa.int64()))
    )


def _analyse(row: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    from mmx.ingest import analyse_trailer

    t0 = time.perf_counter()
    out = {name: None for name in schema.FEATURES.names}
    out.update(
        trailer_id=row["trailer_id"],
        uri=row["uri"],
        fingerprint=row["fingerprint"],
        size_bytes=row["size_bytes"],
        frames=b"",
        frames_shape=[],
    )
    try:
        with _local_copy(row["uri"]) as path:
            tf = analyse_trailer(path, cfg.video, cfg.shots, cfg.experts)
    except TrailerError as err:
        out.update(status=err.status, reason=err.reason.removeprefix(f"{err.status}: "))
        return out
    except Exception as err:
        log.exception("analysing %s failed", row["uri"])
        out.update(status="failed", reason=f"{type(err).__name__}: {err}"[:500])
        return out
    info = tf.info
    n_clips = int(tf.clips.shape[0])
    out.update(
        status="ok",
        reason="",
        fps=float(info.fps),
        n_frames=int(info.n_frames),
        duration_s=float(info.duration_s),
        has_audio=bool(tf.has_audio),
        n_shots=len(tf.shots),
        n_clips=n_clips,
        clip_start=tf.clips[:, 0].astype(np.int64),
        clip_end=tf.clips[:, 1].astype(np.int64),
        scene=_flat(tf.features.get("scene")),
        motion=_flat(tf.features.get("motion")),
        audio=_flat(tf.audio),
        audio_frames=tf.audio_frames.astype(np.int32),
        decode_s=time.perf_counter() - t0,
        frames=np.ascontiguousarray(tf.frames, dtype=np.uint8).tobytes(),
        frames_shape=list(tf.frames.shape),
    )
    return out


def _flat(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else np.ascontiguousarray(values, np.float32).reshape(-1)


class _local_copy:
    """Context manager giving a local path for ``uri`` (decord needs a file on disk)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.tmp: str | None = None

    def __enter__(self) -> str:
        if "://" not in self.uri or self.uri.startswith("file://"):
            return self.uri.removeprefix("file://")
        fs, path = storage.filesystem(self.uri)
        self.tmp = tempfile.mkdtemp(prefix="mmx-")
        local = os.path.join(self.tmp, "input" + os.path.splitext(path)[1])
        fs.get(path, local)
        return local

    def __exit__(self, *exc: object) -> None:
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class AppearanceActor:
    """Holds the appearance CNN (loaded once); embeds the sampled frames of a batch of
    trailers in CNN batches across trailers and drops the frames."""

    def __init__(self, cfg: RunConfig) -> None:
        import torch

        from mmx.experts.registry import get_expert

        threads = max(1, int(cfg.resources.appearance_cpus))
        torch.set_num_threads(threads)
        # A GPU actor (appearance_gpus > 0) runs the CNN on its GPU; its forward batch then
        # defaults to 64 frames, on CPU to 4 (small batches stay in cache, see AppearanceExpert).
        gpu = cfg.resources.appearance_gpus > 0 and torch.cuda.is_available()
        self.expert = get_expert("appearance", cfg.experts, device="cuda" if gpu else "cpu")
        self.batch = cfg.resources.appearance_batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        shapes = batch.column("frames_shape").to_pylist()
        blobs = batch.column("frames").to_pylist()
        stacks = [
            np.frombuffer(b, np.uint8).reshape(s) for b, s in zip(blobs, shapes, strict=True) if s
        ]
        vectors: list[np.ndarray | None] = []
        if stacks:
            # (C_i, F, h, w, 3) per trailer → one (ΣC_i·F, h, w, 3) run through the CNN.
            frames = np.concatenate([s.reshape(-1, *s.shape[2:]) for s in stacks])
            parts = [
                self.expert(frames[i : i + self.batch]) for i in range(0, len(frames), self.batch)
            ]
            emb = np.concatenate(parts)  # (ΣC_i·F, dim)
        it = 0
        for s in shapes:
            if not s:
                vectors.append(None)
                continue
            c, f = s[0], s[1]
            # mean over the F frames of each clip: (C·F, dim) → (C, F, dim) → (C, dim)
            v = emb[it : it + c * f].reshape(c, f, -1).mean(axis=1)
            vectors.append(v.astype(np.float32).reshape(-1))
            it += c * f
        batch = batch.drop_columns(list(_FRAME_COLS))
        col = pa.array(vectors, type=pa.list_(pa.float32()))
        batch = batch.set_column(batch.schema.get_field_index("appearance"), "appearance", col)
        return schema.conform(batch, schema.FEATURES)
