"""Ray Data ingest: fingerprint → decode + shots + CPU experts (tasks) → image experts that
run in a pool, e.g. the appearance CNN (actor pool, shots batched across trailers) → one
``features`` row per input file (:func:`features_schema`: one column per expert of the run,
whatever the registry declares; see :mod:`mmx.experts.registry`).

Each trailer is decoded once inside the task that consumes its frames; only a few small
frames per shot travel on to the CNN actors, never a decoded video (PITFALLS).

Failure safety. A decode that raises is an ordinary ``failed`` row. A decode that kills its
worker process (a decoder segfault, an out-of-memory kill, the node going away) is a *system*
failure: Ray Data retries such tasks without limit (``max_retries=-1`` for tasks,
``max_restarts=-1``/``max_task_retries=-1`` for actor pools; Ray 2.60 deprecates changing them
per operator), so one poisonous trailer would loop forever. The bound lives in storage
instead, beside the feature cache, as a per-trailer **attempt ledger**: before decoding, a
task writes a small marker ``<cache>/_attempts/<fingerprint>/<uuid>.json`` (node, pid, time)
and removes it as soon as the decode returns, whatever its result. A marker that is still
there therefore records a decode whose process died. A task that finds
``resources.decode_attempts`` such markers does not decode again: it records the trailer
``failed`` ("worker crashed N times while decoding …"), the row is cached like any other
result and the ledger entry is cleared (as it is for every trailer whose row is cached).
Every other trailer is unaffected: tasks hold one trailer each, Ray retries the lost tasks,
and a lost node costs its in-flight trailers one attempt each. Chosen over decoding in a
subprocess per trailer (process start-up and imports per trailer, frames copied between
processes) and over bounded Ray retries (deprecated per
operator, and a bound per task would fail the whole dataset rather than the trailer): the
ledger costs one small write and one delete per trailer and works on any shared storage (local
or s3://). Markers carry the run's id and a run counts only its own: an attempt lost when an
earlier run was killed or aborted, or its node lost, is no fault of the trailers then in
flight, and is forgotten.

Transient failures. An error that is not about the file's bytes (the input could not be
fetched from storage, an S3 503, expired credentials, a full disk, out of memory:
:func:`mmx.errors.is_transient`) still ends the trailer ``failed`` in this run, with a reason
starting ``transient:``, but its row is not cached: the next run decodes it again. Everything
else (unreadable, corrupt, no video, too short) is deterministic and cached.

``resources.debug_crash_decode`` (an fnmatch pattern on the file name, testing only) makes
matching decodes kill their own worker with SIGSEGV, exactly where the decoder would.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import posixpath
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from mmx import archive, schema, storage
from mmx.config import RunConfig
from mmx.errors import (
    TRANSIENT,
    TrailerError,
    is_transient,
    is_transient_reason,
    transient_reason,
)
from mmx.progress import Progress
from mmx.stages.cache import cached_path

log = logging.getLogger(__name__)

_FRAME_COLS = ("frames", "frames_shape")


def fingerprint_inputs(
    files: list[archive.InputFile], cfg: RunConfig, reused: Mapping[str, str] | None = None
) -> pa.Table:
    """``schema.INPUTS`` rows for ``files``: the fingerprints in ``reused`` (uri →
    fingerprint) as they are, every other file's bytes hashed in parallel tasks."""
    reused = reused or {}
    rows = [{"trailer_id": f.trailer_id, "uri": f.uri, "size_bytes": f.size_bytes,
             "version": f.version} for f in files]
    done = [{**r, "fingerprint": reused[r["uri"]]} for r in rows if r["uri"] in reused]
    todo = [r for r in rows if r["uri"] not in reused]
    if todo and sum(r["size_bytes"] for r in todo) <= cfg.resources.hash_in_driver_bytes:
        with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound: threads suffice
            done += pool.map(_fingerprint_row, todo)
    elif todo:
        ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 64))
        done += ds.map(_fingerprint_row, num_cpus=0.5).take_all()
    return pa.Table.from_pylist(done, schema=schema.INPUTS)


def _fingerprint_row(row: dict[str, Any]) -> dict[str, Any]:
    try:
        row["fingerprint"] = archive.fingerprint(row["uri"])
    except OSError as err:  # unreadable now: failed this run (transient), read again next run
        # Keyed by the file's location, so two unreadable files are never "duplicates".
        where = hashlib.sha256(row["uri"].encode()).hexdigest()[:16]
        row["fingerprint"] = f"{UNREADABLE}{type(err).__name__}-{where}"
        log.warning("could not read %s to fingerprint it: %s: %s", row["uri"],
                    type(err).__name__, err)
    return row


