"""TrailerSet collation, stable splits, positive weights and DDP sharding."""

from __future__ import annotations

import numpy as np
import pytest

from mmx.train.data import (
    TrailerFeatures,
    TrailerSet,
    collate,
    eval_indices,
    pos_weight,
    shard_indices,
    split_of,
    stratified_splits,
)

DIMS = {"appearance": 4, "scene": 3}


def _item(i: int, c: int, *, audio: bool = True, labels=None) -> TrailerFeatures:
    rng = np.random.default_rng(i)
    return TrailerFeatures(
        f"t{i}",
        {k: rng.normal(size=(c, d)).astype(np.float32) for k, d in DIMS.items()},
        audio=rng.normal(size=(c, 2 + i % 3, 5)).astype(np.float32),
        audio_frames=np.arange(c) % (3 + i % 3),
        has_audio=audio,
        labels=labels,
    )


def test_collate_pads_and_masks():
    items = [_item(0, 3, labels=np.array([1, 0, 1.0])), _item(1, 6, audio=False), _item(2, 1)]
    items[1].features["scene"][2] = np.nan  # a broken row: unavailable for that clip
    del items[2].features["scene"]  # an expert missing for a whole trailer
    b = collate(items, DIMS, 5, 3)
    assert b["experts"]["appearance"].shape == (3, 6, 4)
    assert b["audio"].shape == (3, 6, 4, 5) and b["audio_mask"].shape == (3, 6, 4)
    assert b["clip_mask"].sum(1).tolist() == [3, 6, 1]
    assert b["n_clips"].tolist() == [3, 6, 1]
    em = b["expert_mask"]  # (B, C, E): appearance, scene, audio
    assert em.shape == (3, 6, 3)
    assert em[0, :3, 0].all() and not em[0, 3:].any()  # padding is never available
    assert not em[1, 2, 1] and em[1, 3, 1]
    assert np.isfinite(b["experts"]["scene"].numpy()).all()
    assert not em[2, :, 1].any()
    assert not em[1, :, 2].any()  # has_audio=False
    assert em[0, :3, 2].tolist() == [False, True, True]  # clip 0 has 0 audio frames
    assert b["audio_mask"][0, 1].tolist() == [True, False, False, False]
    assert b["labelled"].tolist() == [True, False, False]
    assert b["labels"][0].tolist() == [1, 0, 1]


def test_trailer_set_stats_and_primary():
    items = [_item(i, 2 + i, labels=np.array([0, 1, 1.0]) if i % 2 else None) for i in range(5)]
    ds = TrailerSet(items, DIMS, 5, ["a", "b", "c"])
    assert ds.labelled.tolist() == [False, True, False, True, False]
    assert ds.primary.tolist() == [-1, 1, -1, 1, -1]
    stats = ds.input_stats()
    rows = np.concatenate([t.features["appearance"] for t in items])
    np.testing.assert_allclose(stats["appearance"][0], rows.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["appearance"][1], rows.std(0), atol=1e-5)
    frames = np.concatenate(
        [t.audio[np.arange(t.audio.shape[1])[None] < t.audio_frames[:, None]] for t in items]
    )
    np.testing.assert_allclose(stats["audio"][0], frames.mean(0), atol=1e-5)
    batch = ds.batch([4, 1])
    assert batch["index"].tolist() == [4, 1]


def test_split_is_stable_and_80_10_10():
    ids = [f"movie_{i}" for i in range(5000)]
    splits = [split_of(t) for t in ids]
    assert splits == [split_of(t) for t in ids]
    assert split_of("movie_0") == split_of("movie_0")
    frac = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert frac["train"] == pytest.approx(0.8, abs=0.03)
    assert frac["val"] == pytest.approx(0.1, abs=0.02)
    assert frac["test"] == pytest.approx(0.1, abs=0.02)


