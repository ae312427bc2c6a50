"""Training losses: weighted multi-label BCE (coarse phase) and NT-Xent (fine-grained phase).

Both return a dict of named terms (open_clip's ``ClipLoss`` style); the training loop sums them.
Distributed settings are passed in: :class:`NTXentLoss` all-gathers the views of every worker
*with gradients* when ``world_size > 1``, so negatives come from the global batch
(PITFALLS: NT-Xent under DDP).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn


def class_weights(y_train: np.ndarray, max_ratio: float = 100.0) -> np.ndarray:
    """Per-genre class weights of the multimodal genre work: inverse genre frequency in the
    training labels ``y_train (N, G)``, normalised to mean 1 → ``(G,) float32``.

    A genre without positives is weighted as if it had one. Weights are clipped to at most
    ``max_ratio`` times the smallest before normalising, so one very rare genre cannot drown
    the others.
    """
    pos = np.asarray(y_train, dtype=np.float64).sum(axis=0)  # (G,)
    w = 1.0 / np.maximum(pos, 1.0)
    w = np.minimum(w, w.min() * max_ratio) if w.size else w
    return (w / w.mean()).astype(np.float32) if w.size else w.astype(np.float32)


class GenreBCELoss(nn.Module):
    """BCE-with-logits with per-genre weights; unlabelled rows are ignored.

    ``pos_weight (G,)`` scales the positive term of genre g (DESIGN §1: negatives / positives);
    ``class_weight (G,)`` scales both terms of genre g (the class-weighted BCE of the
    multimodal genre work, :func:`class_weights`); either, both or neither may be given.
    ``forward(logits (B, G) float32, labels (B, G) float32 multi-hot, labelled (B,) bool)
    -> {"bce": scalar}``: the mean over labelled rows × genres (zero, still attached to the
    graph, when no row is labelled, so DDP sees every parameter used).
    """

    pos_weight: Tensor | None
    class_weight: Tensor | None

    def __init__(
        self, pos_weight: Tensor | None = None, class_weight: Tensor | None = None
    ) -> None:
        super().__init__()
        for name, value in (("pos_weight", pos_weight), ("class_weight", class_weight)):
            self.register_buffer(
                name, None if value is None else torch.as_tensor(value, dtype=torch.float32))

    def forward(
        self, logits: Tensor, labels: Tensor, labelled: Tensor | None = None
    ) -> dict[str, Tensor]:
        per = F.binary_cross_entropy_with_logits(
            logits, labels, weight=self.class_weight, pos_weight=self.pos_weight,
            reduction="none",
        )  # (B, G)
        if labelled is None:
            return {"bce": per.mean()}
        weight = labelled.to(per.dtype).unsqueeze(1)  # (B, 1)
        n = weight.sum() * per.shape[1]
        return {"bce": (per * weight).sum() / n.clamp(min=1.0)}


def _gather_with_grad(x: Tensor, world_size: int) -> Tensor:
    """(b, D) local rows → (world_size * b, D), rank-major; gradients flow back to every rank."""
    if world_size == 1:
        return x
    with warnings.catch_warnings():  # deprecated in favour of a private API; still correct
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_fn.all_gather(x)
    return torch.cat(parts, dim=0)  # (W*b, D)


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent over the 2N views of the global batch.

    ``forward(z1 (b, D), z2 (b, D)) -> {"nt_xent": scalar}`` where row i of ``z1`` and ``z2``
    are two views of the same trailer and ``b`` is this worker's share (equal on every worker).
    Each local view is an anchor; its candidates are all 2N gathered views except itself, the
    positive being the other view of the same trailer. The anchors' targets are offset by
    ``rank * b`` (open_clip's local-loss layout), so the loss on a worker is the mean over its
    own 2b anchors and the mean over workers equals the single-process loss on the global batch.
    """

    def __init__(self, temperature: float, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.temperature = temperature
        self.rank = rank
        self.world_size = world_size

    def forward(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        b = z1.shape[0]
        z1 = F.normalize(z1, dim=-1)
        z2 = F.normalize(z2, dim=-1)
        all1 = _gather_with_grad(z1, self.world_size)  # (N, D), N = W*b
        all2 = _gather_with_grad(z2, self.world_size)  # (N, D)
        n = all1.shape[0]
        anchors = torch.cat([z1, z2], dim=0)  # (2b, D)
        candidates = torch.cat([all1, all2], dim=0)  # (2N, D)
        logits = anchors @ candidates.T / self.temperature  # (2b, 2N)
        own = self.rank * b + torch.arange(b, device=z1.device)  # (b,) global row of each trailer
        self_idx = torch.cat([own, own + n])  # (2b,) each anchor's own column
        pos_idx = torch.cat([own + n, own])  # (2b,) the other view of the same trailer
        rows = torch.arange(2 * b, device=z1.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool)  # (2b, 2N)
        is_self[rows, self_idx] = True
        logits = logits.masked_fill(is_self, float("-inf"))  # a view is not its own negative
        return {"nt_xent": F.cross_entropy(logits, pos_idx)}


class CrossModalLoss(nn.Module):
    """CLIP's symmetric InfoNCE between two modalities of the same trailers, some of which lack
    the second one.

    ``forward(v (b, D), t (b, D), avail (b,) bool) -> {"cross_modal": scalar}``: row i of ``v``
    (the trailer's projection) and of ``t`` (its title's, meaningless where ``avail`` is False)
    belong together. Every local row with ``avail`` is an anchor twice: its ``v`` against the
    ``t`` of every available row of the global batch and its ``t`` against their ``v``; the
    positive is its own partner. Gathered with gradients when ``world_size > 1``, as
    :class:`NTXentLoss`. Zero (still attached to the graph) when no local row is available.
    """

    def __init__(self, temperature: float, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.temperature = temperature
        self.rank = rank
        self.world_size = world_size

    def forward(self, v: Tensor, t: Tensor, avail: Tensor) -> dict[str, Tensor]:
        b = v.shape[0]
        v = F.normalize(v, dim=-1)
        t = F.normalize(t, dim=-1)
        all_v = _gather_with_grad(v, self.world_size)  # (N, D)
        all_t = _gather_with_grad(t, self.world_size)
        all_a = _gather_with_grad(avail.to(v.dtype).unsqueeze(1), self.world_size)[:, 0] > 0.5
        own = self.rank * b + torch.arange(b, device=v.device)  # (b,) global rows
        absent = ~all_a.unsqueeze(0)  # (1, N): candidates without the modality
        v_t = (v @ all_t.T / self.temperature).masked_fill(absent, -1e4)  # (b, N)
        t_v = (t @ all_v.T / self.temperature).masked_fill(absent, -1e4)
        per = F.cross_entropy(v_t, own, reduction="none") + F.cross_entropy(
            t_v, own, reduction="none")  # (b,)
        w = avail.to(per.dtype)
        return {"cross_modal": (per * w).sum() / (2 * w.sum().clamp(min=1.0))}