UNREADABLE = "unreadable-"  # fingerprint prefix of a file that could not be read to hash it


def unreadable_reason(fingerprint: str) -> str | None:
    """The (transient) failure reason of a file whose bytes could not be read to fingerprint
    them, or None for a real fingerprint. Such a file is not decoded and nothing is cached."""
    if not fingerprint.startswith(UNREADABLE):
        return None
    error = fingerprint.removeprefix(UNREADABLE).rsplit("-", 1)[0]
    return (f"{TRANSIENT}could not read the file to fingerprint it ({error}; see the job log) "
            "(not cached: retried on the next run)")


def extract_features(inputs: pa.Table, cfg: RunConfig, cache: str, run_id: str = "") -> pa.Table:
    """Run decode+shots+CPU experts and the image-expert actor pool over ``inputs``.

    ``inputs`` has trailer_id, uri, size_bytes and fingerprint, one row per distinct content.
    Every result (ok, excluded or failed: the same bytes give the same result) is written to
    ``<cache>/<fingerprint>.parquet`` as soon as its batch finishes, so a killed run loses at
    most the trailers in flight and the rerun skips what is cached. Returns one small row per
    input (trailer_id, fingerprint, status, reason). A transient failure (storage, memory:
    reason prefixed ``transient:``) is returned but not cached, so the next run tries again.
    ``run_id`` tags this run's attempt ledger entries (only this run's lost attempts count).
    """
    res = cfg.resources
    ds = ray.data.from_arrow(inputs)
    ds = ds.repartition(max(1, inputs.num_rows))  # one trailer per block: spread decode tasks
    ds = ds.map_batches(
        _analyse_batch,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"cfg": cfg, "cache": cache, "run_id": run_id},
        num_cpus=res.decode_cpus,
        compute=ray.data.TaskPoolStrategy(size=res.decode_concurrency),
    )
    ds = ds.map_batches(
        ImageExpertsActor,
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
        num_cpus=0,  # I/O only: with a CPU share it waited for every decode to end
    )
    # results stream back as trailers finish: a progress line with rate and ETA meanwhile
    progress = Progress("ingest", inputs.num_rows, every_s=cfg.resources.progress_every_s)
    parts = []
    for part in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        parts.append(part)
        progress.update(part.num_rows)
    progress.done()
    return pa.concat_tables(parts) if parts else pa.Table.from_pylist([], schema=_STATUS)


_STATUS = pa.schema(
    [("trailer_id", pa.string()), ("fingerprint", pa.string()), ("status", pa.string()),
     ("reason", pa.string())]
)


def _write_cache(batch: pa.Table, cache: str) -> pa.Table:
    """Write each row to its own cache file (atomic) keyed by content; return status rows.

    Once its row is cached a trailer's ledger entry is cleared, lost attempts included (a
    decode that died with its node and then succeeded on a retry, or a trailer failed by the
    ledger): the cached row is the record now (delete it to give the trailer new attempts).
    """
    reasons = batch["reason"].to_pylist()
    for i, fingerprint in enumerate(batch["fingerprint"].to_pylist()):
        if is_transient_reason(reasons[i]):
            continue  # not a property of the bytes: never cached, decoded again next run
        storage.write_table(batch.slice(i, 1), cached_path(cache, fingerprint))
        AttemptLedger(cache, fingerprint).clear()
    return batch.select(_STATUS.names).cast(_STATUS)


CRASHED = "worker crashed"  # reason prefix of trailers failed by the attempt ledger


