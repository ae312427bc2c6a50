"""The input archive: which files are trailers, their ids, content fingerprints, and labels.

``trailer_id`` is the file name without its extension. Two files with one name (``a.mp4``
beside ``a.mov``, or ``x/a.mp4`` and ``y/a.mp4``) cannot both hold it: the one that held it in
the previous snapshot keeps it (else the shallowest, then the first by path); the others are
``excluded`` under their archive-relative path with the reason, so every file still has
exactly one row.

A fingerprint is the file size plus a SHA-256 of its bytes, so two names holding the same
bytes are recognised as one trailer (the second is excluded as a duplicate) and an
incremental run can tell changed files. Hashing reads every byte; a nightly run over an
archive on S3 need not: a file whose location, size and version tag (S3 ETag, local mtime)
are those of a fingerprint taken earlier reuses it (:func:`reuse_fingerprints`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq

from mmx import storage

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")
# Files that live beside the videos but are not inputs: labels, the metadata sidecar
# (mmx.metadata) and its poster images.
SIDECAR_EXTENSIONS = (".csv", ".json", ".parquet", ".yaml", ".yml", ".md", ".txt")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


@dataclass(frozen=True)
class InputFile:
    """One file of the archive, before decoding."""

    trailer_id: str
    uri: str
    size_bytes: int
    version: str = ""  # the store's version tag (S3 ETag, local mtime + inode); "" = none
    clash: str = ""  # why this file cannot have its name as trailer_id ("" = it has it)


def trailer_id_of(uri: str) -> str:
    """``s3://b/x/My Film (2020).mp4`` → ``My Film (2020)``."""
    name = posixpath.basename(uri.replace("\\", "/"))
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def list_inputs(archive: str, keep: Mapping[str, str] | None = None) -> list[InputFile]:
    """Every non-hidden, non-sidecar file under ``archive`` (videos and would-be videos);
    labels, ``metadata.csv``/``.parquet`` and images (posters) are not inputs.

    Files with a video extension and anything unknown are inputs: an unknown file that is
    not a video ends ``failed`` with a reason rather than vanishing silently. ``keep`` maps a
    trailer_id to the uri that held it before; it decides which of several files with one
    name keeps the id (see the module docstring).
    """
    keep = keep or {}
    root = storage.filesystem(archive)[1]
    files = []
    for uri, size, version in storage.iter_archive(archive, extensions=("",)):
        base = posixpath.basename(uri)
        if base.startswith(".") or base.lower().endswith(SIDECAR_EXTENSIONS + IMAGE_EXTENSIONS):
            continue
        files.append(InputFile(trailer_id_of(uri), uri, size, version))
    by_id: dict[str, list[InputFile]] = {}
    for f in sorted(files, key=lambda f: (f.uri.count("/"), f.uri)):  # shallowest first
        by_id.setdefault(f.trailer_id, []).append(f)
    taken = set(by_id)
    out = []
    for tid, group in by_id.items():
        owner = next((f for f in group if f.uri == keep.get(tid)), group[0])
        out.append(owner)
        for f in group:
            if f is owner:
                continue
            new_id = _relative(f.uri, root)
            while new_id in taken:
                new_id += "~"
            taken.add(new_id)
            reason = (f"trailer_id {tid!r} is taken by {_relative(owner.uri, root)} "
                      "(file names must be unique without their extension)")
            out.append(replace(f, trailer_id=new_id, clash=reason))
    return sorted(out, key=lambda f: f.trailer_id)


def _relative(uri: str, root: str) -> str:
    return posixpath.relpath(storage.filesystem(uri)[1], root)


def reuse_fingerprints(
    files: Iterable[InputFile], known: Mapping[tuple[str, str], str]
) -> dict[str, str]:
    """uri → fingerprint for the files that need no hashing: ``known`` maps (uri, version
    tag) to a fingerprint taken earlier, and the size must match too. Files without a version
    tag, and earlier fingerprints of unreadable files, are always hashed again."""
    reused = {}
    for f in files:
        fp = known.get((f.uri, f.version)) if f.version else None
        if fp and fp.startswith(f"{f.size_bytes}-"):
            reused[f.uri] = fp
    return reused


def fingerprint(uri: str, chunk: int = 1 << 22) -> str:
    """``<size>-<sha256>`` of the file's bytes, streamed in 4 MiB chunks."""
    fs, path = storage.filesystem(uri)
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return f"{size}-{digest.hexdigest()}"


def find_duplicates(
    rows: Iterable[tuple[str, str]], owners: Iterable[str] = ()
) -> dict[str, str]:
    """Map each duplicate trailer_id to the id whose content it repeats.

    ``rows`` are (trailer_id, fingerprint). The original of a group is the id among ``owners``
    (the trailers already published ``ok``: an existing trailer keeps its name when a copy
    appears under a name that sorts first), else the smallest id.
    """
    owned = set(owners)
    first: dict[str, str] = {}
    dupes: dict[str, str] = {}
    # owners first, then by id: the first id seen of a content is its original
    for tid, fp in sorted(rows, key=lambda r: (r[0] not in owned, r[0])):
        if fp in first:
            dupes[tid] = first[fp]
        else:
            first[fp] = tid
    return dupes


