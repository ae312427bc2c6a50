"""Read ``features`` rows (schema.FEATURES) back into per-trailer numpy arrays.

Columns are flattened row-major per trailer (``C × dim``); this module owns undoing that,
one vectorised flatten per column rather than a Python conversion per value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FRAME_EXPERTS = ("appearance", "scene", "motion")  # per-clip vectors, (C, D)
AUDIO_DIM = 128  # per 0.96 s audio frame


def _split_rows(column: pa.ChunkedArray, n_rows: int) -> list[np.ndarray]:
    """list<float32> column → one flat float32 array per row (views into one buffer)."""
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [flat[bounds[i] : bounds[i + 1]] for i in range(n_rows)]


def expert_dims(table: pa.Table, experts: tuple[str, ...] = FRAME_EXPERTS) -> dict[str, int]:
    """Dimension of each per-clip expert present in ``table`` (from its first ok row)."""
    n = table["n_clips"].to_numpy(zero_copy_only=False)
    dims = {}
    for name in experts:
        if name not in table.column_names:
            continue
        lengths = pc.list_value_length(table[name]).fill_null(0).to_numpy(zero_copy_only=False)
        good = np.flatnonzero((n > 0) & (lengths > 0))
        if len(good):
            dims[name] = int(lengths[good[0]] // n[good[0]])
    return dims


def to_arrays(table: pa.Table, experts: tuple[str, ...] = FRAME_EXPERTS) -> list[dict]:
    """Rows of an ok-only features table → per-trailer dicts of arrays, in row order.

    Each dict: ``trailer_id``, ``features`` {expert: (C, D) float32}, ``audio`` (C, A, 128)
    float32, ``audio_frames`` (C,) int32, ``has_audio`` bool.
    """
    n_rows = table.num_rows
    if n_rows == 0:
        return []
    n_clips = table["n_clips"].to_numpy(zero_copy_only=False).astype(np.int64)
    dims = expert_dims(table, experts)
    per_expert = {name: _split_rows(table[name], n_rows) for name in dims}
    audio = _split_rows(table["audio"], n_rows)
    frames = _split_rows(table["audio_frames"], n_rows)
    ids = table["trailer_id"].to_pylist()
    has_audio = table["has_audio"].to_pylist()
    out = []
    for i in range(n_rows):
        c = int(n_clips[i])
        out.append(
            {
                "trailer_id": ids[i],
                # flat (C·D,) → (C, D)
                "features": {name: per_expert[name][i].reshape(c, dims[name]) for name in dims},
                # flat (C·A·128,) → (C, A, 128)
                "audio": audio[i].reshape(c, -1, AUDIO_DIM),
                "audio_frames": frames[i].astype(np.int32),
                "has_audio": bool(has_audio[i]),
            }
        )
    return out


def pooled(table: pa.Table, experts: tuple[str, ...] = FRAME_EXPERTS) -> dict[str, np.ndarray]:
    """Mean and std over its clips of every expert of every ok row: name → (N, 2·D) float32.

    The simple per-trailer summary that linear probes, PCA baselines and the job's own probe
    use (audio pools over its valid 0.96 s frames). Missing values (an expert absent for a
    trailer) are zeros.
    """
    rows = to_arrays(table, experts)
    out: dict[str, np.ndarray] = {}
    dims = expert_dims(table, experts)
    for name, d in [*dims.items(), ("audio", AUDIO_DIM)]:
        pooled_rows = np.zeros((len(rows), 2 * d), np.float32)
        for i, row in enumerate(rows):
            if name == "audio":
                if not row["has_audio"]:
                    continue
                valid = np.arange(row["audio"].shape[1])[None, :] < row["audio_frames"][:, None]
                x = row["audio"][valid]  # (F, 128) valid frames of all clips
            else:
                x = row["features"][name]  # (C, D)
            x = x[np.isfinite(x).all(axis=1)]
            if len(x):
                pooled_rows[i] = np.concatenate([x.mean(axis=0), x.std(axis=0)])
        out[name] = pooled_rows
    return out