class AttemptLedger:
    """Decode attempts of one content fingerprint whose worker died (see the module doc).

    ``<cache>/_attempts/<fingerprint>/<uuid>.json``: one marker per decode in progress or
    lost, tagged with the run that started it. Only one task decodes a given fingerprint at a
    time (duplicates are not decoded), so the entries of one fingerprint are never written
    concurrently. Only the markers of ``run_id`` count: an attempt lost when an earlier run was
    killed or aborted (its in-flight trailers' markers stay) is no fault of the trailer, and is
    forgotten; with ``run_id`` empty every marker counts.
    """

    def __init__(self, cache: str, fingerprint: str, run_id: str = "") -> None:
        self.dir = storage.join(cache, "_attempts", fingerprint)
        self.run_id = run_id

    def lost(self) -> list[dict[str, Any]]:
        """This run's markers left by decodes that never returned (oldest first); other runs'
        markers are deleted."""
        found, stale = [], []
        for uri in storage.list_files(self.dir, ".json"):
            try:
                marker = storage.read_json(uri)
            except (OSError, ValueError):  # a marker half-written by a dying node still counts
                marker = {"run": self.run_id}
            if self.run_id and marker.get("run") != self.run_id:
                stale.append(uri)
            else:
                found.append(marker)
        if stale:
            fs, _ = storage.filesystem(self.dir)
            fs.rm([storage.filesystem(u)[1] for u in stale])
        return sorted(found, key=lambda m: m.get("started", 0.0))

    def begin(self) -> str:
        """Record a decode about to start; returns its marker (pass it to :meth:`end`)."""
        marker = storage.join(self.dir, f"{uuid.uuid4().hex}.json")
        node = ray.util.get_node_ip_address() if ray.is_initialized() else "local"
        storage.write_json(marker, {"node": node, "pid": os.getpid(), "started": time.time(),
                                    "run": self.run_id})
        return marker

    def end(self, marker: str) -> None:
        """The decode returned (with any result): forget its marker."""
        fs, path = storage.filesystem(marker)
        try:
            fs.rm(path)
        except FileNotFoundError:
            pass
        _rmdir_if_empty(fs, self.dir)

    def clear(self) -> None:
        """Forget every marker of this fingerprint."""
        fs, path = storage.filesystem(self.dir)
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass


def _rmdir_if_empty(fs: Any, uri: str) -> None:
    """Remove a local, now empty ledger folder (object stores have no folders to remove)."""
    if "://" in uri:
        return
    try:
        os.rmdir(storage.filesystem(uri)[1])
    except OSError:  # not empty, or gone
        pass


def features_schema(cfg: RunConfig) -> pa.Schema:
    """The ``features`` rows of this run's ingest: :data:`mmx.schema.FEATURES` plus a column per
    further expert the decode stage computes (per-title experts are not computed here)."""
    from mmx.experts.registry import plan

    return schema.features_schema(plan(cfg.experts.names).shot)


def _analyse_batch(batch: pa.Table, cfg: RunConfig, cache: str, run_id: str) -> pa.Table:
    """One trailer (a 1-row table) → its features row plus the frames the CNN needs."""
    rows = [_analyse(row, cfg, cache, run_id) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=_with_frames(features_schema(cfg)))


def _with_frames(base: pa.Schema) -> pa.Schema:
    return base.append(pa.field("frames", pa.binary())).append(
        pa.field("frames_shape", pa.list_(pa.int64()))
    )


def _analyse(row: dict[str, Any], cfg: RunConfig, cache: str, run_id: str) -> dict[str, Any]:
    from mmx.experts.registry import plan
    from mmx.ingest import analyse_trailer

    t0 = time.perf_counter()
    out = {name: None for name in features_schema(cfg).names}
    out.update(
        trailer_id=row["trailer_id"],
        uri=row["uri"],
        fingerprint=row["fingerprint"],
        size_bytes=row["size_bytes"],
        frames=b"",
        frames_shape=[],
    )
    try:
        ledger = AttemptLedger(cache, row["fingerprint"], run_id)
        lost = ledger.lost()
    except Exception as err:  # noqa: BLE001 - the cache storage, not the trailer
        out.update(status="failed", reason=transient_reason(err, "attempt ledger"))
        log.warning("%s: %s", row["uri"], out["reason"])
        return out
    if len(lost) >= cfg.resources.decode_attempts:
        last = lost[-1]
        out.update(status="failed", reason=(
            f"{CRASHED} {len(lost)} times while decoding (the process died: a decoder crash, "
            f"an out-of-memory kill or a lost node; last on node {last.get('node', '?')}, "
            f"pid {last.get('pid', '?')})"))
        log.error("%s: %s", row["uri"], out["reason"])
        return out
    marker = None
    try:
        marker = ledger.begin()
        with _local_copy(row["uri"]) as path:
            _debug_crash(row["uri"], cfg.resources.debug_crash_decode)
            tf = analyse_trailer(path, cfg.video, cfg.shots, cfg.experts)
    except TrailerError as err:
        out.update(status=err.status, reason=err.reason.removeprefix(f"{err.status}: "))
        return out
    except Exception as err:
        if isinstance(err, Unfetchable) or is_transient(err):
            # storage, credentials, memory, disk: published failed, not cached, tried again
            out.update(status="failed", reason=transient_reason(
                err.__cause__ if isinstance(err, Unfetchable) and err.__cause__ else err,
                "reading the file" if isinstance(err, Unfetchable) else ""))
            log.warning("%s: %s", row["uri"], out["reason"])
        else:
            log.exception("analysing %s failed", row["uri"])
            out.update(status="failed", reason=f"{type(err).__name__}: {err}"[:500])
        return out
    finally:  # not reached when the process dies: then the marker stays, an attempt lost
        if marker is not None:
            try:
                ledger.end(marker)
            except Exception:
                log.warning("could not remove the attempt marker %s", marker, exc_info=True)
    info = tf.info
    n_clips = int(tf.clips.shape[0])
    run = plan(cfg.experts.names)
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
        **{name: _flat(values) for name, values in tf.features.items()},  # (C × D) each
        **{run.audio or "audio": _flat(tf.audio)},  # (C × A × Da)
        audio_frames=tf.audio_frames.astype(np.int32),
        decode_s=time.perf_counter() - t0,
        frames=np.ascontiguousarray(tf.frames, dtype=np.uint8).tobytes(),
        frames_shape=list(tf.frames.shape),
        thumbnail=tf.thumbnail,
    )
    return out


