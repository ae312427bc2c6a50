"""Every Parquet table of mmx, defined once.

Intermediate tables (``features``) carry one row per input trailer with its per-clip expert
features flattened row-major (``C × dim`` float32), so training reads a trailer in one row.
The published tables (``trailers``, ``scenes``, ``subgenres``, ``neighbours``) are the
analysts' contract (DESIGN §4).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

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

# One row per input file after decode + shots + experts (ok rows carry features).
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

TRAILERS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("n_clips", pa.int32()),
        ("genres", _str_list),
        ("predicted_genres", _str_list),
        ("suggested_genres", _str_list),
        ("genre_scores", _f32_list),
        ("subgenre", pa.int32()),
        ("previous_subgenre", pa.int32()),  # its sub-genre in the previous snapshot (null: none)
        ("embedding", _f32_list),
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
        ("centroid", _f32_list),  # unit-norm centre in the embedding space
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
