"""The contrastive phase's cross-modal term (network step 7): the trailer's projection learns to
find its own plot, so the fine embedding keeps what the plot says; tiny, CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmx.config import build_config
from mmx.model import MMXNetwork
from mmx.train.data import TrailerFeatures, TrailerSet
from mmx.train.loop import fit_contrastive, predict, seed_everything

SHOT = {"appearance": 16}
TITLE = {"plot": 8}
CONTENT, NUISANCE, NOISE = 1.0, 5.0, 1.5  # content weak in the pictures, nuisance strong


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hidden_content(n: int, seed: int) -> tuple[TrailerSet, np.ndarray]:
    """Trailers with two trailer-level factors in their shots: ``content`` (4 values, the one
    their plots describe, weak in the pictures) and ``nuisance`` (4 values, strong in the
    pictures, absent from the plots: film stock, say); a fifth of them have no plot.
    → the set (no labels) and each trailer's content value."""
    rng = np.random.default_rng(seed)
    d = SHOT["appearance"]
    content_dirs = rng.normal(size=(4, d)) * CONTENT / np.sqrt(d)
    nuisance_dirs = rng.normal(size=(4, d)) * NUISANCE / np.sqrt(d)
    plot_dirs = rng.normal(size=(4, TITLE["plot"])) * 3 / np.sqrt(TITLE["plot"])
    content = rng.integers(4, size=n)
    nuisance = rng.integers(4, size=n)
    items = []
    for i in range(n):
        c = int(rng.integers(8, 13))
        shots = content_dirs[content[i]] + nuisance_dirs[nuisance[i]] + NOISE * rng.normal(
            size=(c, d))
        feats = {"appearance": shots.astype(np.float32)}
        if rng.random() < 0.8:
            plot = plot_dirs[content[i]] + 0.5 * rng.normal(size=TITLE["plot"])
            feats["plot"] = np.repeat(plot[None], c, 0).astype(np.float32)
        items.append(TrailerFeatures(f"t-{i:04d}", feats))
    return TrailerSet(items, {**SHOT, **TITLE}, None, ()), content


def _nn_purity(emb: np.ndarray, truth: np.ndarray) -> float:
    """Share of trailers whose nearest other trailer (cosine) has the same content."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(truth[sim.argmax(axis=1)] == truth))


def _fine(data: TrailerSet, weight: float) -> tuple[MMXNetwork, list[dict]]:
    cfg = build_config("tiny")
    seed_everything(0)
    model = MMXNetwork({**SHOT, **TITLE}, None, 0, cfg.model, tuple(TITLE))
    model.set_input_stats(data.input_stats())
    train = dataclasses.replace(cfg.train, contrastive_epochs=25, warmup_epochs=2,
                                contrastive_lr=2e-3, batch_size=16, expert_dropout=0.0,
                                contrastive_title_weight=weight)
    before = {k: v.clone() for k, v in model.title_proj.state_dict().items()}
    history = fit_contrastive(model, data, train).history
    moved = any(not torch.equal(before[k], v) for k, v in model.title_proj.state_dict().items())
    assert moved == (weight > 0)  # the map is trained only with the term
    return model, history


def test_the_plot_pulls_the_fine_embedding_towards_what_it_describes():
    data, content = hidden_content(96, seed=3)
    purity = {}
    for weight in (0.0, 1.0):
        model, history = _fine(data, weight)
        assert ("cross_modal" in history[-1]) == (weight > 0)
        if weight > 0:  # the trailers learn to find their plots
            assert history[-1]["cross_modal"] < history[0]["cross_modal"]
        purity[weight] = _nn_purity(predict(model.eval(), data).embeddings, content)
    # the embedding itself is computed from the shots alone (the plot is not an input)
    assert purity[1.0] > purity[0.0] + 0.1, purity
