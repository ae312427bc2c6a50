"""In-memory training data: per-trailer expert arrays, padding collation, splits and sharding.

Owns the batch dict the model reads (see :mod:`mmx.model.network`), the stable 80/10/10 split,
the positive weights of the BCE loss and the per-epoch DDP sharding, where every worker gets
the same number of equally sized batches (so collective ops never wait on a missing peer).

A DDP worker need not hold every trailer's features: a :class:`TrailerSet` read from the
features store with an ``owner`` array (:meth:`TrailerSet.load_features`) holds only the rows
its worker owns and keeps metadata-only placeholders (id, labels, primary genre) for the rest,
so ids, labels and splits are global and identical on every worker while its features are
about 1/world_size of the store. Batches (:func:`shard_batches`) and inference shares
(:func:`shares`) then come from the rows each worker owns.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

from mmx import schema, storage
from mmx.features import audio_column, clip_experts, expert_dims, to_arrays
from mmx.features import audio_dim as audio_dim_of
from mmx.model.network import AUDIO

SPLITS = ("train", "val", "test")
READ_BATCH_ROWS = 64  # features rows decoded at a time when a worker reads its share


@dataclass
class TrailerFeatures:
    """One trailer's features, as plain numpy arrays.

    ``features``: non-audio expert name → (C, D_e) float32, one row per clip (shot); a missing
    name means the expert is unavailable for the trailer; rows with a non-finite value count as
    unavailable for that clip. ``audio`` (C, A, Da) float32 with ``audio_frames`` (C,) int valid
    frames per clip; ``has_audio=False`` marks the audio expert unavailable. ``labels`` (G,)
    multi-hot or None (unlabelled). ``primary`` is the index of the primary genre (used for the
    silhouette); -1 = the first positive label in vocabulary order. ``expert_mask`` optionally
    overrides availability per clip: name → (C,) bool. ``held=False`` marks a metadata-only
    placeholder (:meth:`placeholder`): a trailer whose features another worker holds.
    """

    trailer_id: str
    features: dict[str, np.ndarray]
    audio: np.ndarray | None = None
    audio_frames: np.ndarray | None = None
    has_audio: bool = False
    labels: np.ndarray | None = None
    primary: int = -1
    expert_mask: dict[str, np.ndarray] = field(default_factory=dict)
    held: bool = True

    @classmethod
    def placeholder(
        cls, trailer_id: str, labels: np.ndarray | None = None, primary: int = -1
    ) -> TrailerFeatures:
        """A trailer known by its id and labels only (its features live on another worker)."""
        return cls(trailer_id, {}, labels=labels, primary=primary, held=False)

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
    ``labelled`` (B,) bool. Raises ValueError for a placeholder (features not held here).
    """
    missing = [it.trailer_id for it in items if not it.held]
    if missing:
        raise ValueError(
            f"{len(missing)} trailer(s) of the batch ({', '.join(missing[:3])}…) are placeholders "
            "whose features this worker does not hold: a batch must only take rows the worker "
            "owns (see shard_batches / shares)"
        )
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
    (N,) int64 (-1 = none) are precomputed for metrics and sampling; ``held`` (N,) bool says
    which rows hold features (False: a placeholder). ``owner`` (N,) int64 is the worker that
    holds each row's features, carried through :meth:`subset`; None (the default) means every
    worker holds every row.
    """

    def __init__(
        self,
        trailers: Sequence[TrailerFeatures],
        expert_dims: Mapping[str, int],
        audio_dim: int | None,
        genres: Sequence[str],
        owner: np.ndarray | None = None,
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
        self.held = np.array([t.held for t in self.trailers], dtype=bool)  # (N,)
        if owner is not None:
            owner = np.asarray(owner, dtype=np.int64)
            if owner.shape != (len(self.trailers),):
                raise ValueError(f"owner must be ({len(self.trailers)},), got {owner.shape}")
        self.owner = owner
        self.splits: np.ndarray | None = None  # (N,) "train"/"val"/"test"/"" once assigned

    @classmethod
    def from_metadata(
        cls,
        trailer_ids: Sequence[str],
        labels: Mapping[str, Sequence[str]],
        genres: Sequence[str],
        audio_dim: int | None = None,
    ) -> TrailerSet:
        """Placeholders only (ids, labels, primary genres; no features, no expert dims): what
        splits and ownership are planned on before any features are read. Labels as in
        :func:`trailer_set_from_table`. ``audio_dim`` defaults (None) to the width of the
        built-in features table's audio expert (:func:`store_audio_dim` reads a store's); 0: no
        audio expert."""
        if audio_dim is None:
            audio_dim = audio_dim_of(schema.FEATURES)
        index = {g: i for i, g in enumerate(genres)}
        items = [
            TrailerFeatures.placeholder(t, *_label_row(labels.get(t, ()), index))
            for t in trailer_ids
        ]
        return cls(items, {}, audio_dim, genres)

    def load_features(
        self, store: str, owner: np.ndarray | None = None, rank: int = 0
    ) -> TrailerSet:
        """This set with the features of the rows ``owner == rank`` (every row when ``owner``
        is None) read from the features store ``store`` (a Parquet file or folder of parts,
        local or s3://; ok rows, schema ``mmx.schema.FEATURES``); the other rows stay
        placeholders. Labels, primary genres and splits are kept; ``owner`` is set.

        The store is streamed in small batches filtered on ``trailer_id`` (:func:`read_features`),
        so the peak memory is about this worker's share of the features (plus about one row
        group being decoded), not the whole store.
        ``expert_dims`` are those found in the rows read (see :func:`expert_dims`).
        """
        mine = np.arange(len(self)) if owner is None else np.flatnonzero(np.asarray(owner) == rank)
        position = {self.trailer_ids[i]: int(i) for i in mine}
        items = list(self.trailers)
        found = np.zeros(len(self), dtype=bool)
        dims: dict[str, int] = {}
        for rows, batch_dims in read_features(store, [self.trailer_ids[i] for i in mine]):
            for name, d in batch_dims.items():
                if dims.setdefault(name, d) != d:
                    raise ValueError(f"{store}: expert {name} is {dims[name]}-d and {d}-d")
            for row in rows:
                i = position[row["trailer_id"]]
                if found[i]:
                    raise ValueError(f"{store}: trailer {row['trailer_id']} has two ok rows")
                found[i] = True
                meta = self.trailers[i]
                items[i] = TrailerFeatures(**row, labels=meta.labels, primary=meta.primary)
        lost = mine[~found[mine]]
        if lost.size:
            raise ValueError(f"{store}: no ok features row for {lost.size} trailer(s), e.g. "
                             f"{self.trailer_ids[int(lost[0])]}")
        order = store_experts(store)  # the store's column order, the same on every worker
        dims = {name: dims[name] for name in order if name in dims}
        out = TrailerSet(items, dims, self.audio_dim, self.genres, owner)
        out.splits = self.splits
        return out

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
            [self.trailers[i] for i in idx], self.expert_dims, self.audio_dim, self.genres,
            None if self.owner is None else self.owner[idx],
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

    def input_sums(self) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """Per expert: sum (D,) and sum of squares (D,) float64 and the count of the available
        clips (audio: valid frames) of the rows this set holds (placeholders add nothing).

        Accumulated per trailer, so nothing is concatenated; partial sums of disjoint rows (one
        per worker) add up to the sums of their union (:func:`stats_from_sums`).
        """
        dims = dict(self.expert_dims)
        if self.audio_dim:
            dims[AUDIO] = self.audio_dim
        s1 = {name: np.zeros(d) for name, d in dims.items()}
        s2 = {name: np.zeros(d) for name, d in dims.items()}
        count = dict.fromkeys(dims, 0)
        for t in self.trailers:
            if not t.held:
                continue
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
        return {name: (s1[name], s2[name], count[name]) for name in dims}

    def input_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-expert mean and std (D,) float32 over the available clips (audio: valid frames)
        of the rows this set holds; for the statistics of rows spread over workers see
        :func:`mmx.train.loop.input_stats`."""
        return stats_from_sums(self.input_sums())


