"""The archive's optional metadata sidecar: titles, plots, years, runtimes and posters.

Owns reading and validating ``<archive>/metadata.csv`` or ``<archive>/metadata.parquet``
(:func:`read_metadata`), the normalised table (:data:`mmx.schema.METADATA`, one row per title,
sorted by ``trailer_id``), per-title digests of the fields that feed experts (so an incremental
run re-embeds exactly the titles whose metadata changed, the way labels are tracked:
:func:`fingerprints`, :func:`digest`, :func:`changed_titles`), poster bytes
(:func:`read_poster`) and the small numeric metadata features (:func:`numeric_features`).

Columns: ``trailer_id`` (required; ``a.mp4`` names the trailer ``a`` as in the labels file),
``title``, ``plot``, ``year``, ``runtime_min``, ``poster`` (a path relative to the archive, or an
absolute path / URI inside it); any other column is ignored and so is a missing optional one.
Empty cells are allowed: a title without a plot, poster or year is masked downstream. What
cannot be read unambiguously raises :class:`MetadataError` naming the file and line (CSV) or
row (Parquet): both files present, no ``trailer_id`` column, an empty or duplicate id, a year or
runtime that is not a number or not plausible, a poster path that leaves the archive.

Pure pyarrow/numpy over :mod:`mmx.storage`: local paths and ``s3://`` alike, no Ray, no torch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmx import schema, storage
from mmx.archive import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

SIDECAR_NAMES = ("metadata.csv", "metadata.parquet")
FIELDS = ("title", "plot", "year", "runtime_min", "poster")  # the optional columns
# the fields whose change re-embeds a title (the poster also by its file's version tag)
EXPERT_FIELDS = ("title", "plot", "year", "runtime_min", "poster")
YEAR_RANGE = (1870, 2100)  # plausible release years (inclusive)
RUNTIME_RANGE = (0.0, 1500.0)  # minutes: > 0 and at most 25 h

# numeric features (numeric_features): fixed constants, not fitted to the archive, so a title's
# features never move when other titles arrive (an incremental run reuses the model)
NUMERIC_FEATURES = ("year", "log_runtime", "has_year", "has_runtime")
NUMERIC_DIM = len(NUMERIC_FEATURES)
YEAR_CENTRE, YEAR_SCALE, YEAR_CLIP = 1990.0, 30.0, 2.0  # (year - 1990) / 30 in [-2, 2]
RUNTIME_CENTRE, RUNTIME_SCALE, RUNTIME_CLIP = math.log(100.0), 0.25, 4.0  # log-minutes


class MetadataError(ValueError):
    """The metadata sidecar (or one of its posters) cannot be read unambiguously; the message
    names the file and the line (CSV) or row (Parquet)."""


@dataclass(frozen=True)
class MetadataTable:
    """A validated sidecar.

    Attributes:
        uri: the sidecar file read.
        archive: the archive it belongs to (poster paths are relative to it).
        table: :data:`mmx.schema.METADATA`, one row per title, sorted by ``trailer_id``.
        ignored: ids of the sidecar that are not trailers of the archive (dropped, warned).
    """

    uri: str
    archive: str
    table: pa.Table
    ignored: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def ids(self) -> list[str]:
        return self.table["trailer_id"].to_pylist()

    def row(self, trailer_id: str) -> dict[str, object] | None:
        """One title's fields (None: the sidecar does not name it)."""
        rows = self.select([trailer_id]).to_pylist()
        return rows[0] if rows[0]["has_metadata"] else None

    def restrict(self, ids: Iterable[str]) -> MetadataTable:
        """The sidecar without the rows naming none of ``ids`` (the archive's trailers): they
        are dropped with a warning and listed in ``ignored`` (a sidecar may describe titles
        whose trailer is not there yet)."""
        known = pa.array(sorted(set(ids)), pa.string())
        keep = pc.is_in(self.table["trailer_id"], value_set=known)
        dropped = tuple(self.table.filter(pc.invert(keep))["trailer_id"].to_pylist())
        if dropped:
            shown = ", ".join(dropped[:5]) + (", …" if len(dropped) > 5 else "")
            log.warning("metadata file %s: %d trailer_id(s) not in the archive, ignored: %s",
                        self.uri, len(dropped), shown)
        return replace(self, table=self.table.filter(keep), ignored=self.ignored + dropped)

    def select(self, ids: Sequence[str]) -> pa.Table:
        """The rows of ``ids`` in that order (:data:`mmx.schema.METADATA` plus a bool
        ``has_metadata``); a title the sidecar lacks is a row of nulls with ``has_metadata``
        false."""
        idx = _positions(self.table, ids)
        out = self.table.take(idx)
        out = out.set_column(0, "trailer_id", pa.array(list(ids), pa.string()))
        return out.append_column("has_metadata", pc.is_valid(idx))


