"""Training loop on feature sets with a planted genre signal (tiny profile, CPU)."""

from __future__ import annotations

import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmx.config import ConfigError, build_config
from mmx.model import MMXNetwork
from mmx.train.data import TrailerFeatures, TrailerSet
from mmx.train.loop import (
    Best,
    CheckpointError,
    checkpoint_complete,
    evaluate,
    fit_coarse,
    fit_contrastive,
    genre_loss,
    infer_rows,
    load_checkpoint,
    load_model,
    predict,
    save_checkpoint,
    seed_everything,
)
from mmx.train.metrics import genre_metrics, label_frequency_baseline

DIMS = {"appearance": 24, "scene": 12, "motion": 8}
AUDIO_DIM = 16
GENRES = ("action", "comedy", "drama", "horror")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP spinning on a busy 2-core box costs 40x
    yield
    torch.set_num_threads(before)


def planted(n: int, seed: int, *, max_labels: int, identity: float) -> TrailerSet:
    """Trailers whose genres shift appearance, scene and audio features along per-genre random
    directions (plus clip noise); every expert also carries a per-trailer random "identity"
    (shared by all its clips, unrelated to genre): the content that contrastive training finds.
    Motion carries no genre signal; some trailers lack motion or audio."""
    rng = np.random.default_rng(seed)
    g = len(GENRES)
    dirs = {k: rng.normal(size=(g, d)) * 3 / np.sqrt(d) for k, d in DIMS.items()}
    audio_dirs = rng.normal(size=(g, AUDIO_DIM)) * 3 / np.sqrt(AUDIO_DIM)
    items = []
    for i in range(n):
        genres = rng.choice(g, size=int(rng.integers(1, max_labels + 1)), replace=False)
        y = np.zeros(g, dtype=np.float32)
        y[genres] = 1.0
        c = int(rng.integers(8, 17))
        feats = {}
        for name, d in DIMS.items():
            signal = y @ dirs[name] if name != "motion" else 0.0
            feats[name] = (signal + rng.normal(size=d) * identity + rng.normal(size=(c, d))).astype(
                np.float32
            )
        if i % 5 == 0:
            del feats["motion"]
        audio = (y @ audio_dirs + rng.normal(size=(c, 3, AUDIO_DIM))).astype(np.float32)
        items.append(
            TrailerFeatures(
                f"trailer-{i:04d}",
                feats,
                audio=audio,
                audio_frames=rng.integers(1, 4, size=c),
                has_audio=i % 4 != 0,
                labels=y,
                primary=int(genres[0]),
            )
        )
    return TrailerSet(items, DIMS, AUDIO_DIM, GENRES)


def _configs(model=None, **train):
    cfg = build_config("tiny")
    return (
        dataclasses.replace(cfg.model, **(model or {})),
        dataclasses.replace(cfg.train, **train),
    )


def _new_model(mcfg, seed: int = 0) -> MMXNetwork:
    seed_everything(seed)
    return MMXNetwork(DIMS, AUDIO_DIM, len(GENRES), mcfg)


def test_coarse_beats_label_frequency_baseline():
    data = planted(160, seed=0, max_labels=3, identity=1.0)
    train, val, test = (
        data.subset(range(100)),
        data.subset(range(100, 120)),
        data.subset(range(120, 160)),
    )
    mcfg, tcfg = _configs(coarse_epochs=8, patience=8, batch_size=8)
    model = _new_model(mcfg)
    result = fit_coarse(model, train, val, tcfg)
    assert len(result.history) == 8
    assert result.best_metric == max(h["score"] for h in result.history)
    got = evaluate(model, test, threshold=tcfg.threshold)
    base = genre_metrics(test.labels, label_frequency_baseline(train.labels, len(test)))
    assert got["au_prc_weighted"] > base["au_prc_weighted"] + 0.2, (got, base)
    assert got["f1_weighted"] > base["f1_weighted"]


