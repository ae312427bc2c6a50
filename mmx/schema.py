"""Every Parquet table of mmx, defined once.

Intermediate tables (``features``) carry one row per input trailer with its per-clip expert
features flattened row-major (``C × dim`` float32), so training reads a trailer in one row.
The published tables (``trailers``, ``scenes``, ``subgenres``, ``neighbours``) are the
analysts' contract (DESIGN §4).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STATUSES = ("ok", "excluded", "failed")
SPLITS = ("train", "val", "test", "unlabelled", "unseen")
GENRE_VOCAB_KEY = b"mmx.genre_vocab"

_f32_list = pa.list_(pa.float32())
_str_list = pa.list_(pa.string())

# One row per input file as discovered: where it is, its store version tag, its content.
INPUTS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("version", pa.string()),  # S3 ETag / local mtime: unchanged ⇒ fingerprint reused
        ("fingerprint", pa.string()),  # "<size>-<sha256>" of the bytes
    ]
)

# One row per input file after decode + shots + experts (ok rows carry features): the built-in
# experts' columns. A run with other experts uses features_schema(names), which appends one
# list<float32> column per further expert (named after it); these layouts never change, so
# cached features of existing archives stay valid.
FEATURES = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("uri", pa.string()),
        ("fingerprint", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("fps", pa.float64()),
        ("n_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("has_audio", pa.bool_()),
        ("n_shots", pa.int32()),
        ("n_clips", pa.int32()),
        ("clip_start", pa.list_(pa.int64())),  # (C,) first frame of each kept clip
        ("clip_end", pa.list_(pa.int64())),  # (C,) end frame, exclusive
        ("appearance", _f32_list),  # (C × 1280) row-major
        ("scene", _f32_list),  # (C × D_scene)
        ("motion", _f32_list),  # (C × D_motion)
        ("audio", _f32_list),  # (C × A × 128): A audio frames per clip, zero padded
        ("audio_frames", pa.list_(pa.int32())),  # (C,) real audio frames per clip
        ("decode_s", pa.float64()),  # seconds spent decoding + CPU experts
        # a small JPEG of the trailer (mmx.ingest.thumbnail); null in rows cached before it
        ("thumbnail", pa.binary()),
    ]
)



def features_schema(experts: Sequence[str] = ()) -> pa.Schema:
    """:data:`FEATURES` plus one ``list<float32>`` column per expert of ``experts`` that is not
    already one of its columns, in the order given. A per-clip expert's column holds
    ``C × dim`` floats row-major, an audio expert's ``C × A × dim``, a per-title expert's
    ``dim`` (null: the trailer lacks that input). Which expert a column holds, and its kind,
    is the expert registry's (:mod:`mmx.experts.registry`); this only lays out the table."""
    out = FEATURES
    for name in experts:
        if name in out.names:
            if not is_vector_column(out, name):
                raise ValueError(f"expert {name!r} would shadow the features column {name!r}")
            continue
        out = out.append(pa.field(name, _f32_list))
    return out


def is_vector_column(table_schema: pa.Schema, name: str) -> bool:
    """Whether ``name`` is a ``list<float32>`` column of ``table_schema`` (an expert's)."""
    i = table_schema.get_field_index(name)
    return i >= 0 and table_schema.field(i).type == _f32_list


TRAILERS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("n_clips", pa.int32()),
        ("genres", _str_list),
        ("predicted_genres", _str_list),
        ("suggested_genres", _str_list),
        ("genre_scores", _f32_list),  # published as float32[G] (see published())
        ("subgenre", pa.int32()),
        ("previous_subgenre", pa.int32()),  # its sub-genre in the previous snapshot (null: none)
        ("embedding", _f32_list),  # published as float32[D] (see published())
        ("split", pa.string()),
        ("duration_s", pa.float64()),
        ("fingerprint", pa.string()),
        ("uri", pa.string()),
        ("source_version", pa.string()),  # the store's version tag of uri when fingerprinted
    ]
)

SCENES = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("clip_idx", pa.int32()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
    ]
)

SUBGENRES = pa.schema(
    [
        ("subgenre", pa.int32()),
        ("size", pa.int64()),
        ("top_genres", _str_list),  # most over-represented genres (lift vs the archive)
        ("top_concepts", _str_list),  # most over-represented ImageNet concepts of its clips
        ("exemplars", _str_list),  # trailers nearest the centroid first
        ("centroid", _f32_list),  # unit-norm centre in the embedding space; float32[D]
    ]
)

