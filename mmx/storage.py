"""Local and s3:// storage through fsspec: atomic writes, Parquet I/O, snapshots and LATEST.

A snapshot is written completely under ``<out>/snapshots/<name>/`` and only then does
``<out>/LATEST`` (a one-line text file naming it) move, so readers never see a half-written
snapshot. Credentials for s3:// come from the standard AWS chain (env, profile, instance role)
via s3fs; an endpoint override comes from ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``.
Nothing here logs credentials.

Object stores are opened without fsspec's directory-listing cache: the pipeline's Ray workers
write files (feature cache, checkpoints, index shards) that the driver lists and reads next,
and a listing cached earlier in this process would hide them.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

LATEST = "LATEST"
SNAPSHOTS = "snapshots"
COMPLETE = "_COMPLETE"


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


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` atomically: local files go through a temp file and ``os.replace``;
    an object-store PUT is atomic already."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path) if "://" in uri else os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
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


def publish(out: str, name: str) -> None:
    """Mark snapshot ``name`` complete, then move ``LATEST`` to it (the commit point)."""
    snap = snapshot_uri(out, name)
    write_text(join(snap, COMPLETE), name + "\n")
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


def snapshots(out: str) -> list[str]:
    """Names of the complete snapshots under ``out``, oldest first."""
    fs, path = filesystem(join(out, SNAPSHOTS))
    if not fs.exists(path):
        return []
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    return [n for n in names if fs.exists(posixpath.join(path, n, COMPLETE))]


def prune(out: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete snapshots (never the one LATEST names)."""
    current = latest(out)
    names = snapshots(out)
    doomed = [n for n in names[: max(0, len(names) - keep)] if snapshot_uri(out, n) != current]
    for name in doomed:
        fs, path = filesystem(snapshot_uri(out, name))
        fs.rm(path, recursive=True)
    return doomed


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