def stats_from_sums(
    sums: Mapping[str, tuple[np.ndarray, np.ndarray, int | float]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:meth:`TrailerSet.input_sums` → per-expert mean and std (D,) float32 (std >= 1e-6).

    A dimension that does not vary over the training rows (std at most :data:`CONSTANT_REL`
    of the expert's median std) gets std = inf: standardised, it is 0 for every input. Its
    weights never learned anything, and a 1e-6 floor turned any other value it takes at
    inference into millions (a poster CNN's unit that no training poster fires).
    """
    stats = {}
    for name, (s1, s2, count) in sums.items():
        n = max(float(count), 1.0)
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        typical = float(np.median(std)) if std.size else 0.0
        constant = std <= CONSTANT_REL * typical if typical > 0 else np.ones(std.shape, bool)
        std = np.where(constant, np.inf, np.maximum(std, 1e-6))
        stats[name] = (mean.astype(np.float32), std.astype(np.float32))
    return stats


CONSTANT_REL = 1e-3  # a dimension this much quieter than its expert's median is constant


def read_ok_ids(store: str) -> list[str]:
    """The ids of the ok rows of the features store ``store``, sorted: reads only its small
    ``trailer_id`` and ``status`` columns."""
    table = storage.read_table(store, ["trailer_id", "status"])
    ids = table.filter(pc.equal(table["status"], "ok"))["trailer_id"]
    return sorted(ids.to_pylist())


def store_experts(store: str) -> tuple[str, ...]:
    """The per-clip (and per-title) experts of the features store ``store``, in column order
    (:func:`mmx.features.clip_experts` of its schema)."""
    fs, path = storage.filesystem(store)
    return clip_experts(pads.dataset(path, filesystem=fs, format="parquet").schema)


def store_audio_dim(store: str) -> int:
    """Width of one audio frame of the features store's audio expert (0: it has none)."""
    fs, path = storage.filesystem(store)
    return audio_dim_of(pads.dataset(path, filesystem=fs, format="parquet").schema) or 0


def read_features(
    store: str, trailer_ids: Sequence[str], batch_rows: int = READ_BATCH_ROWS
) -> Iterator[tuple[list[dict[str, Any]], dict[str, int]]]:
    """Stream the ok rows of ``trailer_ids`` from the features store ``store`` (a Parquet file
    or folder of parts, local or s3://): per batch of at most ``batch_rows`` rows read, the
    :func:`mmx.features.to_arrays` dicts of the wanted rows (store order) and their expert dims.

    One file at a time, one batch at a time, filtered as it is read (no pre-buffering of whole
    row groups), so what stays in memory is the wanted rows plus about one row group's column
    chunk. Every file is still read: the store is not grouped by worker.
    """
    if not trailer_ids:
        return
    fs, path = storage.filesystem(store)
    files = pads.dataset(path, filesystem=fs, format="parquet").files  # "_"/"." files skipped
    wanted = pa.array(sorted(set(trailer_ids)), pa.string())
    for file in files:
        reader = pq.ParquetFile(file, filesystem=fs, pre_buffer=False, buffer_size=1 << 20)
        found = reader.schema_arrow
        audio = audio_column(found)
        columns = ["trailer_id", "n_clips", "has_audio", "audio_frames",
                   *([audio] if audio else []), *clip_experts(found)]
        try:
            for batch in reader.iter_batches(batch_size=batch_rows, columns=[*columns, "status"],
                                             use_threads=False):
                keep = pc.and_(pc.equal(batch["status"], "ok"),
                               pc.is_in(batch["trailer_id"], value_set=wanted))
                if pc.any(keep).as_py():
                    table = pa.Table.from_batches([batch.filter(keep).select(columns)])
                    yield to_arrays(table), expert_dims(table)
        finally:
            reader.close()


def plan_owners(data: TrailerSet, world_size: int) -> np.ndarray | None:
    """The worker that loads each row of ``data`` (rows in trailer_id order, splits assigned):
    (N,) int64 ``position % world_size``, interleaved so every worker gets a near-equal share
    of every split. None (every worker loads every row) with one worker, or when some worker
    would own none of the rows a phase trains on (all rows; the labelled train rows), which
    only happens in archives of a handful of trailers: it could not fill a batch."""
    if world_size <= 1:
        return None
    owner = np.arange(len(data), dtype=np.int64) % world_size  # (N,)
    lists = [np.arange(len(data))]
    if data.splits is not None:
        lists.append(np.flatnonzero(data.labelled & (data.splits == "train")))
    for rows in lists:
        if rows.size and np.bincount(owner[rows], minlength=world_size).min() == 0:
            return None
    return owner


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

    For rows every worker holds. The rows are shuffled by a permutation that depends only on
    (seed, epoch), so every worker (and a resumed run) sees the same order. ``batch_size`` is the
    *global* batch; it is capped at ``n`` and rounded down to a multiple of ``world_size`` (at
    least ``world_size``), so a global batch never holds the same trailer twice when
    ``n >= world_size`` (a duplicate would be its own negative in NT-Xent). The last global
    batch is padded by wrapping around to the start of the permutation, so every worker gets
    the same number of batches of ``b`` rows; worker ``rank`` takes the ``rank``-th slice of
    each global batch.
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


def shares(n: int, world_size: int, owner: np.ndarray | None = None) -> list[np.ndarray]:
    """Every worker's share of a list of ``n`` rows: per rank, the (m_r,) int64 positions into
    the list that it handles, in list order.

    ``owner`` (n,) is the owner of each listed row (the shares are then the rows each worker
    holds); None (every worker holds every row) gives strided shares, position % world_size.
    Every worker computes every worker's share, so gathered results can be put back in place.
    """
    if owner is None:
        return [np.arange(r, n, world_size, dtype=np.int64) for r in range(world_size)]
    owner = np.asarray(owner, dtype=np.int64)
    if owner.shape != (n,):
        raise ValueError(f"owner must be ({n},), got {owner.shape}")
    if n and (owner.min() < 0 or owner.max() >= world_size):
        raise ValueError(f"owners outside [0, {world_size}): planned for another world size?")
    order = np.argsort(owner, kind="stable")  # (n,) positions grouped by owner, in list order
    bounds = np.cumsum(np.bincount(owner, minlength=world_size))[:-1]
    return np.split(order.astype(np.int64), bounds)


def shard_batches(
    rows: np.ndarray,
    owner: np.ndarray | None,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    batch_size: int,
) -> list[np.ndarray]:
    """This worker's batches of ``rows`` (row numbers into a set whose ``owner`` is given) for
    one epoch: a list of (b,) int64 row numbers, the same count and size on every worker.

    Without ``owner`` every worker holds every row: :func:`shard_indices` over ``rows`` (a
    shuffle shared by all workers, each taking its slice of every global batch). With ``owner``
    a worker batches only the rows it owns (its :func:`shares` of ``rows``): its share is shuffled
    by the (seed, epoch) permutation and cut into local batches of ``batch_size // world_size``
    (``batch_size`` capped and rounded as in :func:`shard_indices`, and the local batch capped at
    the smallest share, so no worker's batch repeats a row and, as shares are disjoint, a global
    batch never holds the same trailer twice); the number of batches is set by the largest share
    and smaller shares are padded by wrapping around their permutation, so every row is seen once
    per epoch, plus the padding. With one worker both ways give :func:`shard_indices` exactly.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if owner is None:
        return [rows[b] for b in shard_indices(n, rank, world_size, epoch, seed, batch_size)]
    if n == 0:
        return []
    parts = shares(n, world_size, np.asarray(owner)[rows])
    sizes = np.array([len(p) for p in parts])  # (W,)
    if sizes.min() == 0:
        raise ValueError(
            f"worker {int(np.argmin(sizes))} owns none of the {n} rows to train on: it cannot "
            "fill a batch (plan_owners lets every worker load every row in that case)"
        )
    global_batch = max(world_size, (min(batch_size, n) // world_size) * world_size)
    local = min(global_batch // world_size, int(sizes.min()))
    n_batches = math.ceil(int(sizes.max()) / local)
    mine = rows[parts[rank]]  # (m_r,)
    perm = np.random.default_rng([seed, epoch]).permutation(len(mine))
    padded = np.resize(mine[perm], n_batches * local)  # wraps around to the start
    return list(padded.reshape(n_batches, local))  # (n_batches, b)


def _label_row(
    names: Sequence[str], index: Mapping[str, int]
) -> tuple[np.ndarray | None, int]:
    """A trailer's labels: (G,) float32 multi-hot of its genres in ``index`` (None if none)
    and its primary genre, the first one listed (-1 if none)."""
    known = [index[g] for g in names if g in index]
    if not known:
        return None, -1
    y = np.zeros(len(index), dtype=np.float32)
    y[known] = 1.0
    return y, known[0]


def trailer_set_from_table(
    table: pa.Table, labels: Mapping[str, Sequence[str]], genres: Sequence[str]
) -> TrailerSet:
    """A :class:`TrailerSet` from ok rows of the ``features`` table and a labels mapping.

    The first genre a trailer's labels list is its primary genre (for the silhouette);
    genres outside ``genres`` are ignored; trailers without labels are unlabelled.
    """
    index = {g: i for i, g in enumerate(genres)}
    items = []
    for row in to_arrays(table):
        y, primary = _label_row(labels.get(row["trailer_id"], ()), index)
        items.append(TrailerFeatures(**row, labels=y, primary=primary))
    return TrailerSet(items, expert_dims(table), audio_dim_of(table), genres)