def _debug_crash(uri: str, pattern: str) -> None:
    """Testing hook (``resources.debug_crash_decode``): die by SIGSEGV like a decoder crash."""
    if not pattern or not fnmatch.fnmatch(posixpath.basename(uri), pattern):
        return
    import resource

    log.error("debug_crash_decode matches %s: killing this worker (pid %d) with SIGSEGV",
              uri, os.getpid())
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(60)  # the signal is delivered asynchronously; never decode meanwhile


def _flat(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else np.ascontiguousarray(values, np.float32).reshape(-1)


class Unfetchable(Exception):
    """The input's bytes could not be fetched from storage (always transient)."""


class _local_copy:
    """Context manager giving a local path for ``uri`` (decord needs a file on disk)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.tmp: str | None = None

    def __enter__(self) -> str:
        if "://" not in self.uri or self.uri.startswith("file://"):
            return self.uri.removeprefix("file://")
        try:
            fs, path = storage.filesystem(self.uri)
            self.tmp = tempfile.mkdtemp(prefix="mmx-")
            local = os.path.join(self.tmp, "input" + os.path.splitext(path)[1])
            fs.get(path, local)
        except Exception as err:
            self.__exit__()
            raise Unfetchable(f"could not copy {self.uri} to local disk") from err
        return local

    def __exit__(self, *exc: object) -> None:
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class ImageExpertsActor:
    """Holds the run's ``image`` experts that run in a pool (the appearance CNN), loaded once;
    embeds the sampled frames of a batch of trailers in batches across trailers, averages them
    per clip into each expert's column and drops the frames."""

    def __init__(self, cfg: RunConfig) -> None:
        import inspect

        import torch

        from mmx.experts.registry import expert_class, get_expert, plan

        threads = max(1, int(cfg.resources.appearance_cpus))
        torch.set_num_threads(threads)
        # A GPU actor (appearance_gpus > 0) runs the CNN on its GPU; its forward batch then
        # defaults to 64 frames, on CPU to 4 (small batches stay in cache, see AppearanceExpert).
        gpu = cfg.resources.appearance_gpus > 0 and torch.cuda.is_available()
        self.experts = {}
        for name in plan(cfg.experts.names).pool_image:
            takes_device = "device" in inspect.signature(expert_class(name)).parameters
            kwargs = {"device": "cuda" if gpu else "cpu"} if takes_device else {}
            self.experts[name] = get_expert(name, cfg.experts, **kwargs)
        self.batch = cfg.resources.appearance_batch
        self.schema = features_schema(cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mmx.ingest import image_features

        shapes = batch.column("frames_shape").to_pylist()
        blobs = batch.column("frames").to_pylist()
        stacks = [  # (C_i, F, h, w, 3) per trailer
            np.frombuffer(b, np.uint8).reshape(s) if s and s[1] else None
            for b, s in zip(blobs, shapes, strict=True)
        ]
        todo = [s for s in stacks if s is not None]
        if todo and self.experts:
            # every trailer's clips as one (ΣC_i, F, h, w, 3) run through each expert in
            # forward batches of `appearance_batch` frames across trailers
            frames = np.concatenate(todo)
            bounds = np.cumsum([0, *[len(s) for s in todo]])
            for name, expert in self.experts.items():
                emb = image_features(expert, frames, self.batch)  # (ΣC_i, dim)
                parts = iter(np.split(emb, bounds[1:-1]))
                col = [next(parts).reshape(-1) if s is not None else None for s in stacks]
                batch = batch.set_column(batch.schema.get_field_index(name), name,
                                         pa.array(col, type=pa.list_(pa.float32())))
        batch = batch.drop_columns(list(_FRAME_COLS))
        return schema.conform(batch, self.schema)
