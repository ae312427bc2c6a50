"""Losses: NT-Xent vs an explicit-loop reference and 1 vs 2 gloo workers; masked BCE; the
cross-modal InfoNCE over the trailers that have the second modality."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmx.model import CrossModalLoss, GenreBCELoss, NTXentLoss
from mmx.model.losses import class_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _views(n: int = 8, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def _reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR's definition, one anchor at a time over the 2N views."""
    views = F.normalize(torch.cat([z1, z2]), dim=-1).tolist()
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [
            sum(a * b for a, b in zip(views[i], views[k], strict=True)) / tau for k in range(2 * n)
        ]
        denom = sum(math.exp(sims[k]) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sims[pos]) / denom)
    return total / (2 * n)


def test_nt_xent_matches_reference():
    z1, z2 = _views()
    for tau in (0.5, 0.1):
        got = NTXentLoss(tau)(z1, z2)["nt_xent"].item()
        assert got == pytest.approx(_reference_nt_xent(z1, z2, tau), rel=1e-5)


def test_nt_xent_perfect_views_beat_random():
    z1, z2 = _views()
    loss = NTXentLoss(0.5)
    assert loss(z1, z1)["nt_xent"] < loss(z1, z2)["nt_xent"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AVAIL = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool)  # 3 rows each of 2 halves


def _distributed_loss(name: str, x1: torch.Tensor, x2: torch.Tensor, rows: slice,
                      rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The loss ``name`` over ``rows`` of the two views, as worker ``rank`` of ``world_size``."""
    if name == "nt_xent":
        return NTXentLoss(0.5, rank=rank, world_size=world_size)(x1, x2)["nt_xent"]
    return CrossModalLoss(0.2, rank=rank, world_size=world_size)(x1, x2, AVAIL[rows])[
        "cross_modal"]


def _worker(rank: int, world_size: int, port: int, out_dir: str, name: str) -> None:
    """One gloo worker: the loss ``name`` over its share of :func:`_views`; saves the loss and
    the gradients of both views (the second's only where the loss takes one)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        z1, z2 = _views()
        b = len(z1) // world_size
        mine = slice(rank * b, (rank + 1) * b)
        mine1 = z1[mine].clone().requires_grad_(True)
        mine2 = z2[mine].clone().requires_grad_(name == "nt_xent")
        loss = _distributed_loss(name, mine1, mine2, mine, rank, world_size)
        loss.backward()
        np.save(os.path.join(out_dir, f"loss{rank}.npy"), loss.detach().numpy())
        np.save(os.path.join(out_dir, f"grad1_{rank}.npy"), mine1.grad.numpy())
        if mine2.grad is not None:
            np.save(os.path.join(out_dir, f"grad2_{rank}.npy"), mine2.grad.numpy())
    finally:
        dist.destroy_process_group()


def test_cross_modal_one_worker_equals_two_gloo_workers(tmp_path):
    """Gathered across workers (equal shares of available rows), the mean of the workers'
    losses is the single-process loss and their gradients / W its gradient."""
    v, t = _views()
    v.requires_grad_(True)
    single = _distributed_loss("cross_modal", v, t, slice(None))
    single.backward()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), "cross_modal"), nprocs=2, join=True)
    losses = [float(np.load(tmp_path / f"loss{r}.npy")) for r in range(2)]
    assert np.mean(losses) == pytest.approx(single.item(), rel=1e-6)
    parts = np.concatenate([np.load(tmp_path / f"grad1_{r}.npy") for r in range(2)])
    np.testing.assert_allclose(parts / 2, v.grad.numpy(), atol=1e-6)


def test_nt_xent_one_worker_equals_two_gloo_workers(tmp_path):
    z1, z2 = _views()
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    single = _distributed_loss("nt_xent", z1, z2, slice(None))
    single.backward()

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), "nt_xent"), nprocs=2, join=True)
    losses = [float(np.load(tmp_path / f"loss{r}.npy")) for r in range(2)]
    assert np.mean(losses) == pytest.approx(single.item(), rel=1e-6)
    # Each worker's gradient sums every worker's loss through the all-gather; DDP then averages
    # over workers, so the per-worker gradient / W must equal the global loss's gradient.
    for name, full in (("grad1", z1.grad), ("grad2", z2.grad)):
        parts = np.concatenate([np.load(tmp_path / f"{name}_{r}.npy") for r in range(2)])
        np.testing.assert_allclose(parts / 2, full.numpy(), atol=1e-6)