class LabelsError(ValueError):
    """The labels file cannot be read unambiguously (the message names the file and line)."""


def read_labels(uri: str) -> dict[str, list[str]]:
    """Labels file → {trailer_id: [genre, …]} (empty list = unlabelled).

    CSV: UTF-8 (a byte-order mark is fine), columns ``trailer_id,genres`` with genres
    pipe-separated. Parquet: ``trailer_id`` and ``genres: list<string>``. An id written with its
    video extension (``a.mp4``) is the trailer ``a``. Raises LabelsError naming the line (CSV) or
    row for what cannot be read unambiguously: a missing file, another encoding,
    a missing or unknown column, an empty or duplicate id.
    """
    try:
        data = storage.read_bytes(uri)
    except OSError as err:
        raise LabelsError(f"labels file {uri}: cannot read it ({err})") from None
    if uri.lower().endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        _check_columns(uri, table.column_names)
        ids = table.column("trailer_id").to_pylist()
        genres = table.column("genres").to_pylist()
        rows = [(i + 1, str(t or ""), [str(g).strip() for g in (gs or []) if g])
                for i, (t, gs) in enumerate(zip(ids, genres, strict=True))]
        return _labels_from_rows(uri, rows, "row")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise LabelsError(
            f"labels file {uri}: line {line} is not UTF-8 (byte 0x{data[err.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [(n or "").strip() for n in reader.fieldnames or []]
    _check_columns(uri, reader.fieldnames)
    rows = []
    for row in reader:
        raw = (row.get("genres") or "").strip()
        rows.append((reader.line_num, (row.get("trailer_id") or ""),
                     [g.strip() for g in raw.split("|") if g.strip()]))
    return _labels_from_rows(uri, rows, "line")


def _labels_from_rows(
    uri: str, rows: Iterable[tuple[int, str, list[str]]], where: str
) -> dict[str, list[str]]:
    """(line or row number, id, genres) → the labels mapping, ids normalised and checked."""
    labels: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for num, raw_id, genres in rows:
        tid = raw_id.strip()
        if tid.lower().endswith(VIDEO_EXTENSIONS):  # "a.mp4" names the trailer "a"
            tid = tid.rsplit(".", 1)[0]
        if not tid:
            raise LabelsError(f"labels file {uri}: {where} {num} has an empty trailer_id")
        if tid in seen:
            raise LabelsError(
                f"labels file {uri}: trailer_id {tid!r} appears twice ({where}s {seen[tid]} and "
                f"{num}); give each trailer one row, its genres joined by '|'"
            )
        seen[tid] = num
        labels[tid] = genres
    return labels


def _check_columns(uri: str, names: Iterable[str]) -> None:
    missing = sorted({"trailer_id", "genres"} - set(names))
    if missing:
        raise LabelsError(f"labels file {uri} lacks column(s) {missing} "
                         "(expected: trailer_id,genres)")
    unknown = sorted(set(names) - {"trailer_id", "genres"})
    if unknown:
        raise LabelsError(f"labels file {uri} has unknown column(s) {unknown} "
                         "(expected: trailer_id,genres)")


def genre_vocabulary(labels: dict[str, list[str]]) -> list[str]:
    """Sorted distinct genres of a labels mapping."""
    return sorted({g for gs in labels.values() for g in gs})


def normalise_labels(labels: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The labels mapping as a comparison sees it: ids sorted, each trailer's genres distinct
    and sorted, unlabelled trailers (no genre) left out, as a row without genres is no label."""
    out = {tid: sorted(set(genres)) for tid, genres in labels.items()}
    return {tid: out[tid] for tid in sorted(out) if out[tid]}


def labels_digest(labels: Mapping[str, Iterable[str]]) -> str:
    """SHA-256 (hex) of the normalised labels mapping (:func:`normalise_labels`): equal for two
    labels files that label the same trailers with the same genres, whatever their row or genre
    order, format (CSV or Parquet) or unlabelled rows."""
    text = json.dumps(normalise_labels(labels), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def labels_record(labels: Mapping[str, Iterable[str]]) -> dict[str, object]:
    """What a snapshot records of the labels it published (``labels.json``): their digest,
    genre vocabulary and how many trailers they label."""
    normal = normalise_labels(labels)
    return {"digest": labels_digest(normal), "genres": genre_vocabulary(normal),
            "n_labelled": len(normal)}


def labels_table(labels: dict[str, list[str]]) -> pa.Table:
    ids = sorted(labels)
    return pa.table(
        {"trailer_id": ids, "genres": pa.array([labels[i] for i in ids], pa.list_(pa.string()))}
    )