def sidecar_uri(archive_uri: str) -> str | None:
    """The archive's sidecar file (None: there is none). Raises :class:`MetadataError` when
    both ``metadata.csv`` and ``metadata.parquet`` are there (which one holds the truth?)."""
    found = [u for u in (storage.join(archive_uri, n) for n in SIDECAR_NAMES)
             if storage.exists(u)]
    if len(found) > 1:
        raise MetadataError(f"archive {archive_uri} has two metadata sidecars, {found[0]} and "
                            f"{found[1]}: keep one")
    return found[0] if found else None


def read_metadata(archive_uri: str, ids: Iterable[str] | None = None) -> MetadataTable | None:
    """The archive's validated sidecar, or None when it has none.

    ``ids`` (the archive's trailer ids, when known): rows naming another id are dropped with a
    warning (:meth:`MetadataTable.restrict`; read it at start-up, restrict it once the
    archive is listed). Raises
    :class:`MetadataError` for what cannot be read unambiguously (see the module docstring).
    """
    uri = sidecar_uri(archive_uri)
    if uri is None:
        return None
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as err:
        raise MetadataError(f"metadata file {uri}: cannot read it ({err})") from None
    rows = _parquet_rows(uri, data) if uri.endswith(".parquet") else _csv_rows(uri, data)
    table = _normalise(uri, archive_uri, rows)
    meta = MetadataTable(uri=uri, archive=archive_uri, table=table)
    return meta if ids is None else meta.restrict(ids)


# ------------------------------------------------------------------------------ reading
# (line or row number, {column: raw cell}) per record, from either format
_Rows = list[tuple[int, dict[str, object]]]