def test_bce_ignores_unlabelled_rows():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    labels = (torch.rand(5, 3) > 0.5).float()
    labelled = torch.tensor([True, False, True, True, False])
    w = torch.tensor([1.0, 2.0, 0.5])
    got = GenreBCELoss(w)(logits, labels, labelled)["bce"]
    ref = F.binary_cross_entropy_with_logits(logits[labelled], labels[labelled], pos_weight=w)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    labels[~labelled] = 1 - labels[~labelled]  # unlabelled targets are irrelevant
    assert GenreBCELoss(w)(logits, labels, labelled)["bce"].item() == pytest.approx(ref.item())
    none = GenreBCELoss(w)(logits.requires_grad_(True), labels, torch.zeros(5, dtype=torch.bool))
    assert none["bce"].item() == 0.0
    none["bce"].backward()  # still attached to the graph


def test_class_weights_are_inverse_frequency_with_mean_one():
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]])  # 3, 1 and 0 positives
    w = class_weights(y)
    np.testing.assert_allclose(w, np.array([1 / 3, 1, 1]) / (7 / 9), rtol=1e-6)
    assert w.dtype == np.float32 and w.mean() == pytest.approx(1.0)
    capped = class_weights(np.array([[1, 0]] * 1000 + [[1, 1]]), max_ratio=10)
    assert capped[1] / capped[0] == pytest.approx(10.0)  # 1000x rarer, capped at 10x


def test_class_weighted_bce_scales_both_terms_of_a_genre():
    """Genre g's positive and negative terms are both multiplied by class_weight[g]."""
    torch.manual_seed(1)
    logits = torch.randn(4, 3)
    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])  # genre 2: negatives only
    labelled = torch.tensor([True, True, True, False])
    w = torch.tensor([0.5, 1.0, 1.5])
    got = GenreBCELoss(class_weight=w)(logits, labels, labelled)["bce"]
    p = torch.sigmoid(logits[:3])
    y = labels[:3]
    by_hand = -(w * (y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean()  # (3, 3) → scalar
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)
    plain = F.binary_cross_entropy_with_logits(logits[:3], y, reduction="none")  # (3, 3)
    # the all-negative genre 2 weighs 1.5x (a positive weight would leave it unchanged)
    only2 = GenreBCELoss(class_weight=torch.tensor([0.0, 0.0, 1.5]))(logits, labels, labelled)
    assert only2["bce"].item() == pytest.approx(1.5 * plain[:, 2].sum().item() / 9, rel=1e-5)
    unweighted = GenreBCELoss()(logits, labels, labelled)["bce"]
    assert unweighted.item() == pytest.approx(plain.mean().item(), rel=1e-6)
    # with class weights from a skewed batch the rare genre's gradient grows, the common shrinks
    y_train = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 1]])  # genre 0 common, genre 1 rare
    x = torch.zeros(4, 2, requires_grad=True)
    GenreBCELoss(class_weight=torch.from_numpy(class_weights(y_train.numpy())))(
        x, y_train)["bce"].backward()
    x0 = torch.zeros(4, 2, requires_grad=True)
    GenreBCELoss()(x0, y_train)["bce"].backward()
    ratio = x.grad.abs().sum(0) / x0.grad.abs().sum(0)  # (2,) = the class weights
    np.testing.assert_allclose(ratio.numpy(), [0.4, 1.6], rtol=1e-5)


def _reference_clip(v: torch.Tensor, t: torch.Tensor, tau: float) -> float:
    """CLIP's symmetric InfoNCE, one anchor at a time, over rows that all have both."""
    v = F.normalize(v, dim=-1).tolist()
    t = F.normalize(t, dim=-1).tolist()
    n, total = len(v), 0.0
    for a, b in ((v, t), (t, v)):
        for i in range(n):
            sims = [sum(x * y for x, y in zip(a[i], b[k], strict=True)) / tau for k in range(n)]
            total += -math.log(math.exp(sims[i]) / sum(math.exp(s) for s in sims))
    return total / (2 * n)


def test_cross_modal_equals_clip_on_the_rows_that_have_the_modality():
    v, t = _views(n=10)
    avail = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    t_noisy = t.clone()
    t_noisy[~avail] = 1e3 * torch.randn(int((~avail).sum()), t.shape[1])  # absent: ignored
    got = CrossModalLoss(0.2)(v, t_noisy, avail)["cross_modal"].item()
    assert got == pytest.approx(_reference_clip(v[avail], t[avail], 0.2), rel=1e-5)


def test_cross_modal_rewards_matching_pairs_and_is_zero_without_the_modality():
    v, t = _views(n=8)
    avail = torch.ones(8, dtype=torch.bool)
    loss = CrossModalLoss(0.2)
    assert loss(v, v + 0.01 * t, avail)["cross_modal"] < loss(v, t, avail)["cross_modal"]
    v.requires_grad_(True)
    none = loss(v, t, torch.zeros(8, dtype=torch.bool))["cross_modal"]
    none.backward()  # attached to the graph (DDP sees the parameters used), gradient zero
    assert none.item() == 0.0 and float(v.grad.abs().sum()) == 0.0
