"""Local and s3:// storage through fsspec: atomic writes, Parquet I/O, snapshots and LATEST.

A snapshot is written completely under ``<out>/snapshots/<name>/``, then sealed with
``_COMPLETE``, and only then does ``<out>/LATEST`` (a one-line text file naming it) move, by
compare-and-swap (:func:`publish`), so readers never see a half-written snapshot and a run never
moves LATEST over a snapshot another run published meanwhile. Old snapshots are pruned only
once they have been superseded for a grace period (:func:`prune`), ``_COMPLETE`` first.

Conditional writes (:func:`read_versioned`, :func:`create_exclusive`, :func:`replace_if`,
:func:`delete_if`; used for LATEST here and for the run lease in :mod:`mmx.lease`): on S3 they
are single conditional requests (``If-None-Match: *`` / ``If-Match: <ETag>``, atomic on the
server); on a local disk an exclusive create is a hard link of a complete temp file (fails if
the name exists) and a conditional replace or delete runs under a short-lived lock file
``<file>.lock`` made with ``O_CREAT|O_EXCL``. Credentials for s3:// come from the standard AWS chain (env, profile, instance role)
via s3fs; an endpoint override comes from ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``.
Nothing here logs credentials.

Object stores are opened without fsspec's directory-listing cache: the pipeline's Ray workers
write files (feature cache, checkpoints, index shards) that the driver lists and reads next,
and a listing cached earlier in this process would hide them.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import fsspec.asyn
import pyarrow as pa
import pyarrow.parquet as pq

from mmx import killpoints

log = logging.getLogger(__name__)

LATEST = "LATEST"
SNAPSHOTS = "snapshots"
COMPLETE = "_COMPLETE"
DELETING = "_DELETING"  # written into a snapshot before prune deletes it (see prune)
DEFAULT_GRACE_S = 7 * 86400.0  # a superseded snapshot stays readable this long (prune)
LOCK_STALE_S = 30.0  # a local ``<file>.lock`` older than this is abandoned (see _local_lock)
LOCK_TIMEOUT_S = 120.0


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of ``uri`` and the path inside it (local paths made absolute)."""
    if "://" not in uri:
        return fsspec.core.url_to_fs(os.path.abspath(uri))
    if uri.startswith("file://"):
        return fsspec.core.url_to_fs(uri)
    return fsspec.core.url_to_fs(uri, use_listings_cache=False)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URL with forward slashes."""
    if "://" in uri:
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)


def write_local_atomic(path: str, data: bytes) -> None:
    """Write the local file ``path`` whole or not at all: a temp file beside it, fsynced, then
    renamed over it (a kill mid-write leaves the previous file, or none)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` atomically: local files go through a temp file and ``os.replace``;
    an object-store PUT is atomic already."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path) if "://" in uri else os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
        write_local_atomic(path, data)
    else:
        with fs.open(path, "wb") as fh:
            fh.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def write_json(uri: str, value: Any) -> None:
    write_text(uri, json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_table(table: pa.Table, uri: str) -> None:
    """Write one Parquet file atomically (zstd)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(uri, buf.getvalue())


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file or a folder of parts."""
    fs, path = filesystem(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def read_tables(uris: list[str], schema: pa.Schema) -> pa.Table:
    """Read many Parquet files (same filesystem) into one table of ``schema``."""
    if not uris:
        return schema.empty_table()
    fs, _ = filesystem(uris[0])
    paths = [filesystem(u)[1] for u in uris]
    return pq.ParquetDataset(paths, filesystem=fs, schema=schema).read()


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Sorted full URIs of the files directly under ``uri`` ending in ``suffix``."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    out = []
    for info in fs.ls(path, detail=True):
        if info["type"] == "file" and info["name"].endswith(suffix):
            out.append(_unstrip(uri, path, info["name"]))
    return sorted(out)


def _unstrip(uri: str, path: str, name: str) -> str:
    """Turn a filesystem path from ``fs.ls`` back into a URI like ``uri``."""
    if "://" in uri:
        protocol = uri.split("://", 1)[0]
        return f"{protocol}://{name.lstrip('/')}" if protocol != "file" else name
    return name


# --- snapshots --------------------------------------------------------------------------


def new_snapshot_name() -> str:
    """Sortable, unique snapshot name, e.g. ``20261122T031500Z-1a2b3c``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def snapshot_uri(out: str, name: str) -> str:
    return join(out, SNAPSHOTS, name)


class SnapshotSealed(RuntimeError):
    """A write into a snapshot that is already complete (or being deleted)."""


class LatestMoved(RuntimeError):
    """:func:`publish` refused: LATEST no longer names the snapshot the run started from."""

    def __init__(self, message: str, *, expected: str | None, current: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.current = current


class _Unchecked(enum.Enum):
    UNCHECKED = "unchecked"


UNCHECKED = _Unchecked.UNCHECKED  # publish(expected=UNCHECKED): whatever LATEST names now


def latest_name(out: str) -> str | None:
    """The name LATEST holds (None before the first publish). Unlike :func:`latest` it does
    not check that the snapshot is complete: read it when a run starts and hand it to
    :func:`publish` as ``expected``."""
    current = read_versioned(join(out, LATEST))
    return _latest_of(current)


def _latest_of(current: Versioned | None) -> str | None:
    if current is None:
        return None
    return current.data.decode().strip() or None


def snapshot_complete(out: str, name: str) -> bool:
    """Whether snapshot ``name`` under ``out`` is sealed with ``_COMPLETE``."""
    return exists(join(snapshot_uri(out, name), COMPLETE))


def assert_writable(snapshot: str) -> None:
    """Raise :class:`SnapshotSealed` when ``snapshot`` (its URI) is complete or being deleted:
    a published snapshot is immutable, and a run must never write into one."""
    if exists(join(snapshot, COMPLETE)):
        raise SnapshotSealed(
            f"snapshot {snapshot} is complete ({COMPLETE} exists): published snapshots are "
            "immutable; write a new snapshot instead"
        )
    if exists(join(snapshot, DELETING)):
        raise SnapshotSealed(f"snapshot {snapshot} is being deleted by prune ({DELETING} exists)")


def publish(
    out: str, name: str, expected: str | None | _Unchecked = UNCHECKED, *,
    now: float | None = None,
) -> None:
    """Seal snapshot ``name`` with ``_COMPLETE``, then move ``LATEST`` to it (the commit point)
    by compare-and-swap.

    ``expected`` is what LATEST named when the run started (:func:`latest_name`; a snapshot URI
    is accepted too; None = there was no LATEST yet). If LATEST names something else now, or
    changes between this function's read and its write, nothing moves: the ``_COMPLETE`` this
    call wrote is removed again and :class:`LatestMoved` is raised. Without ``expected``
    (the old call ``publish(out, name)``) only the swap itself is checked.

    ``_COMPLETE`` is JSON: ``{"name", "published" (unix s), "published_at" (UTC), "previous"
    (the snapshot LATEST named before)}``; :func:`prune` reads it.
    """
    if isinstance(expected, str) and ("/" in expected or os.sep in expected):
        expected = expected.rstrip("/").rstrip(os.sep).replace(os.sep, "/").rsplit("/", 1)[-1]
    pointer = join(out, LATEST)
    if store_kind(pointer) == "other":
        _publish_unconditional(out, name, expected, now)
        return
    before = read_versioned(pointer)
    current = _latest_of(before)
    if expected is not UNCHECKED and current != expected and current != name:
        raise _moved(out, name, expected, current)
    complete = join(snapshot_uri(out, name), COMPLETE)
    sealed_before = exists(complete)
    if not sealed_before:
        write_json(complete, _complete_body(name, current, now))
    killpoints.reached("publish:complete")
    data = (name + "\n").encode()
    try:
        if before is None:
            create_exclusive(pointer, data)
        elif current != name:
            replace_if(pointer, data, before.tag)
    except (FileExistsError, PreconditionFailed):
        after = latest_name(out)
        if after == name:  # our write landed (its reply was lost and the retry refused)
            return
        if not sealed_before:
            with contextlib.suppress(FileNotFoundError):
                fs, path = filesystem(complete)
                fs.rm_file(path)
        raise _moved(out, name, expected if expected is not UNCHECKED else current, after) \
            from None


def _moved(out: str, name: str, expected: str | None, current: str | None) -> LatestMoved:
    return LatestMoved(
        f"{join(out, LATEST)} names {current or 'nothing'}, not {expected or 'nothing'} as when "
        f"this run started: another run published meanwhile, so snapshot {name} is left "
        "unpublished (LATEST unchanged)",
        expected=expected, current=current,
    )


def _complete_body(name: str, previous: str | None, now: float | None) -> dict[str, Any]:
    t = time.time() if now is None else now
    return {"name": name, "published": t, "previous": previous,
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))}


def _publish_unconditional(
    out: str, name: str, expected: str | None | _Unchecked, now: float | None
) -> None:
    """Stores without conditional writes (neither local nor s3://): compare, then write; a
    concurrent publish between the two is not detected."""
    current = latest_name(out)
    if expected is not UNCHECKED and current not in (expected, name):
        raise _moved(out, name, expected, current)
    write_json(join(snapshot_uri(out, name), COMPLETE), _complete_body(name, current, now))
    write_text(join(out, LATEST), name + "\n")


def latest(out: str) -> str | None:
    """URI of the newest complete snapshot under ``out``, or None."""
    pointer = join(out, LATEST)
    if not exists(pointer):
        return None
    name = read_text(pointer).strip()
    snap = snapshot_uri(out, name)
    if not exists(join(snap, COMPLETE)):
        raise FileNotFoundError(f"{pointer} names {name!r}, which is not a complete snapshot")
    return snap


def list_complete_snapshots(out: str) -> list[str]:
    """Names of the complete snapshots under ``out`` (sealed with ``_COMPLETE``), oldest first
    (names sort by time). A snapshot being written, or half deleted by an interrupted prune,
    has no ``_COMPLETE`` and is not listed."""
    fs, path = filesystem(join(out, SNAPSHOTS))
    if not fs.exists(path):
        return []
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    return [n for n in names if fs.exists(posixpath.join(path, n, COMPLETE))]


def snapshots(out: str) -> list[str]:
    """Names of the complete snapshots under ``out``, oldest first (see
    :func:`list_complete_snapshots`)."""
    return list_complete_snapshots(out)


@dataclass(frozen=True)
class _Sealed:
    name: str
    published: float  # when it was published: the later of its _COMPLETE time and mtime
    previous: str | None  # what LATEST named before it (None: unknown, or nothing)


def _sealed(out: str, name: str) -> _Sealed | None:
    got = read_versioned(join(snapshot_uri(out, name), COMPLETE))
    if got is None:
        return None
    published, previous = got.mtime, None
    try:
        body = json.loads(got.data)
    except ValueError:  # a snapshot published before _COMPLETE carried JSON (just its name)
        body = None
    if isinstance(body, dict):
        with contextlib.suppress(TypeError, ValueError):
            published = max(published, float(body.get("published")))
        previous = body.get("previous") if isinstance(body.get("previous"), str) else None
    return _Sealed(name, published, previous)


def _superseded_at(sealed: list[_Sealed], name: str) -> float | None:
    """When LATEST moved away from snapshot ``name`` (unix s), None if it has not.

    The source is the ``_COMPLETE`` of the snapshot that replaced it: the one whose
    ``previous`` names ``name`` (the latest such if several claim it, e.g. a run that died
    between sealing and moving LATEST); for snapshots published before ``previous`` was
    recorded, the next snapshot published after it. A snapshot's publish time is the later of
    the time recorded in its ``_COMPLETE`` (the writer's clock) and the object's modification
    time (the store's clock): a skewed clock or a copied bucket only delays pruning."""
    by = {s.name: s for s in sealed}
    if name not in by:
        return None
    claimants = [s.published for s in sealed if s.previous == name and s.name != name]
    if claimants:
        return max(claimants)
    me = by[name]
    later = [s.published for s in sealed
             if s.name != name and (s.published, s.name) > (me.published, me.name)]
    return min(later) if later else None


def prune(
    out: str, keep: int, grace_s: float = DEFAULT_GRACE_S, now: float | None = None
) -> list[str]:
    """Delete old complete snapshots; returns the names deleted, oldest first.

    A snapshot is deleted only if it is not among the newest ``keep`` (by name), is not the
    one LATEST names, and was superseded (:func:`_superseded_at`) at least ``grace_s`` seconds
    before ``now``: a reader that opened it through LATEST just before a publish keeps it that
    long. Deletion writes ``_DELETING``, removes ``_COMPLETE`` first (from then on the
    snapshot is no longer listed as complete, and a half-finished delete never looks like a
    snapshot), then the other files, ``_DELETING`` last. A delete that was interrupted is
    finished by the next prune; a failure to delete one snapshot is logged and the others go on.
    """
    t = time.time() if now is None else now
    current = latest_name(out)
    _finish_interrupted_deletes(out)
    names = list_complete_snapshots(out)
    old = names[: max(0, len(names) - keep)]
    candidates = [n for n in old if n != current]
    if not candidates:
        return []
    sealed = [s for s in (_sealed(out, n) for n in names) if s is not None]
    doomed = []
    for name in candidates:
        since = _superseded_at(sealed, name)
        if since is None or t - since < grace_s:
            continue
        try:
            _delete_snapshot(out, name)
        except Exception as err:  # noqa: BLE001 - one stuck snapshot must not stop the rest
            log.warning("prune: could not delete snapshot %s: %s", name, err)
            continue
        doomed.append(name)
    return doomed


def _delete_snapshot(out: str, name: str) -> None:
    snap = snapshot_uri(out, name)
    fs, path = filesystem(snap)
    marker, complete = posixpath.join(path, DELETING), posixpath.join(path, COMPLETE)
    write_text(join(snap, DELETING), name + "\n")
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(complete)  # first: from here on the snapshot is not complete
    _delete_rest(fs, path, marker)


def _delete_rest(fs: fsspec.AbstractFileSystem, path: str, marker: str) -> None:
    """Delete every file under ``path`` but ``marker``, then ``marker`` and the folder."""
    files = [f for f in fs.find(path) if f.rstrip("/") != marker.rstrip("/")]
    if files:
        fs.rm(files)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def _finish_interrupted_deletes(out: str) -> None:
    fs, path = filesystem(join(out, SNAPSHOTS))
    if not fs.exists(path):
        return
    for found in fs.glob(posixpath.join(path, "*", DELETING)):
        folder = posixpath.dirname(found)
        if fs.exists(posixpath.join(folder, COMPLETE)):
            continue  # sealed again: not ours to delete
        log.info("prune: finishing the interrupted delete of %s", folder)
        try:
            _delete_rest(fs, folder, found)
        except Exception as err:  # noqa: BLE001
            log.warning("prune: could not finish deleting %s: %s", folder, err)


# --- conditional writes ---------------------------------------------------------------------


class PreconditionFailed(RuntimeError):
    """A conditional replace or delete found the object changed or gone."""


@dataclass(frozen=True)
class Versioned:
    """An object's bytes with the store's version of them, read in one request."""

    data: bytes
    tag: str  # S3: the ETag; local: sha256 of the bytes
    mtime: float  # modification time (unix s) by the store's clock


def store_kind(uri: str) -> str:
    """"local", "s3" (conditional writes supported) or "other"."""
    fs, _ = filesystem(uri)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols or "local" in protocols:
        return "local"
    if "s3" in protocols or "s3a" in protocols:
        return "s3"
    return "other"


def _unsupported(uri: str) -> NotImplementedError:
    return NotImplementedError(
        f"conditional writes are only implemented for local paths and s3:// (not {uri})"
    )


def read_versioned(uri: str) -> Versioned | None:
    """The object at ``uri`` and its version tag, None if absent."""
    fs, path = filesystem(uri)
    kind = store_kind(uri)
    if kind == "local":
        try:
            with open(path, "rb") as fh:
                data = fh.read()
                mtime = os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            return None
        return Versioned(data, hashlib.sha256(data).hexdigest(), mtime)
    if kind == "s3":
        bucket, key, _ = fs.split_path(path)

        async def get() -> Versioned | None:
            try:
                resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None
            try:
                data = await resp["Body"].read()
            finally:
                resp["Body"].close()
            return Versioned(data, resp["ETag"], resp["LastModified"].timestamp())

        return fsspec.asyn.sync(fs.loop, get)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    info = fs.info(path)
    return Versioned(data, hashlib.sha256(data).hexdigest(), float(info.get("mtime") or 0))


def create_exclusive(uri: str, data: bytes) -> str:
    """Create ``uri`` holding ``data`` only if it does not exist (FileExistsError otherwise);
    returns its version tag. Readers never see it partly written."""
    fs, path = filesystem(uri)
    kind = store_kind(uri)
    if kind == "s3":
        bucket, key, _ = fs.split_path(path)
        parent = posixpath.dirname(path)
        try:
            resp = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except OSError as err:
            if isinstance(err, FileExistsError) or _s3_conflict(err):
                raise FileExistsError(errno.EEXIST, f"{uri} exists") from err
            raise
        fs.invalidate_cache(parent)
        return resp["ETag"]
    if kind != "local":
        raise _unsupported(uri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _local_temp(path, data)
    try:
        try:
            os.link(tmp, path)  # atomic, fails if ``path`` exists; the file is complete
        except FileExistsError:
            raise
        except OSError as err:  # a filesystem without hard links
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            _local_exclusive_write(path, data)
    finally:
        os.unlink(tmp)
    _fsync_dir(os.path.dirname(path))
    return hashlib.sha256(data).hexdigest()


def replace_if(uri: str, data: bytes, tag: str) -> str:
    """Replace ``uri`` with ``data`` only if its version tag is still ``tag``; returns the new
    tag. Raises :class:`PreconditionFailed` if it changed or is gone."""
    fs, path = filesystem(uri)
    kind = store_kind(uri)
    if kind == "s3":
        return _s3_if_match(fs, path, uri, "put_object", tag, Body=data)["ETag"]
    if kind != "local":
        raise _unsupported(uri)
    with _local_lock(path):
        _check_local_tag(uri, tag)
        tmp = _local_temp(path, data)
        os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))
    return hashlib.sha256(data).hexdigest()


def delete_if(uri: str, tag: str) -> None:
    """Delete ``uri`` only if its version tag is still ``tag`` (:class:`PreconditionFailed`
    otherwise, also when it is gone)."""
    fs, path = filesystem(uri)
    kind = store_kind(uri)
    if kind == "s3":
        _s3_if_match(fs, path, uri, "delete_object", tag)
        fs.invalidate_cache(path)
        return
    if kind != "local":
        raise _unsupported(uri)
    with _local_lock(path):
        _check_local_tag(uri, tag)
        os.unlink(path)


def _s3_if_match(fs: Any, path: str, uri: str, op: str, tag: str, **kwargs: Any
                 ) -> dict[str, Any]:
    """S3 ``op`` on ``path`` conditional on its ETag being ``tag`` (:class:`PreconditionFailed`
    when it changed, is gone, or another conditional write to it was in flight)."""
    bucket, key, _ = fs.split_path(path)
    try:
        return fs.call_s3(op, Bucket=bucket, Key=key, IfMatch=tag, **kwargs)
    except OSError as err:
        if isinstance(err, FileNotFoundError) or _s3_conflict(err):
            raise PreconditionFailed(f"{uri} changed or is gone") from err
        raise


def _check_local_tag(uri: str, tag: str) -> None:
    """Raise :class:`PreconditionFailed` unless local ``uri`` exists with version tag ``tag``
    (call under its :func:`_local_lock`)."""
    current = read_versioned(uri)
    if current is None or current.tag != tag:
        raise PreconditionFailed(f"{uri} changed or is gone")


def _s3_conflict(err: BaseException) -> bool:
    """A 412 PreconditionFailed, or a 409 ConditionalRequestConflict (another conditional
    write to the key was in flight), behind s3fs's translated exception."""
    cause = err.__cause__
    response = getattr(cause, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _local_temp(path: str, data: bytes) -> str:
    """A complete, fsynced temp file next to ``path`` (created with O_EXCL)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _local_exclusive_write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _local_lock(
    path: str, stale_s: float = LOCK_STALE_S, timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Hold ``<path>.lock`` (created with O_CREAT|O_EXCL) for a short read-compare-replace.

    A lock older than ``stale_s`` is taken to be left by a dead process and is broken. The
    remaining race: a holder paused longer than ``stale_s`` inside its few-millisecond
    critical section (SIGSTOP, a swap storm) can overlap with the next holder."""
    lock = path + ".lock"
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "token": uuid.uuid4().hex, "at": time.time()}).encode()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _local_exclusive_write(lock, body)
            break
        except FileExistsError:
            _break_if_stale(lock, stale_s)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lock} has been held for over {timeout_s:g} s") from None
            time.sleep(0.005 + random.random() * 0.02)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            with open(lock, "rb") as fh:
                mine = fh.read() == body
            if mine:  # a breaker may have replaced a lock we held too long
                os.unlink(lock)


def _break_if_stale(lock: str, stale_s: float) -> None:
    try:
        st = os.stat(lock)
    except FileNotFoundError:
        return
    if time.time() - st.st_mtime < stale_s:
        return
    aside = f"{lock}.stale-{uuid.uuid4().hex[:12]}"
    try:
        os.rename(lock, aside)  # only one breaker gets it
    except FileNotFoundError:
        return
    moved = os.stat(aside)
    if (moved.st_ino, moved.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
        # a fresh lock was made between our stat and rename: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
    else:
        log.warning("broke the stale lock %s (%.0f s old)", lock, time.time() - st.st_mtime)
    os.unlink(aside)


def iter_archive(
    archive: str, extensions: tuple[str, ...]
) -> Iterator[tuple[str, int, str]]:
    """(uri, size in bytes, version tag) of every file under ``archive`` with one of
    ``extensions``, from one listing (no file is opened).

    The version tag is what the store says changes whenever the object is rewritten: the ETag
    on S3 (and S3-compatible stores), the generation on GCS, the modification time and inode
    on a local disk; "" when the store gives none.
    """
    fs, path = filesystem(archive)
    if not fs.exists(path):
        raise FileNotFoundError(f"archive {archive!r} does not exist")
    for name, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") != "file":
            continue
        if name.lower().endswith(extensions):
            yield _unstrip(archive, path, name), int(info.get("size") or 0), version_tag(info)


def version_tag(info: dict[str, Any]) -> str:
    """The store's version of one object from its listing entry (see :func:`iter_archive`)."""
    for key in ("ETag", "etag", "generation", "md5Hash"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}"
    if info.get("mtime") is not None:
        return f"mtime:{float(info['mtime'])!r}:ino:{info.get('ino', '')}"
    return ""
