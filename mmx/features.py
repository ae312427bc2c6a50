"""Read ``features`` rows (schema.features_schema) back into per-trailer numpy arrays.

Columns are flattened row-major per trailer (``C × dim``); this module owns undoing that,
one vectorised flatten per column rather than a Python conversion per value. Which columns are
experts, and of what kind, comes from the expert registry (:mod:`mmx.experts.registry`): a
``list<float32>`` column named after a registered expert. Per-clip experts (``frames``,
``image``) are ``(C, D)``; the audio expert is ``(C, A, Da)`` with ``audio_frames``; a per-title
expert's ``(D,)`` is broadcast to ``(C, D)`` (a read-only view, no copy), and a title without
that input (a null) simply lacks the expert, so the availability mask marks it missing.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmx.experts.registry import CLIP_KINDS, expert_class, expert_columns

PER_CLIP = (*CLIP_KINDS, "title")  # kinds the network sees as one (D,) vector per clip


def audio_column(table: pa.Table | pa.Schema) -> str | None:
    """The audio expert's column of a features table (None: the table has none)."""
    found = expert_columns(table if isinstance(table, pa.Schema) else table.schema, ("audio",))
    # a run with another audio expert has its own column after the built-in one's (unused)
    return found[-1] if found else None


def audio_dim(table: pa.Table | pa.Schema) -> int | None:
    """Width of one audio frame descriptor of the table's audio expert (its declared dim)."""
    name = audio_column(table)
    return None if name is None else expert_class(name).dim


def clip_experts(table: pa.Table | pa.Schema) -> tuple[str, ...]:
    """The per-clip experts of a features table (per-title ones included), in column order."""
    return expert_columns(table if isinstance(table, pa.Schema) else table.schema, PER_CLIP)


def title_experts(names: Iterable[str]) -> tuple[str, ...]:
    """The per-title experts among ``names`` (registered experts of kind ``title``), in order:
    what :class:`~mmx.model.network.MMXNetwork` fuses late (its ``title_experts``)."""
    return tuple(n for n in names if expert_class(n).kind == "title")


def with_title_expert(
    table: pa.Table, name: str, trailer_ids: list[str], vectors: np.ndarray,
    present: np.ndarray | None = None,
) -> pa.Table:
    """``table`` (features rows) with the per-title expert ``name``'s column set: the row of
    ``trailer_ids[i]`` gets ``vectors[i]`` (``(N, D)`` float32) when ``present[i]`` (default:
    all), null otherwise, as does a row whose trailer is not listed (its title lacks the input).
    The column is ``list<float32>`` of ``D`` floats (:func:`mmx.schema.features_schema`)."""
    if expert_class(name).kind != "title":
        raise ValueError(f"expert {name!r} is not a per-title expert")
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(trailer_ids):
        raise ValueError(f"{name}: expected ({len(trailer_ids)}, D) vectors, got {vectors.shape}")
    present = np.ones(len(trailer_ids), bool) if present is None else np.asarray(present, bool)
    at = pc.index_in(table["trailer_id"], value_set=pa.array(trailer_ids, pa.string()))
    rows = at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)  # (R,) -1: absent
    keep = rows >= 0
    keep[keep] &= present[rows[keep]]
    d = vectors.shape[1]
    flat = vectors[np.where(keep, rows, 0)].reshape(-1)  # (R·D,)
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * d)
    column = pa.ListArray.from_arrays(offsets, pa.array(flat), mask=pa.array(~keep))
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), name, column)
    return table.append_column(pa.field(name, pa.list_(pa.float32())), column)


def _split_rows(column: pa.ChunkedArray, n_rows: int) -> list[np.ndarray]:
    """list<float32> column → one flat float32 array per row (views into one buffer)."""
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [flat[bounds[i] : bounds[i + 1]] for i in range(n_rows)]


