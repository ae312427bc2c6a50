"""In-memory training data: per-trailer expert arrays, padding collation, splits and sharding.

Owns the batch dict the model reads (see :mod:`mmx.model.network`), the stable 80/10/10 split,
the positive weights of the BCE loss and the per-epoch DDP sharding, where every worker gets
the same number of equally sized batches (so collective ops never wait on a missing peer).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from mmx.model.network import AUDIO

SPLITS = ("train", "val", "test")


@dataclass
class TrailerFeatures:
    """One trailer's features, as plain numpy arrays.

    ``features``: non-audio expert name → (C, D_e) float32, one row per clip (shot); a missing
    name means the expert is unavailable for the trailer; rows with a non-finite value count as
    unavailable for that clip. ``audio`` (C, A, Da) float32 with ``audio_frames`` (C,) int valid
    frames per clip; ``has_audio=False`` marks the audio expert unavailable. ``labels`` (G,)
    multi-hot or None (unlabelled). ``primary`` is the index of the primary genre (used for the
    silhouette); -1 = the first positive label in vocabulary order. ``expert_mask`` optionally
    overrides availability per clip: name → (C,) bool.
    """

    trailer_id: str
    features: dict[str, np.ndarray]
    audio: np.ndarray | None = None
    audio_frames: np.ndarray | None = None
    has_audio: bool = False
    labels: np.ndarray | None = None
    primary: int = -1
    expert_mask: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_clips(self) -> int:
        if self.features:
            return int(next(iter(self.features.values())).shape[0])
        return 0 if self.audio is None else int(self.audio.shape[0])

    def __post_init__(self) -> None:
        c = self.n_clips
        for name, x in self.features.items():
            if x.ndim != 2 or x.shape[0] != c:
                raise ValueError(
                    f"{self.trailer_id}: {name} features must be (C={c}, D), got {x.shape}"
                )
        if self.audio is not None:
            if self.audio.ndim != 3 or self.audio.shape[0] != c:
                raise ValueError(
                    f"{self.trailer_id}: audio must be (C={c}, A, Da), got {self.audio.shape}"
                )
            if self.audio_frames is None:
                self.audio_frames = np.full(c, self.audio.shape[1], dtype=np.int64)
        if self.labels is not None and self.primary < 0:
            positives = np.flatnonzero(np.asarray(self.labels) > 0)
            self.primary = int(positives[0]) if positives.size else -1


def collate(
    items: Sequence[TrailerFeatures],
    expert_dims: Mapping[str, int],
    audio_dim: int | None,
    n_genres: int,
) -> dict[str, Any]:
    """Pad a list of trailers to the batch's max clip (and audio-frame) count.

    Returns the model's batch dict: ``experts`` {name: (B, C, D_e) float32}, ``audio``
    (B, C, A, Da) float32 and ``audio_mask`` (B, C, A) bool (only with ``audio_dim``),
    ``expert_mask`` (B, C, E) bool in the order ``[*expert_dims, "audio"]``, ``clip_mask``
    (B, C) bool, ``n_clips`` (B,) int64, ``labels`` (B, G) float32 (zeros when unlabelled) and
    ``labelled`` (B,) bool.
    """
    n_batch = len(items)
    n_clips = np.array([it.n_clips for it in items], dtype=np.int64)  # (B,)
    n_slots = max(int(n_clips.max(initial=0)), 1)
    names = list(expert_dims)
    n_experts = len(names) + (1 if audio_dim else 0)
    clip_mask = np.arange(n_slots)[None, :] < n_clips[:, None]  # (B, C)
    expert_mask = np.zeros((n_batch, n_slots, n_experts), dtype=bool)  # (B, C, E)
    experts = {
        name: np.zeros((n_batch, n_slots, d), dtype=np.float32) for name, d in expert_dims.items()
    }
    labels = np.zeros((n_batch, n_genres), dtype=np.float32)
    labelled = np.zeros(n_batch, dtype=bool)
    for i, it in enumerate(items):
        c = it.n_clips
        for e, name in enumerate(names):
            x = it.features.get(name)
            if x is None:
                continue
            ok = np.isfinite(x).all(axis=1)  # (C,)
            if name in it.expert_mask:
                ok &= np.asarray(it.expert_mask[name], dtype=bool)
            experts[name][i, :c] = np.where(ok[:, None], x, 0.0)
            expert_mask[i, :c, e] = ok
        if it.labels is not None:
            labels[i] = it.labels
            labelled[i] = True
    batch: dict[str, Any] = {
        "experts": {name: torch.from_numpy(x) for name, x in experts.items()},
        "clip_mask": torch.from_numpy(clip_mask),
        "n_clips": torch.from_numpy(n_clips),
        "labels": torch.from_numpy(labels),
        "labelled": torch.from_numpy(labelled),
    }
    if audio_dim:
        n_frames = max([it.audio.shape[1] for it in items if it.audio is not None] + [1])
        audio = np.zeros((n_batch, n_slots, n_frames, audio_dim), dtype=np.float32)  # (B, C, A, Da)
        frames = np.zeros((n_batch, n_slots), dtype=np.int64)  # (B, C) valid frames per clip
        for i, it in enumerate(items):
            if it.audio is None or not it.has_audio:
                continue
            c, a = it.audio.shape[:2]
            ok = np.isfinite(it.audio).all(axis=(1, 2))  # (C,)
            if AUDIO in it.expert_mask:
                ok &= np.asarray(it.expert_mask[AUDIO], dtype=bool)
            audio[i, :c, :a] = np.where(ok[:, None, None], it.audio, 0.0)
            frames[i, :c] = np.where(ok, np.minimum(it.audio_frames, a), 0)
        audio_mask = np.arange(n_frames)[None, None, :] < frames[:, :, None]  # (B, C, A)
        expert_mask[:, :, -1] = frames > 0
        batch["audio"] = torch.from_numpy(audio)
        batch["audio_mask"] = torch.from_numpy(audio_mask)
    batch["expert_mask"] = torch.from_numpy(expert_mask & clip_mask[:, :, None])
    return batch


class TrailerSet:
    """An indexable set of :class:`TrailerFeatures` with the dims and genre vocabulary.

    ``labels`` (N, G) float32 (zeros for unlabelled), ``labelled`` (N,) bool and ``primary``
    (N,) int64 (-1 = none) are precomputed for metrics and sampling.
    """

    def __init__(
        self,
        trailers: Sequence[TrailerFeatures],
        expert_dims: Mapping[str, int],
        audio_dim: int | None,
        genres: Sequence[str],
    ) -> None:
        self.trailers = list(trailers)
        self.expert_dims = dict(expert_dims)
        self.audio_dim = audio_dim
        self.genres = tuple(genres)
        g = len(self.genres)
        self.trailer_ids = [t.trailer_id for t in self.trailers]
        self.labels = np.zeros((len(self.trailers), g), dtype=np.float32)  # (N, G)
        self.labelled = np.zeros(len(self.trailers), dtype=bool)  # (N,)
        for i, t in enumerate(self.trailers):
            if t.labels is not None:
                self.labels[i] = t.labels
                self.labelled[i] = True
        self.primary = np.array([t.primary for t in self.trailers], dtype=np.int64)  # (N,)
        self.splits: np.ndarray | None = None  # (N,) "train"/"val"/"test"/"" once assigned

    def assign_splits(self, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> np.ndarray:
        """Stratify the labelled trailers into train/val/test (:func:`stratified_splits`);
        unlabelled ones get ``""``. Returns and keeps the (N,) assignment."""
        rows = np.flatnonzero(self.labelled)
        splits = np.full(len(self), "", dtype=object)
        splits[rows] = stratified_splits([self.trailer_ids[i] for i in rows], self.labels[rows],
                                         fractions)
        self.splits = splits
        return splits

    def __len__(self) -> int:
        return len(self.trailers)

    def __getitem__(self, i: int) -> TrailerFeatures:
        return self.trailers[i]

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Collated batch of the given rows, plus ``index`` (B,) int64 (the row numbers)."""
        idx = np.asarray(indices, dtype=np.int64)
        batch = collate(
            [self.trailers[i] for i in idx], self.expert_dims, self.audio_dim, len(self.genres)
        )
        batch["index"] = torch.from_numpy(idx)
        return batch

    def subset(self, indices: Sequence[int] | np.ndarray) -> TrailerSet:
        idx = np.asarray(indices, dtype=np.int64)
        out = TrailerSet(
            [self.trailers[i] for i in idx], self.expert_dims, self.audio_dim, self.genres
        )
        if self.splits is not None:
            out.splits = self.splits[idx]
        return out

    def split(self, name: str) -> TrailerSet:
        """The labelled trailers of split ``name`` (train/val/test); stratifies the labelled
        trailers with the default fractions first if :meth:`assign_splits` was not called."""
        if self.splits is None:
            self.assign_splits()
        assert self.splits is not None
        return self.subset(np.flatnonzero(self.labelled & (self.splits == name)))

    def input_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-expert mean and std (D,) float32 over the available clips (audio: valid frames).

        Accumulated as float64 sums per trailer, so nothing is concatenated.
        """
        dims = dict(self.expert_dims)
        if self.audio_dim:
            dims[AUDIO] = self.audio_dim
        s1 = {name: np.zeros(d) for name, d in dims.items()}
        s2 = {name: np.zeros(d) for name, d in dims.items()}
        count = dict.fromkeys(dims, 0)
        for t in self.trailers:
            rows = {
                name: x[np.isfinite(x).all(axis=1)]
                for name, x in t.features.items()
                if name in dims
            }
            if self.audio_dim and t.has_audio and t.audio is not None:
                valid = (
                    np.arange(t.audio.shape[1])[None, :] < np.asarray(t.audio_frames)[:, None]
                )  # (C, A)
                frames = t.audio[valid]  # (F, Da)
                rows[AUDIO] = frames[np.isfinite(frames).all(axis=1)]
            for name, x in rows.items():
                x64 = x.astype(np.float64)
                s1[name] += x64.sum(axis=0)
                s2[name] += (x64 * x64).sum(axis=0)
                count[name] += len(x64)
        stats = {}
        for name in dims:
            n = max(count[name], 1)
            mean = s1[name] / n
            std = np.sqrt(np.maximum(s2[name] / n - mean * mean, 0.0))
            stats[name] = (mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))
        return stats


def _hash_unit(trailer_id: str) -> int:
    """A stable 64-bit number per trailer id (SHA-1), the split's only source of order."""
    return int.from_bytes(hashlib.sha1(trailer_id.encode("utf-8")).digest()[:8], "big")