def _csv_rows(uri: str, data: bytes) -> tuple[str, _Rows]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise MetadataError(
            f"metadata file {uri}: line {line} is not UTF-8 (byte 0x{data[err.start]:02x}); "
            "save the file as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [(n or "").strip() for n in reader.fieldnames or []]
    _check_columns(uri, reader.fieldnames)
    wanted = ("trailer_id", *FIELDS)
    rows = [(reader.line_num, {k: row.get(k) for k in wanted}) for row in reader]
    return "line", rows


def _parquet_rows(uri: str, data: bytes) -> tuple[str, _Rows]:
    try:
        table = pq.read_table(io.BytesIO(data))
    except pa.ArrowException as err:
        raise MetadataError(f"metadata file {uri}: not a Parquet file ({err})") from None
    _check_columns(uri, table.column_names)
    present = [c for c in ("trailer_id", *FIELDS) if c in table.column_names]
    cols = {c: table[c].to_pylist() for c in present}
    rows = [(i + 1, {c: cols[c][i] for c in present}) for i in range(table.num_rows)]
    return "row", rows


def _check_columns(uri: str, names: Sequence[str]) -> None:
    if "trailer_id" not in names:
        raise MetadataError(
            f"metadata file {uri} lacks the column 'trailer_id' (has: {list(names)}; expected "
            f"trailer_id and any of {list(FIELDS)})")


def _normalise(uri: str, archive_uri: str, found: tuple[str, _Rows]) -> pa.Table:
    """Raw records → :data:`mmx.schema.METADATA` sorted by id, every cell checked."""
    where, rows = found
    out: dict[str, list[object]] = {n: [] for n in schema.METADATA.names}
    seen: dict[str, int] = {}
    for num, raw in rows:
        at = f"metadata file {uri}: {where} {num}"
        tid = _text(raw.get("trailer_id")) or ""
        if tid.lower().endswith(VIDEO_EXTENSIONS):  # "a.mp4" names the trailer "a"
            tid = tid.rsplit(".", 1)[0]
        if not tid:
            raise MetadataError(f"{at} has an empty trailer_id")
        if tid in seen:
            raise MetadataError(f"metadata file {uri}: trailer_id {tid!r} appears twice "
                                f"({where}s {seen[tid]} and {num}); give each title one row")
        seen[tid] = num
        out["trailer_id"].append(tid)
        out["title"].append(_text(raw.get("title")))
        out["plot"].append(_text(raw.get("plot")))
        out["year"].append(_year(at, raw.get("year")))
        out["runtime_min"].append(_runtime(at, raw.get("runtime_min")))
        poster = _text(raw.get("poster"))
        out["poster"].append(None if poster is None else _poster_path(at, archive_uri, poster))
    table = pa.table(out, schema=schema.METADATA)
    return table.sort_by("trailer_id")


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _number(at: str, column: str, value: object) -> float | None:
    """A numeric cell: None when empty (or NaN), else a finite float; anything else raises."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise MetadataError(f"{at}: {column} {value!r} is not a number")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MetadataError(f"{at}: {column} {value!r} is not a number") from None
    if math.isnan(x):
        return None
    if not math.isfinite(x):
        raise MetadataError(f"{at}: {column} {value!r} is not a finite number")
    return x


def _year(at: str, value: object) -> int | None:
    x = _number(at, "year", value)
    if x is None:
        return None
    lo, hi = YEAR_RANGE
    if x != int(x) or not lo <= x <= hi:
        raise MetadataError(f"{at}: year {value!r} is not a year in {lo}..{hi}")
    return int(x)


def _runtime(at: str, value: object) -> float | None:
    x = _number(at, "runtime_min", value)
    lo, hi = RUNTIME_RANGE
    if x is not None and not lo < x <= hi:
        raise MetadataError(f"{at}: runtime_min {value!r} is not a runtime in minutes "
                            f"(> {lo:g} and <= {hi:g})")
    return x


def _poster_path(at: str, archive_uri: str, raw: str) -> str:
    """The poster's path relative to the archive, POSIX-style and normalised; raises when it
    leaves the archive (``..``, an absolute path or URI outside it)."""
    path = raw.replace("\\", "/")
    if "://" in path or path.startswith("/"):
        root, full = _absolute(archive_uri), _absolute(path)
        if full.startswith(root + "/"):
            return full[len(root) + 1:]
        raise MetadataError(f"{at}: poster {raw!r} is outside the archive {archive_uri} "
                            "(give a path relative to the archive)")
    rel = posixpath.normpath(path)
    if rel in (".", "..") or rel.startswith("../"):
        raise MetadataError(f"{at}: poster {raw!r} leaves the archive {archive_uri} "
                            "(give a path inside it)")
    return rel


def _absolute(uri: str) -> str:
    """A local path (made absolute) or URI, normalised (``..`` resolved, no trailing slash)."""
    uri = uri.replace("\\", "/")
    uri = uri.removeprefix("file://")
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.normpath('/' + rest)[1:]}"
    return posixpath.normpath(os.path.abspath(uri).replace("\\", "/"))


def _positions(table: pa.Table, ids: Sequence[str]) -> pa.Array:
    """Row of each of ``ids`` in ``table`` (null where absent), as an int32 array."""
    return pc.index_in(pa.array(list(ids), pa.string()),
                       value_set=table["trailer_id"].combine_chunks())


# ------------------------------------------------------------------------------ posters
def poster_uri(archive_uri: str, rel: str) -> str:
    """Where the poster ``rel`` (a path of :data:`mmx.schema.METADATA`'s ``poster``) lives."""
    rel = _poster_path(f"poster {rel!r}", archive_uri, rel)
    return storage.join(archive_uri, *rel.split("/"))


def read_poster(archive_uri: str, rel: str) -> bytes:
    """The image bytes of poster ``rel`` of the archive (JPEG, PNG, WebP, GIF or BMP).

    Raises :class:`MetadataError` when the file is missing or is not an image (the caller
    masks that title's poster); storage trouble (S3 errors, credentials) propagates as it is.
    """
    uri = poster_uri(archive_uri, rel)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise MetadataError(f"poster {rel!r} of archive {archive_uri}: no such file ({uri})"
                            ) from None
    if not _is_image(data):
        raise MetadataError(f"poster {rel!r} of archive {archive_uri}: not a JPEG, PNG, WebP, "
                            f"GIF or BMP image ({len(data)} bytes starting {data[:8]!r})")
    return data


def _is_image(data: bytes) -> bool:
    return (data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def poster_versions(archive_uri: str) -> dict[str, str]:
    """Archive-relative path → ``<size>:<version tag>`` of every image file under the archive,
    from one listing (no file is opened): lets :func:`fingerprints` see a poster replaced in
    place without reading it."""
    root = _absolute(archive_uri)
    out = {}
    for uri, size, version in storage.iter_archive(archive_uri, extensions=IMAGE_EXTENSIONS):
        full = _absolute(uri)
        rel = full[len(root) + 1:] if full.startswith(root + "/") else full
        out[rel] = f"{size}:{version}"
    return out


# ------------------------------------------------------------------------------ digests
def fingerprints(
    meta: MetadataTable, versions: Mapping[str, str] | None = None
) -> dict[str, str]:
    """trailer_id → SHA-256 (hex) of the title's fields that feed experts
    (:data:`EXPERT_FIELDS`), and of its poster file's version (``versions`` from
    :func:`poster_versions`; a poster missing from it counts as missing). An edited plot,
    year or poster changes that title's digest only; row order and the format do not."""
    cols = {n: meta.table[n].to_pylist() for n in ("trailer_id", *EXPERT_FIELDS)}
    out = {}
    for i, tid in enumerate(cols["trailer_id"]):
        fields = {n: cols[n][i] for n in EXPERT_FIELDS}
        if versions is not None and fields["poster"] is not None:
            fields["poster_version"] = versions.get(str(fields["poster"]), "missing")
        text = json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        out[tid] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return out


def digest(prints: Mapping[str, str]) -> str:
    """SHA-256 (hex) of the whole sidecar as its per-title :func:`fingerprints`: equal for two
    sidecars that say the same of the same titles ("" for no sidecar: ``{}``)."""
    if not prints:
        return ""
    text = json.dumps(dict(sorted(prints.items())), separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def changed_titles(
    ids: Iterable[str], before: Mapping[str, str], now: Mapping[str, str]
) -> list[str]:
    """The titles of ``ids`` whose metadata fingerprint differs between two runs (added to,
    edited in or removed from the sidecar), sorted: those an incremental run re-embeds."""
    return sorted(t for t in ids if before.get(t) != now.get(t))


SNAPSHOT_FILE = "title_metadata.parquet"  # a snapshot's per-title metadata fingerprints


def write_fingerprints(snapshot_uri: str, prints: Mapping[str, str]) -> None:
    """Record in a snapshot the per-title fingerprints its embeddings were made with
    (:data:`SNAPSHOT_FILE`, :data:`mmx.schema.METADATA_FINGERPRINTS`, sorted by id)."""
    ids = sorted(prints)
    table = pa.table({"trailer_id": ids, "fingerprint": [prints[t] for t in ids]},
                     schema=schema.METADATA_FINGERPRINTS)
    storage.write_table(table, storage.join(snapshot_uri, SNAPSHOT_FILE))


def read_fingerprints(snapshot_uri: str | None) -> dict[str, str]:
    """The per-title fingerprints a snapshot recorded (``{}``: no snapshot, or one published
    without metadata: every title that has metadata now counts as changed, once)."""
    if snapshot_uri is None:
        return {}
    uri = storage.join(snapshot_uri, SNAPSHOT_FILE)
    if not storage.exists(uri):
        return {}
    table = storage.read_table(uri)
    return dict(zip(table["trailer_id"].to_pylist(), table["fingerprint"].to_pylist(),
                    strict=True))


def record(meta: MetadataTable | None, prints: Mapping[str, str]) -> dict[str, object]:
    """What a run reports of the sidecar it read: the file, the digest, how many titles it
    describes and how many have each field (JSON-safe; ``{"sidecar": None}`` without one)."""
    if meta is None:
        return {"sidecar": None}
    t = meta.table
    return {"sidecar": meta.uri, "digest": digest(prints), "n_titles": t.num_rows,
            "ignored_ids": len(meta.ignored),
            **{f"with_{f}": t.num_rows - t[f].null_count for f in FIELDS}}


# ------------------------------------------------------------------------------ inputs
def plots(meta: MetadataTable | None, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The plot of each of ``ids`` ("" where there is none) and mask bool (N,) of those that
    have one: the text expert's input."""
    if meta is None:
        return [""] * len(ids), np.zeros(len(ids), bool)
    col = meta.select(ids)["plot"]
    return [p or "" for p in col.to_pylist()], col.is_valid().to_numpy(zero_copy_only=False)


def posters(meta: MetadataTable | None, ids: Sequence[str]) -> list[str | None]:
    """The poster path (relative to the archive) of each of ``ids``, None where there is none:
    read each with :func:`read_poster` (a missing file masks that poster)."""
    if meta is None:
        return [None] * len(ids)
    return meta.select(ids)["poster"].to_pylist()


# ------------------------------------------------------------------------------ features
def numeric_features(
    meta: MetadataTable | None, ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The numeric metadata of ``ids``: values float32 (N, :data:`NUMERIC_DIM`) and mask bool
    (N,) (false: the title has neither year nor runtime, so its row is all zeros).

    Columns (:data:`NUMERIC_FEATURES`): ``(year - 1990) / 30`` clipped to [-2, 2]; log runtime
    standardised about 100 min (``(ln(min) - ln 100) / 0.25``, clipped to [-4, 4]); then 1.0 /
    0.0 indicators of a known year and runtime. A missing value is 0 with its indicator 0.
    """
    n = len(ids)
    if meta is None or n == 0:
        return np.zeros((n, NUMERIC_DIM), np.float32), np.zeros(n, bool)
    rows = meta.select(ids)
    year = rows["year"].to_numpy(zero_copy_only=False).astype(np.float64)  # (N,) NaN = null
    runtime = rows["runtime_min"].to_numpy(zero_copy_only=False).astype(np.float64)
    has_year, has_runtime = ~np.isnan(year), ~np.isnan(runtime)
    values = np.zeros((n, NUMERIC_DIM), np.float32)  # (N, 4)
    values[:, 0] = np.where(has_year, np.clip((year - YEAR_CENTRE) / YEAR_SCALE, -YEAR_CLIP,
                                              YEAR_CLIP), 0.0)
    log_rt = np.log(np.where(has_runtime, runtime, 1.0))
    values[:, 1] = np.where(has_runtime, np.clip((log_rt - RUNTIME_CENTRE) / RUNTIME_SCALE,
                                                 -RUNTIME_CLIP, RUNTIME_CLIP), 0.0)
    values[:, 2], values[:, 3] = has_year, has_runtime
    return values, has_year | has_runtime