def expert_dims(table: pa.Table, experts: tuple[str, ...] | None = None) -> dict[str, int]:
    """Dimension of each per-clip expert present in ``table`` (from its first row with values);
    ``experts`` defaults to :func:`clip_experts`."""
    experts = clip_experts(table) if experts is None else experts
    n = table["n_clips"].to_numpy(zero_copy_only=False)
    dims = {}
    for name in experts:
        if name not in table.column_names:
            continue
        lengths = pc.list_value_length(table[name]).fill_null(0).to_numpy(zero_copy_only=False)
        if expert_class(name).kind == "title":  # (D,) per trailer
            good = np.flatnonzero(lengths > 0)
            if len(good):
                dims[name] = int(lengths[good[0]])
            continue
        good = np.flatnonzero((n > 0) & (lengths > 0))
        if len(good):
            dims[name] = int(lengths[good[0]] // n[good[0]])
    return dims


def to_arrays(table: pa.Table, experts: tuple[str, ...] | None = None) -> list[dict]:
    """Rows of an ok-only features table → per-trailer dicts of arrays, in row order.

    Each dict: ``trailer_id``, ``features`` {expert: (C, D) float32} (per-clip experts, per-title
    ones broadcast to every clip; an expert without values for the trailer is left out),
    ``audio`` (C, A, Da) float32, ``audio_frames`` (C,) int32, ``has_audio`` bool.
    """
    n_rows = table.num_rows
    if n_rows == 0:
        return []
    n_clips = table["n_clips"].to_numpy(zero_copy_only=False).astype(np.int64)
    dims = expert_dims(table, experts)
    title = {name for name in dims if expert_class(name).kind == "title"}
    per_expert = {name: _split_rows(table[name], n_rows) for name in dims}
    audio_name = audio_column(table)
    da = audio_dim(table) or 1
    audio = (_split_rows(table[audio_name], n_rows) if audio_name
             else [np.zeros(0, np.float32)] * n_rows)
    frames = _split_rows(table["audio_frames"], n_rows)
    ids = table["trailer_id"].to_pylist()
    has_audio = table["has_audio"].to_pylist()
    out = []
    for i in range(n_rows):
        c = int(n_clips[i])
        features = {}
        for name, d in dims.items():
            x = per_expert[name][i]
            if x.size == 0 and c > 0:  # null or empty: this trailer lacks the expert
                continue
            if name in title:
                features[name] = np.broadcast_to(x.reshape(1, d), (c, d))  # (D,) → (C, D) view
            else:
                features[name] = x.reshape(c, d)  # flat (C·D,) → (C, D)
        out.append(
            {
                "trailer_id": ids[i],
                "features": features,
                # flat (C·A·Da,) → (C, A, Da)
                "audio": audio[i].reshape(c, -1, da),
                "audio_frames": frames[i].astype(np.int32),
                "has_audio": bool(has_audio[i]) and audio_name is not None,
            }
        )
    return out


def pooled(table: pa.Table, experts: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Mean and std over its clips of every expert of every ok row: name → (N, 2·D) float32.

    The simple per-trailer summary that linear probes, PCA baselines and the job's own probe
    use (audio pools over its valid 0.96 s frames). Missing values (an expert absent for a
    trailer) are zeros.
    """
    rows = to_arrays(table, experts)
    out: dict[str, np.ndarray] = {}
    dims = expert_dims(table, experts)
    audio_name = audio_column(table)
    audio = [(audio_name, audio_dim(table))] if audio_name else []
    for name, d in [*dims.items(), *audio]:
        pooled_rows = np.zeros((len(rows), 2 * d), np.float32)
        for i, row in enumerate(rows):
            if name == audio_name:
                if not row["has_audio"]:
                    continue
                valid = np.arange(row["audio"].shape[1])[None, :] < row["audio_frames"][:, None]
                x = row["audio"][valid]  # (F, Da) valid frames of all clips
            elif name in row["features"]:
                x = row["features"][name]  # (C, D)
            else:
                continue
            x = x[np.isfinite(x).all(axis=1)]
            if len(x):
                pooled_rows[i] = np.concatenate([x.mean(axis=0), x.std(axis=0)])
        out[name] = pooled_rows
    return out