def split_of(trailer_id: str) -> str:
    """Stable 80/10/10 split by the SHA-1 of the trailer id: ``"train"``, ``"val"``, ``"test"``.

    Only a fallback for a single trailer with nothing to stratify against; training splits
    come from :func:`stratified_splits`.
    """
    bucket = _hash_unit(trailer_id) % 100
    return "train" if bucket < 80 else "val" if bucket < 90 else "test"


def stratified_splits(
    trailer_ids: Sequence[str],
    labels: np.ndarray,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> np.ndarray:
    """Iterative multi-label stratification (Sechidis et al., ECML 2011) into train/val/test.

    ``labels (N, G)`` multi-hot of the labelled trailers ``trailer_ids``; ``fractions`` of
    (train, val, test). Genres are served rarest first: each trailer carrying the rarest genre
    left goes to the split that still wants most of that genre (ties: the split that wants most
    trailers, then train before val before test), so every genre is spread over the splits in
    proportion, down to a rare genre's few examples. Trailers are visited in the order of their
    id's hash: the result is a deterministic function of the ids and labels, independent of row
    order. Returns (N,) object array of ``"train"``, ``"val"``, ``"test"``.
    """
    y = np.asarray(labels, dtype=np.float64) > 0  # (N, G)
    n = len(trailer_ids)
    frac = np.asarray(fractions, dtype=np.float64)
    frac = frac / frac.sum()
    want_total = frac * n  # (S,)
    want = np.outer(frac, y.sum(axis=0))  # (S, G)
    order = np.argsort([_hash_unit(t) for t in trailer_ids], kind="stable")  # (N,)
    y_ordered = y[order]
    assigned = np.full(n, -1, dtype=np.int64)  # in hash order
    left = np.ones(n, dtype=bool)
    while left.any():
        counts = y_ordered[left].sum(axis=0)  # (G,) positives still to place
        if not counts.any():
            break
        genre = int(np.argmin(np.where(counts > 0, counts, np.inf)))
        for row in np.flatnonzero(left & y_ordered[:, genre]):
            # most wanted for this genre, then most wanted overall, then the earlier split
            key = np.lexsort((np.arange(len(frac)), -want_total, -want[:, genre]))
            split = int(key[0])
            assigned[row] = split
            want[split] -= y_ordered[row]
            want_total[split] -= 1
            left[row] = False
    for row in np.flatnonzero(left):  # trailers without any genre: by overall need
        split = int(np.argmax(want_total))
        assigned[row] = split
        want_total[split] -= 1
    # Serving genres first can leave a split a trailer or two short of its size: move the
    # trailers the short split's genres want most (in hash order) from the fullest ones. The
    # test part gets at least its share, rounded up.
    target = np.floor(frac * n).astype(np.int64)
    target[-1] = int(np.ceil(frac[-1] * n - 1e-9))
    target[0] = n - target[1:].sum()
    sizes = np.bincount(assigned, minlength=len(frac))
    for short in np.argsort(-(target - sizes)):
        while sizes[short] < target[short]:
            donor = int(np.argmax(sizes - target))
            rows = np.flatnonzero(assigned == donor)
            gain = y_ordered[rows] @ (want[short] - want[donor])  # (R,) how wanted it is
            row = int(rows[np.argmax(gain)])
            assigned[row] = short
            want[short] -= y_ordered[row]
            want[donor] += y_ordered[row]
            sizes[short] += 1
            sizes[donor] -= 1
    out = np.empty(n, dtype=object)
    out[order] = np.asarray(SPLITS, dtype=object)[assigned]
    return out


def pos_weight(y_train: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """BCE positive weight per genre = negatives / positives, clamped to [1/max, max]: (G,) float32.

    A genre without positives gets ``max_weight`` (it never fires as a target anyway).
    """
    y = np.asarray(y_train, dtype=np.float64)
    pos = y.sum(axis=0)
    neg = len(y) - pos
    w = np.where(pos > 0, neg / np.maximum(pos, 1.0), max_weight)
    return np.clip(w, 1.0 / max_weight, max_weight).astype(np.float32)


def shard_indices(
    n: int, rank: int, world_size: int, epoch: int, seed: int, batch_size: int
) -> list[np.ndarray]:
    """This worker's batches of row numbers for one epoch: a list of (b,) int64 arrays.

    The rows are shuffled by a permutation that depends only on (seed, epoch), so every worker
    (and a resumed run) sees the same order. ``batch_size`` is the *global* batch; it is capped
    at ``n`` and rounded down to a multiple of ``world_size`` (at least ``world_size``), so a
    global batch never holds the same trailer twice when ``n >= world_size`` (a duplicate would
    be its own negative in NT-Xent). The last global batch is padded by wrapping around to the
    start of the permutation, so every worker gets the same number of batches of ``b`` rows;
    worker ``rank`` takes the ``rank``-th slice of each global batch.
    """
    if n <= 0:
        return []
    global_batch = max(world_size, (min(batch_size, n) // world_size) * world_size)
    local = global_batch // world_size
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    n_batches = math.ceil(n / global_batch)
    padded = np.resize(perm, n_batches * global_batch)  # wraps around to the start
    grid = padded.reshape(n_batches, world_size, local)  # (n_batches, W, b)
    return list(grid[:, rank])


def eval_indices(n: int, rank: int, world_size: int) -> np.ndarray:
    """Rows (m,) int64 this worker evaluates: a strided share, padded to equal length."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    m = math.ceil(n / world_size)
    return np.resize(np.arange(n, dtype=np.int64), m * world_size).reshape(m, world_size)[
        :, rank
    ]  # (m,)


def trailer_set_from_table(
    table: pa.Table, labels: Mapping[str, Sequence[str]], genres: Sequence[str]
) -> TrailerSet:
    """A :class:`TrailerSet` from ok rows of the ``features`` table and a labels mapping.

    The first genre a trailer's labels list is its primary genre (for the silhouette);
    genres outside ``genres`` are ignored; trailers without labels are unlabelled.
    """
    from mmx.features import AUDIO_DIM, expert_dims, to_arrays

    index = {g: i for i, g in enumerate(genres)}
    items = []
    for row in to_arrays(table):
        names = [g for g in labels.get(row["trailer_id"], []) if g in index]
        y = None
        primary = -1
        if names:
            y = np.zeros(len(genres), dtype=np.float32)
            y[[index[g] for g in names]] = 1.0
            primary = index[names[0]]
        items.append(TrailerFeatures(**row, labels=y, primary=primary))
    return TrailerSet(items, expert_dims(table), AUDIO_DIM, genres)
