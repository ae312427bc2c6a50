"""Late fusion of per-title experts (network step 6, ``loop.fit_title_fusion``), tiny, CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmx.config import build_config
from mmx.model import MMXNetwork
from mmx.train.data import TrailerFeatures, TrailerSet
from mmx.train.loop import (
    drop_experts,
    fit_coarse,
    fit_title_fusion,
    load_model,
    predict,
    save_checkpoint,
    seed_everything,
)
from mmx.train.metrics import genre_metrics

SHOT = {"appearance": 16}
TITLE = {"plot": 12, "noise": 40}  # plot: carries the genres; noise: none
GENRES = ("action", "comedy", "drama", "horror")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def titled(n: int, seed: int, *, plot_share: float = 0.8) -> TrailerSet:
    """Trailers whose shots carry their genres weakly and whose ``plot`` vector (one per title,
    the same on every clip; missing for ``1 - plot_share`` of them) carries them strongly;
    ``noise`` is a wide title vector unrelated to the genres."""
    rng = np.random.default_rng(seed)
    g = len(GENRES)
    shot_dirs = rng.normal(size=(g, SHOT["appearance"])) * 0.6 / np.sqrt(SHOT["appearance"])
    plot_dirs = rng.normal(size=(g, TITLE["plot"])) * 4 / np.sqrt(TITLE["plot"])
    items = []
    for i in range(n):
        y = np.zeros(g, np.float32)
        y[rng.choice(g, size=int(rng.integers(1, 3)), replace=False)] = 1
        c = int(rng.integers(6, 11))
        feats = {"appearance": (y @ shot_dirs + rng.normal(size=(c, SHOT["appearance"])))
                 .astype(np.float32)}
        if rng.random() < plot_share:
            plot = y @ plot_dirs + rng.normal(size=TITLE["plot"])
            feats["plot"] = np.repeat(plot[None], c, 0).astype(np.float32)
        feats["noise"] = np.repeat(rng.normal(size=(1, TITLE["noise"])) * 3, c, 0).astype(
            np.float32)
        items.append(TrailerFeatures(f"t-{i:04d}", feats, labels=y,
                                     primary=int(np.flatnonzero(y)[0])))
    return TrailerSet(items, {**SHOT, **TITLE}, None, GENRES)


def _model(title_fusion: str = "late") -> MMXNetwork:
    cfg = build_config("tiny")
    seed_everything(0)
    mcfg = dataclasses.replace(cfg.model, title_fusion=title_fusion)
    return MMXNetwork({**SHOT, **TITLE}, None, len(GENRES), mcfg, tuple(TITLE))


def _train_cfg():
    return dataclasses.replace(build_config("tiny").train, coarse_epochs=15, patience=15,
                               batch_size=16)


def test_title_experts_stay_out_of_the_embedding():
    data = titled(12, seed=1)
    model = _model().eval()
    assert model.shot_experts == ("appearance",) and model.title_experts == ("plot", "noise")
    batch = data.batch(np.arange(12))
    changed = {**batch, "experts": {**batch["experts"],
                                    "plot": batch["experts"]["plot"] + 5.0,
                                    "noise": torch.zeros_like(batch["experts"]["noise"])}}
    with torch.no_grad():
        assert torch.equal(model.embed(batch), model.embed(changed))
        # before the fusion is fitted the logits are the trailer's alone
        assert torch.allclose(model(batch)["logits"], model.classify(model.embed(batch)))
    gated = _model("gated").eval()
    assert gated.title_experts == () and len(gated.shot_experts) == 3
    with torch.no_grad():
        assert not torch.equal(gated.embed(batch), gated.embed(changed))


def test_fusion_beats_the_trailer_alone_and_drops_the_uninformative_expert():
    data = titled(200, seed=0)
    train, val, test = data.subset(range(110)), data.subset(range(110, 150)), \
        data.subset(range(150, 200))
    model = _model()
    fit_coarse(model, train, val, _train_cfg())
    trailer_only = predict(model, test).scores
    info = fit_title_fusion(model, train, val, _train_cfg(), batch_size=32)
    fused = predict(model, test).scores
    micro_trailer = genre_metrics(test.labels, trailer_only)["au_prc_micro"]
    micro_fused = genre_metrics(test.labels, fused)["au_prc_micro"]
    assert micro_fused > micro_trailer + 0.1, (micro_trailer, micro_fused, info)
    w = info["weights"]
    assert set(w) == {"trailer", "plot", "noise"}
    assert w["plot"] > 0.3 and w["noise"] < 0.25 * w["plot"], w
    assert info["experts"]["plot"]["n_train"] == int(sum(
        "plot" in t.features for t in train.trailers))
    assert info["n_val"] == 40 and info["reason"].startswith("fitted on 40")
    # the fitted heads and weights travel with the checkpoint
    assert torch.allclose(model.fusion, torch.tensor([w["trailer"], w["plot"], w["noise"]]))


def test_fusion_survives_a_checkpoint(tmp_path):
    data = titled(60, seed=2)
    model = _model()
    fit_coarse(model, data.subset(range(30)), data.subset(range(30, 50)),
               dataclasses.replace(_train_cfg(), coarse_epochs=2))
    fit_title_fusion(model, data.subset(range(30)), data.subset(range(30, 50)), _train_cfg())
    save_checkpoint(str(tmp_path / "ckpt"), model, meta={"epoch": 0})
    loaded, _ = load_model(str(tmp_path / "ckpt"))
    assert loaded.title_experts == ("plot", "noise")
    assert torch.equal(loaded.fusion, model.fusion)
    rest = data.subset(range(50, 60))
    np.testing.assert_allclose(predict(loaded, rest).scores, predict(model, rest).scores,
                               rtol=1e-5, atol=1e-6)


def test_too_few_validation_trailers_leave_the_titles_unused():
    data = titled(60, seed=3)
    model = _model()
    train, val = data.subset(range(50)), data.subset(range(50, 55))
    fit_coarse(model, train, val, dataclasses.replace(_train_cfg(), coarse_epochs=1))
    info = fit_title_fusion(model, train, val, _train_cfg())
    assert info["weights"] == {"trailer": 1.0, "plot": 0.0, "noise": 0.0}
    assert "5 labelled validation trailers" in info["reason"]
    batch = data.batch(np.arange(55, 60))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch)["logits"], model.classify(model.embed(batch)))


def test_the_fit_takes_a_seeded_subset_beyond_max_rows():
    data = titled(260, seed=5, plot_share=1.0)
    train, val = data.subset(range(150)), data.subset(range(150, 260))
    model = _model()
    fit_coarse(model, train, val, dataclasses.replace(_train_cfg(), coarse_epochs=1))
    cfg = dataclasses.replace(_train_cfg(), title_fusion_max_rows=100)
    info = fit_title_fusion(model, train, val, cfg)
    assert info["rows"] == {"train": {"labelled": 150, "used": 100},
                            "val": {"labelled": 110, "used": 100}}
    assert info["experts"]["plot"]["n_train"] == 100 and info["n_val"] == 100
    again = fit_title_fusion(model, train, val, cfg)  # same subset: same fit
    assert again["weights"] == info["weights"]
    whole = fit_title_fusion(model, train, val, _train_cfg())
    assert whole["rows"]["train"] == {"labelled": 150, "used": 150}
    assert whole["experts"]["plot"]["n_train"] == 150


def test_a_model_without_title_experts_fits_nothing():
    model = MMXNetwork(SHOT, None, len(GENRES), build_config("tiny").model)
    data = titled(20, seed=4)
    assert fit_title_fusion(model, data, data, _train_cfg()) == {}
    assert "fusion" not in model.state_dict()  # checkpoints of such models are as before


def test_modality_dropout_leaves_late_fused_title_experts_alone():
    model = _model()
    batch = titled(64, seed=5).batch(np.arange(64))
    batch["expert_mask"] = torch.ones_like(batch["expert_mask"])
    torch.manual_seed(0)
    dropped = drop_experts(batch, 0.9, model.shot_cols)["expert_mask"]
    assert dropped[..., 1:].all()  # plot and noise: never dropped
    assert dropped[..., 0].all()  # the only shot expert is rescued every time
    torch.manual_seed(0)
    every = drop_experts(batch, 0.9)["expert_mask"]  # default: any column may go
    assert not every.all() and every.any(dim=-1).all()


def test_the_trailer_path_starts_from_the_same_weights_with_or_without_title_experts():
    with_titles = _model().state_dict()
    seed_everything(0)
    alone = MMXNetwork(SHOT, None, len(GENRES), build_config("tiny").model).state_dict()
    assert set(alone) <= set(with_titles)
    assert all(torch.equal(alone[k], with_titles[k]) for k in alone)
