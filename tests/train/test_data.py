"""TrailerSet collation, stable splits, positive weights, DDP sharding and per-worker loading."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mmx import schema, storage
from mmx.train.data import (
    TrailerFeatures,
    TrailerSet,
    collate,
    plan_owners,
    pos_weight,
    read_ok_ids,
    shard_batches,
    shard_indices,
    shares,
    split_of,
    stats_from_sums,
    stratified_splits,
    trailer_set_from_table,
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


def test_shares_strided_or_by_owner():
    assert [p.tolist() for p in shares(11, 3)] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    owner = np.array([1, 0, 1, 1, 0, 2, 2, 1])
    assert [p.tolist() for p in shares(8, 3, owner)] == [[1, 4], [0, 2, 3, 7], [5, 6]]
    assert [p.tolist() for p in shares(2, 3, np.array([0, 0]))] == [[0, 1], [], []]
    with pytest.raises(ValueError, match="another world size"):
        shares(3, 2, np.array([0, 1, 2]))


@pytest.mark.parametrize("n,batch", [(37, 8), (5, 8), (20, 32), (64, 16)])
def test_shard_batches_of_one_worker_are_shard_indices(n, batch):
    """One worker, with or without an owner array: exactly the single-worker batches of old."""
    rows = np.sort(np.random.default_rng(n).choice(100, size=n, replace=False))
    for epoch in (0, 3):
        want = [rows[b] for b in shard_indices(n, 0, 1, epoch, seed=7, batch_size=batch)]
        for owner in (None, np.zeros(100, dtype=np.int64)):
            got = shard_batches(rows, owner, 0, 1, epoch, seed=7, batch_size=batch)
            assert len(got) == len(want)
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("world,batch", [(2, 8), (3, 16), (4, 64)])
def test_owned_batches(world, batch):
    """Each worker batches only the rows it owns; equal batch counts and sizes everywhere; no
    trailer twice in a global batch; every row once per epoch plus the padding."""
    n_set = 101
    owner = np.arange(n_set) % world
    rows = np.sort(np.random.default_rng(world).choice(n_set, size=61, replace=False))
    sizes = np.bincount(owner[rows], minlength=world)
    epochs = []
    for epoch in (0, 1):
        per_rank = [shard_batches(rows, owner, r, world, epoch, seed=5, batch_size=batch)
                    for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1
        local = {len(b) for bs in per_rank for b in bs}
        assert local == {min(batch // world, sizes.min())}
        n_batches = len(per_rank[0])
        assert n_batches == int(np.ceil(sizes.max() / local.pop()))
        for r, bs in enumerate(per_rank):
            seen = np.concatenate(bs)
            assert (owner[seen] == r).all()
            assert set(seen.tolist()) == set(rows[owner[rows] == r].tolist())
            counts = np.bincount(seen, minlength=n_set)[rows[owner[rows] == r]]
            assert counts.max() - counts.min() <= 1  # padding wraps round the share evenly
        for step in range(n_batches):
            global_batch = np.concatenate([bs[step] for bs in per_rank])
            assert len(set(global_batch.tolist())) == len(global_batch)
        epochs.append(np.concatenate(per_rank[0]))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    with pytest.raises(ValueError, match="owns none"):
        shard_batches(np.array([0, 2]), np.arange(3) % 2, 0, 2, 0, seed=1, batch_size=8)


def _placeholders(ds: TrailerSet, owner: np.ndarray, rank: int) -> TrailerSet:
    """What worker ``rank`` holds of ``ds``: its own rows, placeholders for the others."""
    items = [t if owner[i] == rank else TrailerFeatures.placeholder(t.trailer_id, t.labels,
                                                                     t.primary)
             for i, t in enumerate(ds.trailers)]
    return TrailerSet(items, ds.expert_dims, ds.audio_dim, ds.genres, owner)


def test_input_sums_of_workers_add_up_and_placeholders_do_not_collate():
    items = [_item(i, 2 + i % 4, labels=np.array([1, 0, 1.0]) if i % 3 else None)
             for i in range(11)]
    full = TrailerSet(items, DIMS, 5, ["a", "b", "c"])
    owner = np.arange(11) % 3
    parts = [_placeholders(full, owner, r) for r in range(3)]
    for r, part in enumerate(parts):
        assert part.held.tolist() == (owner == r).tolist()
        np.testing.assert_array_equal(part.labels, full.labels)  # metadata is global
        np.testing.assert_array_equal(part.primary, full.primary)
    partial = [p.input_sums() for p in parts]
    summed = {k: tuple(sum(s[k][j] for s in partial) for j in range(3)) for k in partial[0]}
    want = full.input_stats()
    for name, (mean, std) in stats_from_sums(summed).items():
        np.testing.assert_allclose(mean, want[name][0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(std, want[name][1], rtol=1e-6, atol=1e-7)
    sub = parts[1].subset([1, 2, 4])
    assert sub.owner.tolist() == [1, 2, 1] and sub.held.tolist() == [True, False, True]
    assert sub.batch([0, 2])["index"].tolist() == [0, 2]
    with pytest.raises(ValueError, match="placeholder"):
        sub.batch([0, 1])


def _features_rows(n: int, seed: int) -> tuple[list[dict], dict[str, list[str]]]:
    """``features`` rows (schema.FEATURES) with small experts, and their labels."""
    rng = np.random.default_rng(seed)
    rows, labels = [], {}
    for i in range(n):
        tid, c = f"t{i:03d}", int(rng.integers(2, 6))
        row = {f.name: None for f in schema.FEATURES}
        row.update(trailer_id=tid, status="ok", has_audio=bool(i % 3), n_clips=c,
                   appearance=rng.normal(size=c * 4).astype(np.float32),
                   scene=rng.normal(size=c * 3).astype(np.float32),
                   audio=rng.normal(size=c * 2 * 128).astype(np.float32), audio_frames=[2] * c)
        rows.append(row)
        labels[tid] = [["A", "B", "C"][i % 3]] if i % 5 else []
    return rows, labels


def test_workers_load_only_their_rows_of_the_store(out):
    """Local and s3://: a worker holds the features of its own rows only, read from a store of
    several parts in no particular order; ids, labels and splits are everyone's."""
    rows, labels = _features_rows(30, seed=0)
    rows[7].update(status="excluded", appearance=None, scene=None, audio=None)
    order = np.random.default_rng(1).permutation(30)  # the store is in no particular order
    store = storage.join(out, "features.parquet")
    for k, part in enumerate(np.array_split(order, 3)):
        storage.write_table(pa.Table.from_pylist([rows[i] for i in part], schema=schema.FEATURES),
                            storage.join(store, f"part-{k:02d}.parquet"))
    ids = read_ok_ids(store)
    assert ids == sorted(r["trailer_id"] for r in rows if r["status"] == "ok")
    plan = TrailerSet.from_metadata(ids, labels, ["A", "B", "C"])
    assert not plan.held.any() and plan.expert_dims == {}
    plan.assign_splits((0.6, 0.2, 0.2))
    owner = plan_owners(plan, 2)
    assert owner.tolist() == (np.arange(29) % 2).tolist()
    ok = pa.Table.from_pylist([r for r in rows if r["status"] == "ok"], schema=schema.FEATURES)
    want = trailer_set_from_table(ok, labels, ["A", "B", "C"])
    for rank in range(2):
        data = plan.load_features(store, owner, rank)
        assert data.held.tolist() == (owner == rank).tolist()
        assert data.expert_dims == {"appearance": 4, "scene": 3}
        assert list(data.splits) == list(plan.splits)
        np.testing.assert_array_equal(data.owner, owner)
        np.testing.assert_array_equal(data.labels, want.labels)
        np.testing.assert_array_equal(data.primary, want.primary)
        mine = np.flatnonzero(owner == rank)
        got, ref = data.batch(mine), want.batch(mine)
        for name in DIMS:
            np.testing.assert_array_equal(got["experts"][name], ref["experts"][name])
        np.testing.assert_array_equal(got["audio"], ref["audio"])
        np.testing.assert_array_equal(got["expert_mask"], ref["expert_mask"])
    everything = plan.load_features(store)
    assert everything.held.all() and everything.owner is None
    # a few trailers: some worker would own no training row, so every worker loads all
    assert plan_owners(plan.subset([0, 1, 2]), 4) is None
    assert plan_owners(plan, 1) is None
    gone = TrailerSet.from_metadata([*ids, "t999"], labels, ["A", "B", "C"])
    with pytest.raises(ValueError, match="no ok features row"):
        gone.load_features(store)