def test_contrastive_lowers_genre_silhouette():
    data = planted(200, seed=0, max_labels=1, identity=3.0)
    train, val = data.subset(range(150)), data.subset(range(150, 170))
    mcfg, tcfg = _configs(
        coarse_epochs=10,
        patience=10,
        batch_size=8,
        contrastive_epochs=25,
        warmup_epochs=1,
        contrastive_lr=2e-3,
    )
    model = _new_model(mcfg)
    fit_coarse(model, train, val, tcfg)
    result = fit_contrastive(
        model,
        train,
        dataclasses.replace(tcfg, batch_size=16),
        silhouette_set=data.subset(range(150, 200)),
    )
    sil = result.silhouette
    assert len(sil) == 1 + 25  # the coarse model's, then one per epoch
    assert result.history[-1]["nt_xent"] < result.history[0]["nt_xent"]
    assert sil[-1] < sil[0] - 0.1, sil


def _run_phase(phase, model, train, val, tcfg, ckpt_root, **resume):
    """Run one phase, checkpointing every epoch to ckpt_root/<phase>-<epoch>."""

    def on_epoch(ph, epoch, m, optimizer, metrics):
        save_checkpoint(
            str(ckpt_root / f"{ph}-{epoch:03d}"), m, optimizer, {"phase": ph, **metrics}
        )

    if phase == "coarse":
        return fit_coarse(model, train, val, tcfg, on_epoch=on_epoch, **resume)
    return fit_contrastive(model, train, tcfg, silhouette_set=val, on_epoch=on_epoch, **resume)