NEIGHBOURS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("rank", pa.int32()),
        ("neighbour_id", pa.string()),
        ("score", pa.float32()),
    ]
)

# One row per trailer with a thumbnail (``thumbnails.parquet``, drawn by ``mmx report``); a
# trailer featurised before thumbnails existed has a null ``jpeg``.
THUMBNAILS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("jpeg", pa.binary()),  # ≤ 160 px wide JPEG of a frame of its longest kept shot
    ]
)

# The archive's metadata sidecar as mmx.metadata normalises it (``<archive>/metadata.csv`` or
# ``.parquet``): one row per title, sorted by trailer_id; a null cell is a missing field (masked
# downstream).
METADATA = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("title", pa.string()),
        ("plot", pa.string()),
        ("year", pa.int32()),
        ("runtime_min", pa.float32()),
        ("poster", pa.string()),  # path relative to the archive, POSIX-style, normalised
    ]
)

# Per-title digests of the metadata a snapshot's embeddings were made with
# (``title_metadata.parquet`` in the snapshot; mmx.metadata.fingerprints): an incremental run
# re-embeds the titles whose digest changed.
METADATA_FINGERPRINTS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("fingerprint", pa.string()),  # SHA-256 hex of the title's expert fields
    ]
)

TABLES = {
    "trailers": TRAILERS,
    "scenes": SCENES,
    "subgenres": SUBGENRES,
    "neighbours": NEIGHBOURS,
}


def with_vocab(schema: pa.Schema, vocab: Sequence[str]) -> pa.Schema:
    """``schema`` with the genre vocabulary stored under ``mmx.genre_vocab`` (JSON list)."""
    meta = dict(schema.metadata or {})
    meta[GENRE_VOCAB_KEY] = json.dumps(list(vocab)).encode()
    return schema.with_metadata(meta)


def vocab_of(schema: pa.Schema) -> list[str]:
    """The genre vocabulary stored in a table's schema metadata."""
    raw = (schema.metadata or {}).get(GENRE_VOCAB_KEY)
    if raw is None:
        raise KeyError("schema has no mmx.genre_vocab metadata")
    return list(json.loads(raw))


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema`` (so a stage with no rows still publishes its table)."""
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table``'s columns to ``schema`` (raises if a column is missing)."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"table lacks columns {missing} of its schema")
    return table.select(schema.names).cast(schema)


# The vector columns of the published tables: fixed_size_list<float32, n> once n is known
# (DuckDB FLOAT[n], polars Array, Arrow tensor views). Snapshots published before carry
# list<float32>; every reader goes through matrix(), which takes both.
VECTOR_COLUMNS = {"embedding", "genre_scores", "centroid"}


def vector_type(n: int) -> pa.DataType:
    """``fixed_size_list<float32, n>``, the published type of an n-float vector column."""
    return pa.list_(pa.float32(), n)


def published(schema: pa.Schema, **sizes: int) -> pa.Schema:
    """``schema`` with its vector columns named in ``sizes`` as ``float32[n]``.

    ``published(TRAILERS, embedding=D, genre_scores=G)``; a size of 0 (unknown: no trailer
    embedded, no genre model) keeps ``list<float32>``. Metadata is kept.
    """
    unknown = set(sizes) - (VECTOR_COLUMNS & set(schema.names))
    if unknown:
        raise ValueError(f"not a vector column of this schema: {sorted(unknown)}")
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"{name}: vector size must be >= 0, got {n}")
        if n:
            i = schema.get_field_index(name)
            schema = schema.set(i, schema.field(i).with_type(vector_type(n)))
    return schema


def vectors(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, n) float32 matrix → ``float32[n]`` column (one zero-copy Arrow array)."""
    m = np.ascontiguousarray(values, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"vectors: expected an (N, n) matrix, got shape {m.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def matrix(column: pa.ChunkedArray | pa.Array, dim: int = 0) -> np.ndarray:
    """A vector column of equal-length, non-null rows → (N, D) float32 (no Python lists).

    Takes ``float32[D]`` (published since issue 14) and ``list<float32>`` (the run's own
    folders and older snapshots) alike; an empty column gives (0, ``dim``).
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    if col.null_count:
        raise ValueError(f"matrix: {col.null_count} of {n} vectors are null")
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size % n:
        raise ValueError(f"matrix: {flat.size} floats do not make {n} equal-length vectors")
    return flat.reshape(n, -1)