def test_a_dimension_constant_in_training_standardises_to_zero():
    """A unit no training row moves (a poster CNN's unit no training poster fires) must not
    turn an unseen title's value into millions: its std is inf, its standardised value 0."""
    import torch

    from mmx.model.network import Standardize

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    x[:, 1] = 0.0  # constant
    x[:, 3] = 5.0 + 1e-9 * rng.normal(size=200)  # constant up to rounding
    mean, std = stats_from_sums({"e": (x.sum(0), (x * x).sum(0), len(x))})["e"]
    assert np.isinf(std[[1, 3]]).all() and np.isfinite(std[[0, 2]]).all()
    np.testing.assert_allclose(std[[0, 2]], x[:, [0, 2]].std(0), rtol=1e-5)
    norm = Standardize(4)
    norm.mean.copy_(torch.as_tensor(mean))
    norm.std.copy_(torch.as_tensor(std))
    out = norm(torch.tensor([[0.3, 7.0, -0.2, 40.0]], dtype=torch.float32))
    assert out[0, 1] == 0 and out[0, 3] == 0 and torch.isfinite(out).all()
    assert abs(float(out[0, 0])) < 5  # the varying dimensions are standardised as before
    empty = stats_from_sums({"e": (np.zeros(3), np.zeros(3), 0)})["e"][1]
    assert np.isinf(empty).all()  # an expert with no training rows contributes nothing