@pytest.mark.parametrize("phase", ["coarse", "contrastive"])
def test_resume_reproduces_uninterrupted_run(tmp_path, phase):
    data = planted(48, seed=1, max_labels=2, identity=1.0)
    train, val = data.subset(range(36)), data.subset(range(36, 48))
    mcfg, tcfg = _configs(coarse_epochs=3, contrastive_epochs=3, patience=10, batch_size=8)
    full, part = tmp_path / "full", tmp_path / "part"

    model = _new_model(mcfg)
    if phase == "contrastive":
        fit_coarse(model, train, val, dataclasses.replace(tcfg, coarse_epochs=1))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    _run_phase(phase, model, train, val, tcfg, full)

    # "interrupted" after epoch 1: rebuild from its checkpoint and run the last epoch only
    ckpt = load_checkpoint(str(full / f"{phase}-001"))
    resumed = _new_model(mcfg, seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(ckpt.model_state)
    resume = {"start_epoch": 2, "optimizer_state": ckpt.optimizer_state}
    if phase == "coarse":
        best = load_checkpoint(str(full / f"coarse-{ckpt.meta['best_epoch']:03d}"))
        resume["best"] = Best(ckpt.meta["best_metric"], ckpt.meta["best_epoch"], best.model_state)
    else:
        resume["silhouettes"] = ckpt.meta["silhouettes"]
    _run_phase(phase, resumed, train, val, tcfg, part, **resume)

    want = load_checkpoint(str(full / f"{phase}-002")).model_state
    got = load_checkpoint(str(part / f"{phase}-002")).model_state
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    assert any(not torch.equal(want[k], start[k]) for k in want)  # training did move the weights
    meta_full = load_checkpoint(str(full / f"{phase}-002")).meta
    meta_part = load_checkpoint(str(part / f"{phase}-002")).meta
    for key in ("bce", "nt_xent", "best_metric", "best_epoch", "silhouettes"):
        assert meta_part.get(key) == pytest.approx(meta_full.get(key), nan_ok=True), key


def test_checkpoint_roundtrip_and_predict(tmp_path):
    data = planted(24, seed=2, max_labels=2, identity=1.0)
    mcfg, tcfg = _configs(coarse_epochs=1, contrastive_epochs=1)
    model = _new_model(mcfg)
    fit_coarse(model, data, data, tcfg)
    coarse = _new_model(mcfg)
    coarse.load_state_dict(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    model(data.batch(np.arange(4)))["logits"].sum().backward()
    optimizer.step()
    save_checkpoint(str(tmp_path / "ck"), model, optimizer, {"phase": "coarse", "epoch": 0})

    loaded, meta = load_model(str(tmp_path / "ck"))
    assert meta["phase"] == "coarse" and meta["model"]["n_genres"] == len(GENRES)
    a, b = predict(model, data, batch_size=5), predict(loaded, data, batch_size=7)
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert a.embeddings.shape == (24, mcfg.bottleneck) and a.scores.shape == (24, len(GENRES))

    state = load_checkpoint(str(tmp_path / "ck")).optimizer_state
    fresh = torch.optim.Adam(loaded.parameters(), lr=1e-3, amsgrad=True)
    fresh.load_state_dict(state)
    for key, value in optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(fresh.state_dict()["state"][0][key], value)

    fit_contrastive(model, data, tcfg)
    both = predict(model, data, coarse_model=coarse)
    np.testing.assert_allclose(both.scores, predict(coarse, data).scores, atol=1e-6)
    assert not np.allclose(both.embeddings, both.coarse_embeddings)


# --------------------------------------------------------------------- 2 gloo workers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _owned(data: TrailerSet, rank: int, world_size: int) -> TrailerSet:
    """Worker ``rank``'s view when rows are owned round-robin: its own rows, placeholders for
    the others (collating one raises, so a batch that strays off its rows fails the test)."""
    owner = np.arange(len(data)) % world_size
    items = [t if owner[i] == rank else TrailerFeatures.placeholder(t.trailer_id, t.labels,
                                                                     t.primary)
             for i, t in enumerate(data.trailers)]
    return TrailerSet(items, data.expert_dims, data.audio_dim, data.genres, owner)


def _fit_both(
    rank: int, world_size: int, owned: bool = False
) -> tuple[MMXNetwork, list, np.ndarray]:
    data = planted(40, seed=3, max_labels=2, identity=1.0)
    if owned:
        data = _owned(data, rank, world_size)
    train, val = data.subset(range(32)), data.subset(range(32, 40))
    mcfg, tcfg = _configs(
        model={"dropout": 0.0}, coarse_epochs=2, contrastive_epochs=2, patience=5, batch_size=8,
        expert_dropout=0.0,  # like dropout, its masks are drawn per rank
    )
    model = _new_model(mcfg)
    coarse = fit_coarse(model, train, val, tcfg, rank=rank, world_size=world_size)
    contrastive = fit_contrastive(
        model, train, tcfg, rank=rank, world_size=world_size, silhouette_set=val
    )
    _, scores = infer_rows(model, val, np.arange(len(val)), batch_size=3, rank=rank,
                           world_size=world_size)
    return model, [coarse.best_metric, *contrastive.silhouette], scores


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        for owned in (False, True):
            model, summary, scores = _fit_both(rank, world_size, owned)
            save_checkpoint(os.path.join(out_dir, f"owned{owned:d}-rank{rank}"), model, None,
                            {"summary": summary, "scores": scores.tolist()})
    finally:
        dist.destroy_process_group()


def test_checkpoint_rewritten_in_place_is_never_a_mix(tmp_path):
    """coarse-best is saved over itself: a save killed before its meta.json leaves the previous
    version loadable and whole; a damaged meta.json or weights file is refused, not loaded."""
    mcfg, _ = _configs(coarse_epochs=1, contrastive_epochs=1)
    ck = tmp_path / "coarse-best"
    first, second = _new_model(mcfg, seed=1), _new_model(mcfg, seed=2)
    save_checkpoint(str(ck), first, meta={"epoch": 0})
    save_checkpoint(str(ck), second, meta={"epoch": 1})
    assert len(list(ck.glob("model-*.safetensors"))) == 1  # the older version's files went
    got = load_checkpoint(str(ck))
    assert got.meta["epoch"] == 1
    for k, v in second.state_dict().items():
        torch.testing.assert_close(got.model_state[k], v)

    # a save killed after writing its weights, before its meta.json: still epoch 1, whole
    (ck / "model-9999999999999-deadbeef.safetensors").write_bytes(b"half a tensor")
    assert load_checkpoint(str(ck)).meta["epoch"] == 1
    save_checkpoint(str(ck), first, meta={"epoch": 2})  # the next save drops the torn file
    assert [p.name for p in ck.glob("model-*")] == [load_checkpoint(str(ck)).meta["files"]["model"]]

    weights = ck / load_checkpoint(str(ck)).meta["files"]["model"]
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(str(ck))
    meta = ck / "meta.json"
    meta.write_text(meta.read_text()[: len(meta.read_text()) // 2])  # truncated
    assert not checkpoint_complete(str(ck))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(str(ck))
    assert not checkpoint_complete(str(tmp_path / "nothing"))


def test_two_gloo_workers_match_one(tmp_path):
    """Holding every row, 2 workers train exactly like 1. Holding only its own rows, each
    worker batches and scores those: the input statistics are still those of all training
    rows, the workers stay identical and the gathered scores are the full split's."""
    single, summary, _ = _fit_both(0, 1)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [load_checkpoint(str(tmp_path / f"owned0-rank{r}")) for r in range(2)]
    want = single.state_dict()
    for ckpt in ranks:
        assert ckpt.meta["summary"] == pytest.approx(summary, abs=1e-4)
        for key, value in ckpt.model_state.items():
            torch.testing.assert_close(value, want[key], rtol=0, atol=1e-4, msg=key)

    owned = [load_checkpoint(str(tmp_path / f"owned1-rank{r}")) for r in range(2)]
    versioned = ("files", "sha256")  # file names differ per save, the checksums do not
    assert {k: v for k, v in owned[0].meta.items() if k not in versioned} == {
        k: v for k, v in owned[1].meta.items() if k not in versioned}
    assert list(owned[0].meta["sha256"].values()) == list(owned[1].meta["sha256"].values())
    for key, value in owned[0].model_state.items():
        torch.testing.assert_close(owned[1].model_state[key], value, rtol=0, atol=1e-6, msg=key)
    data = planted(40, seed=3, max_labels=2, identity=1.0)
    full_stats = _new_model(single.cfg)
    full_stats.set_input_stats(data.subset(range(32)).input_stats())
    for key, value in full_stats.state_dict().items():
        if key.startswith("norms."):
            torch.testing.assert_close(owned[0].model_state[key], value, rtol=1e-5, atol=1e-6,
                                       msg=key)
    model, _ = load_model(str(tmp_path / "owned1-rank0"))
    scores = predict(model, data.subset(range(32, 40)), batch_size=5).scores
    np.testing.assert_allclose(np.array(owned[0].meta["scores"]), scores, atol=1e-5)


def test_genre_loss_follows_the_config():
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    cfg = build_config("tiny").train
    assert cfg.genre_loss_weights == "pos_weight"  # DESIGN §1's default is unchanged
    default = genre_loss(cfg, y)
    np.testing.assert_allclose(default.pos_weight.numpy(), [1 / 3, 3, 3], rtol=1e-6)
    assert default.class_weight is None
    weighted = genre_loss(dataclasses.replace(cfg, genre_loss_weights="class"), y)
    assert weighted.pos_weight is None
    np.testing.assert_allclose(weighted.class_weight.numpy(), np.array([1 / 3, 1, 1]) / (7 / 9),
                               rtol=1e-6)
    plain = genre_loss(dataclasses.replace(cfg, genre_loss_weights="none"), y)
    assert plain.pos_weight is None and plain.class_weight is None
    over = build_config("tiny", overrides={"train": {"genre_loss_weights": "class"}})
    assert over.train.genre_loss_weights == "class"
    with pytest.raises(ConfigError):
        build_config("tiny", overrides={"train": {"genre_loss_weights": "inverse"}})