def test_stratified_split_sizes_and_spread():
    """Every genre, down to a rare one, is spread over the splits in proportion; the test part
    holds >= 20% of the labelled trailers; the result depends on ids and labels, not order."""
    rng = np.random.default_rng(0)
    n, g = 300, 8
    prior = np.array([0.4, 0.3, 0.3, 0.2, 0.15, 0.1, 0.05, 0.03])
    y = (rng.random((n, g)) < prior).astype(np.float32)
    y[y.sum(1) == 0, 0] = 1
    ids = [f"t{i:04d}" for i in range(n)]
    splits = stratified_splits(ids, y, (0.6, 0.2, 0.2))
    counts = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    assert sum(counts.values()) == n and counts["test"] >= 0.2 * n - 1
    assert abs(counts["train"] - 0.6 * n) <= 2 and abs(counts["val"] - 0.2 * n) <= 2
    for genre in range(g):
        pos = y[:, genre] > 0
        share = (splits[pos] == "test").mean()
        assert abs(share - 0.2) <= max(0.05, 1.5 / pos.sum()), (genre, share, pos.sum())
        assert (splits[pos] == "train").any()
    # the rarest genre (about 9 trailers) has members in every split
    rare = y[:, -1] > 0
    assert set(splits[rare]) == {"train", "val", "test"}
    perm = rng.permutation(n)
    again = stratified_splits([ids[i] for i in perm], y[perm], (0.6, 0.2, 0.2))
    assert list(again) == list(splits[perm])


def test_trailer_set_splits_only_labelled():
    items = [TrailerFeatures(f"t{i}", {"scene": np.zeros((3, 2), np.float32)},
                             labels=None if i % 4 == 0 else np.eye(2, dtype=np.float32)[i % 2])
             for i in range(40)]
    ds = TrailerSet(items, {"scene": 2}, None, ["A", "B"])
    splits = ds.assign_splits((0.6, 0.2, 0.2))
    assert set(splits[~ds.labelled]) == {""}
    parts = [ds.split(s) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == int(ds.labelled.sum())
    assert len(parts[2]) >= 0.2 * ds.labelled.sum() - 1


def test_pos_weight():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(pos_weight(y), [1 / 3, 3.0, 100.0], rtol=1e-6)


@pytest.mark.parametrize(
    "n,world,batch", [(37, 2, 8), (16, 2, 8), (5, 2, 8), (20, 1, 32), (9, 3, 6)]
)
def test_shards_equal_and_cover(n, world, batch):
    shards = [shard_indices(n, r, world, epoch=3, seed=7, batch_size=batch) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # the same number of batches everywhere
    sizes = {len(b) for s in shards for b in s}
    assert len(sizes) == 1
    covered = np.concatenate([b for s in shards for b in s])
    assert set(covered.tolist()) == set(range(n))
    for step in range(len(shards[0])):  # no trailer twice in one global batch
        global_batch = np.concatenate([s[step] for s in shards])
        assert len(set(global_batch.tolist())) == len(global_batch)
    again = shard_indices(n, 0, world, epoch=3, seed=7, batch_size=batch)
    assert all(np.array_equal(a, b) for a, b in zip(again, shards[0], strict=True))


def test_shards_reshuffle_per_epoch_and_match_single_worker():
    one = shard_indices(40, 0, 1, epoch=0, seed=1, batch_size=8)
    two = [shard_indices(40, r, 2, epoch=0, seed=1, batch_size=8) for r in range(2)]
    for step, global_batch in enumerate(one):  # 2 workers split the single worker's batches
        np.testing.assert_array_equal(np.concatenate([two[0][step], two[1][step]]), global_batch)
    other = shard_indices(40, 0, 1, epoch=1, seed=1, batch_size=8)
    assert not np.array_equal(np.concatenate(one), np.concatenate(other))


def test_eval_indices_cover():
    parts = [eval_indices(11, r, 3) for r in range(3)]
    assert {len(p) for p in parts} == {4}
    assert set(np.concatenate(parts).tolist()) == set(range(11))
