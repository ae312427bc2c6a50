"""Plain-PyTorch training of the MMX network: coarse genre phase, then contrastive phase.

Reads top to bottom: helpers, the two per-phase objectives, ``train_epoch``, ``evaluate``,
``fit_coarse``, ``fit_contrastive``, ``predict``, checkpoints. Nothing here imports Ray: a Ray
Train worker (``mmx/train/ray_trainer.py``) calls ``fit_*`` with its ``rank`` / ``world_size``
after initialising a ``torch.distributed`` process group; with ``world_size > 1`` the loop
wraps the phase objective in DistributedDataParallel itself (do not also ``prepare_model``).

A worker holds either the whole :class:`~mmx.train.data.TrailerSet` (``owner`` None) and takes
its slice of each shared global batch, or only the rows it owns (``owner`` set, the others are
placeholders) and batches those (:func:`~mmx.train.data.shard_batches`). Evaluation is sharded
the same way (:func:`~mmx.train.data.shares`) and gathered, so all workers compute the same
metrics and take the same early-stopping decision; input statistics are summed over the workers'
rows (:func:`input_stats`).
Randomness is reseeded from ``(cfg.seed, phase, epoch, rank)`` at every epoch, so a run resumed
from an epoch checkpoint reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import fsspec
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Adam, Optimizer

from mmx.config import TrainConfig
from mmx.model.losses import CrossModalLoss, GenreBCELoss, NTXentLoss, class_weights
from mmx.model.network import MMXNetwork, random_windows
from mmx.train.data import TrailerSet, pos_weight, shard_batches, shares, stats_from_sums
from mmx.train.metrics import genre_metrics, silhouette

EpochCallback = Callable[[str, int, MMXNetwork, Optimizer, dict[str, Any]], None]
SILHOUETTE_MAX_SAMPLES = 5000  # silhouette is O(N²): subsample (deterministically) above this


@dataclasses.dataclass
class Best:
    """The best coarse epoch so far: its validation score, epoch and (optionally) weights."""

    metric: float
    epoch: int
    state: dict[str, Tensor] | None = None


@dataclasses.dataclass
class FitResult:
    """What a ``fit_*`` call returns: per-epoch metrics and the phase's summary numbers."""

    history: list[dict[str, Any]]
    best_metric: float | None = None
    best_epoch: int | None = None
    silhouette: list[float] = dataclasses.field(default_factory=list)


class Predictions(NamedTuple):
    """``embeddings`` (N, bottleneck) of the given model, ``coarse_embeddings`` (N, bottleneck)
    and sigmoid genre ``scores`` (N, G) of the coarse model; all float32."""

    embeddings: np.ndarray
    coarse_embeddings: np.ndarray
    scores: np.ndarray


# --------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (construct the model after this for identical workers)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def genre_loss(cfg: TrainConfig, y_train: np.ndarray) -> GenreBCELoss:
    """The genre BCE with the per-genre weights ``cfg.genre_loss_weights`` names, computed from
    the labelled training rows ``y_train (N, G)``: positive weights (negatives/positives),
    class weights (inverse frequency, mean 1) or none."""
    if cfg.genre_loss_weights == "pos_weight":
        return GenreBCELoss(pos_weight=torch.from_numpy(pos_weight(y_train)))
    if cfg.genre_loss_weights == "class":
        return GenreBCELoss(class_weight=torch.from_numpy(class_weights(y_train)))
    return GenreBCELoss()


def _epoch_seed(seed: int, phase: str, epoch: int, rank: int) -> int:
    digest = hashlib.sha1(f"{seed}/{phase}/{epoch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: _to_device(v, device) if isinstance(v, Mapping) else v.to(device)
        for k, v in batch.items()
    }


def unwrap(module: nn.Module) -> MMXNetwork:
    """The bare :class:`MMXNetwork` inside a DDP wrapper and/or a phase objective."""
    while isinstance(module, DistributedDataParallel):
        module = module.module
    if isinstance(module, (CoarseObjective, ContrastiveObjective)):
        module = module.model
    if not isinstance(module, MMXNetwork):
        raise TypeError(f"expected an MMXNetwork, got {type(module).__name__}")
    return module


def _set_trainable(
    model: MMXNetwork, phase: str, genre_head: bool = False, title_proj: bool = False
) -> list[nn.Parameter]:
    """Freeze the head the phase does not use (DDP must not wait for its gradients); the
    contrastive phase keeps the genre head when it also learns genres (``genre_head``) and the
    title experts' maps into the contrastive space when it has the cross-modal term
    (``title_proj``). The title experts' genre heads are never trained by gradient steps
    (:func:`fit_title_fusion`)."""
    unused = model.proj_head if phase == "coarse" else None if genre_head else model.head
    for p in model.parameters():
        p.requires_grad_(True)
    for p in unused.parameters() if unused is not None else ():
        p.requires_grad_(False)
    for p in model.title_heads.parameters():
        p.requires_grad_(False)
    for p in model.title_proj.parameters():
        p.requires_grad_(phase == "contrastive" and title_proj)
    return [p for p in model.parameters() if p.requires_grad]


def _wrap(objective: nn.Module, world_size: int, device: torch.device) -> nn.Module:
    if world_size == 1:
        return objective
    device_ids = [device.index] if device.type == "cuda" else None
    # the only buffers (input standardisation, BCE weights) are equal on every worker and never
    # change during training: sync them once at init, not before every forward (a collective)
    return DistributedDataParallel(objective, device_ids=device_ids, forward_sync_buffers=False)


def _mean_over_workers(
    values: dict[str, float], world_size: int, device: torch.device
) -> dict[str, float]:
    if world_size == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)  # NCCL: on GPU
    dist.all_reduce(t)
    return {k: float(v) / world_size for k, v in zip(values, t.tolist(), strict=True)}


def _gather_rows(x: Tensor, world_size: int) -> Tensor:
    """(m, D) on every worker → (W*m, D), worker-major (no gradients)."""
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)  # (W*m, D)


def gather_values(
    values: Sequence[float], world_size: int = 1, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Every worker's ``values`` (k numbers): (W, k) float64, row r from rank r."""
    t = torch.tensor([list(values)], dtype=torch.float64, device=torch.device(device))  # (1, k)
    return _gather_rows(t, world_size).cpu().numpy()  # (W, k)


def input_stats(
    data: TrailerSet, *, world_size: int = 1, device: torch.device | str = "cpu"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-expert input standardisation mean and std (D,) float32 over all rows of ``data``.

    When the rows are spread over workers (``data.owner`` set, ``world_size > 1``) each worker
    sums over the rows it holds and the float64 sums and counts are all-reduced, so every
    worker gets the statistics of the whole set; otherwise its own rows are the whole set.
    """
    sums = data.input_sums()
    if data.owner is None or world_size == 1:
        return stats_from_sums(sums)
    names = sorted(sums)  # the same experts and dims on every worker
    flat = np.concatenate([np.concatenate([sums[k][0], sums[k][1], [sums[k][2]]]) for k in names])
    t = torch.from_numpy(flat).to(torch.device(device))  # (Σ 2·D + 1,) float64
    dist.all_reduce(t)
    total = t.cpu().numpy()
    out, at = {}, 0
    for k in names:
        d = len(sums[k][0])
        out[k] = (total[at : at + d], total[at + d : at + 2 * d], float(total[at + 2 * d]))
        at += 2 * d + 1
    return stats_from_sums(out)


def _lr_warmup_cosine(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine annealing to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, Tensor)):
        return value.item()
    return value


# ------------------------------------------------------------------------------ objectives
def drop_experts(
    batch: Mapping[str, Any], p: float, columns: Tensor | None = None
) -> dict[str, Any]:
    """The batch with each expert of each trailer dropped (masked unavailable on all its clips)
    with probability ``p``, keeping at least one expert per trailer: modality dropout, so that
    no expert's branch leans on another's being there. ``columns``: the expert_mask columns
    that may be dropped (default all; a model passes its ``shot_cols``: late-fused title experts
    are not part of the network's forward in training). Uses torch's global generator."""
    mask: Tensor = batch["expert_mask"]  # (B, C, E)
    n_batch, _, n_all = mask.shape
    cols = torch.arange(n_all) if columns is None else columns.cpu()
    n_experts = len(cols)
    keep = torch.rand(n_batch, n_experts) >= p  # (B, E')
    rescue = torch.randint(n_experts, (n_batch,))  # (B,) kept when all were dropped
    none = ~keep.any(dim=1)
    keep[none, rescue[none]] = True
    full = torch.ones(n_batch, n_all, dtype=torch.bool)
    full[:, cols] = keep
    out = dict(batch)
    out["expert_mask"] = mask & full.to(mask.device).unsqueeze(1)  # (B, C, E)
    return out


class CoarseObjective(nn.Module):
    """batch → {"bce": loss}: genre logits of the trailer embedding vs the multi-hot labels.

    ``random_windows``: in training, each trailer is seen through windows at random positions
    (a new draw every step) instead of the evenly spaced ones used for inference;
    ``expert_dropout``: probability of dropping each expert of a trailer in a training step.
    """

    def __init__(
        self,
        model: MMXNetwork,
        loss: GenreBCELoss,
        random_windows: bool = False,
        expert_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.random_windows = random_windows
        self.expert_dropout = expert_dropout

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        m, cfg = self.model, self.model.cfg
        windows = None
        if self.training and self.expert_dropout > 0:
            batch = drop_experts(batch, self.expert_dropout, m.shot_cols)
        if self.random_windows and self.training:
            windows = random_windows(batch["n_clips"], cfg.n_seqs, cfg.shots_per_seq)  # (B, S, n)
        logits = m.classify(m.embed(batch, windows))  # (B, G)
        return self.loss(logits, batch["labels"], batch["labelled"])


class ContrastiveObjective(nn.Module):
    """batch → {"nt_xent": loss}: two views per trailer.

    ``views="halves"``: windows over the first and over the second half of its clips (the
    paper's); ``"random"``: two independent draws of windows at random positions over all its
    clips. The shots are encoded once; both views gather their windows from that one encoding,
    unless ``expert_dropout`` > 0: then each view sees its own random subset of the experts
    (two encodings), so a trailer must be recognised across modalities.

    ``title_loss`` with ``title_weight`` > 0 and a model with late-fused title experts: adds
    {"cross_modal": …}, the mean over title experts of :class:`CrossModalLoss` between each
    view's projection and the title expert's (``model.title_project``), over the trailers that
    have that input.
    """

    def __init__(
        self, model: MMXNetwork, loss: NTXentLoss, views: str = "halves",
        expert_dropout: float = 0.0, genre_loss: GenreBCELoss | None = None,
        genre_weight: float = 0.0, title_loss: CrossModalLoss | None = None,
        title_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.views = views
        self.expert_dropout = expert_dropout
        self.genre_loss = genre_loss  # with genre_weight > 0: keep learning genres too
        self.genre_weight = genre_weight
        self.title_loss = title_loss if model.title_experts and title_weight > 0 else None
        self.title_weight = title_weight

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        m, cfg = self.model, self.model.cfg
        view1 = view2 = batch
        if self.training and self.expert_dropout > 0:
            view1 = drop_experts(batch, self.expert_dropout, m.shot_cols)
            view2 = drop_experts(batch, self.expert_dropout, m.shot_cols)
            shots = m.encode_shots(view1)  # (B, C, shot_dim)
            shots2 = m.encode_shots(view2)
        else:
            shots = shots2 = m.encode_shots(batch)  # (B, C, shot_dim)
        n_clips = batch["n_clips"]  # (B,)
        if self.views == "random":
            first = random_windows(n_clips, cfg.n_seqs, cfg.shots_per_seq)  # (B, S, n)
            second = random_windows(n_clips, cfg.n_seqs, cfg.shots_per_seq)
        else:
            half = n_clips // 2
            first = m.windows(n_clips, cfg.n_seqs, cfg.shots_per_seq, lo=0, hi=half)  # (B, S, n)
            second = m.windows(n_clips, cfg.n_seqs, cfg.shots_per_seq, lo=half, hi=n_clips)
        e1 = m.embed(view1, first, shots)  # (B, bottleneck)
        e2 = m.embed(view2, second, shots2)
        p1, p2 = m.project(e1), m.project(e2)  # (B, proj_head_dim) each
        terms = self.loss(p1, p2)
        if self.title_loss is not None:
            zs, avail = m.title_project(batch)  # [(B, proj_head_dim)] * T, (B, T)
            cross = sum(self.title_loss(p, z, avail[:, t])["cross_modal"]
                        for t, z in enumerate(zs) for p in (p1, p2))
            terms["cross_modal"] = self.title_weight * cross / (2 * len(zs))
        if self.genre_loss is not None and self.genre_weight > 0:
            logits = m.classify(torch.cat([e1, e2]))  # (2B, G): both views are the trailer
            labels = torch.cat([batch["labels"], batch["labels"]])
            labelled = torch.cat([batch["labelled"], batch["labelled"]])
            bce = self.genre_loss(logits, labels, labelled)["bce"]
            terms["bce"] = self.genre_weight * bce
        return terms


# ------------------------------------------------------------------------ epoch and eval
def train_epoch(
    module: nn.Module,
    data: TrailerSet,
    batches: Sequence[np.ndarray],
    optimizer: Optimizer,
    *,
    device: torch.device,
    lr_at: Callable[[int], float] | None = None,
    first_step: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """One pass over ``batches`` (row numbers into ``data``); returns the mean of each loss term
    over batches and workers. ``lr_at(step)`` sets the learning rate before every step."""
    module.train()
    totals: dict[str, float] = {}
    for i, rows in enumerate(batches):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(first_step + i)
        batch = _to_device(data.batch(rows), device)
        terms = module(batch)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach())
    means = {name: total / max(len(batches), 1) for name, total in totals.items()}
    return _mean_over_workers(means, world_size, device)


@torch.no_grad()
def _infer(
    model: MMXNetwork, data: TrailerSet, rows: np.ndarray, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Embeddings (m, bottleneck) and sigmoid scores (m, G) of ``rows``, in eval mode, on CPU."""
    model.eval()
    embs, scores = [], []
    for start in range(0, len(rows), batch_size):
        out = model(_to_device(data.batch(rows[start : start + batch_size]), device))
        embs.append(out["embedding"].float().cpu())
        scores.append(torch.sigmoid(out["logits"]).float().cpu())
    if not embs:
        return torch.zeros(0, model.cfg.bottleneck), torch.zeros(0, model.n_genres)
    return torch.cat(embs), torch.cat(scores)


def infer_rows(
    model: MMXNetwork,
    data: TrailerSet,
    rows: np.ndarray,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n, bottleneck) and scores (n, G) for ``rows``, sharded over workers and
    gathered, so every worker returns the full arrays.

    Each worker infers its :func:`~mmx.train.data.shares` of ``rows`` (the rows it owns when
    ``data.owner`` is set), zero-padded to the largest share for the all-gather; every worker
    knows every share, so the gathered rows are put back at their positions.
    """
    device = torch.device(device)
    rows = np.asarray(rows, dtype=np.int64)
    parts = shares(len(rows), world_size, None if data.owner is None else data.owner[rows])
    emb, scores = _infer(model, data, rows[parts[rank]], batch_size, device)
    emb, scores = _gather_parts([emb, scores], parts, rank, world_size, device)
    return emb, scores


def _gather_parts(
    local: Sequence[Tensor], parts: Sequence[np.ndarray], rank: int, world_size: int,
    device: torch.device,
) -> list[np.ndarray]:
    """Each worker's rows of ``local`` tensors ((k_rank, D) float32; worker ``r`` holds the rows
    at positions ``parts[r]``) → the full (n, D) arrays on every worker, rows in position
    order."""
    if world_size == 1:
        return [x.numpy() for x in local]
    n = sum(len(p) for p in parts)
    m = max(len(p) for p in parts)
    if n == 0:  # n is the same on every worker: all skip the gather
        return [x.numpy() for x in local]
    positions = np.full((world_size, m), -1, dtype=np.int64)  # (W, m) position of each slot
    for r, part in enumerate(parts):
        positions[r, : len(part)] = part
    positions = positions.reshape(-1)  # (W*m,) worker-major, as gathered
    real = positions >= 0  # padding slots hold zeros
    out = []
    for x in local:
        gathered = _gather_rows(_pad_rows(x, m).to(device), world_size).cpu()  # (W*m, D)
        full = np.zeros((n, x.shape[1]), dtype=np.float32)
        full[positions[real]] = gathered.numpy()[real]
        out.append(full)
    return out


def _pad_rows(x: Tensor, m: int) -> Tensor:
    """(k, D) → (m, D) with zero rows appended (k <= m)."""
    return torch.cat([x, x.new_zeros(m - x.shape[0], *x.shape[1:])]) if x.shape[0] < m else x


def evaluate(
    model: MMXNetwork,
    data: TrailerSet,
    *,
    threshold: float = 0.3,
    batch_size: int = 64,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Genre metrics (:func:`genre_metrics`) on the labelled rows of ``data``; {} if none."""
    rows = np.flatnonzero(data.labelled)
    if rows.size == 0:
        return {}
    _, scores = infer_rows(
        model, data, rows, batch_size=batch_size, rank=rank, world_size=world_size, device=device
    )
    return genre_metrics(data.labels[rows], scores, threshold, data.genres)


def _silhouette(
    model: MMXNetwork,
    data: TrailerSet | None,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
) -> float:
    """Cosine silhouette of the bottleneck embeddings w.r.t. the primary genre (nan if none)."""
    if data is None:
        return float("nan")
    rows = np.flatnonzero(data.primary >= 0)
    if rows.size < 3:
        return float("nan")
    emb, _ = infer_rows(
        model, data, rows, batch_size=batch_size, rank=rank, world_size=world_size, device=device
    )
    return silhouette(emb, data.primary[rows], sample_size=SILHOUETTE_MAX_SAMPLES)


# ---------------------------------------------------------------------- title experts
TITLE_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # L2 penalties a title head is chosen among (by CV)
TITLE_FOLDS = 3
FUSION_L2 = 0.01  # on the fusion weights, fitted on few validation trailers
MIN_FUSION_ROWS = 10  # fewer labelled validation trailers: the title experts get weight 0


@torch.no_grad()
def _title_rows(
    model: MMXNetwork, data: TrailerSet, rows: np.ndarray, batch_size: int, device: torch.device
) -> list[Tensor]:
    """For ``rows``: the trailer's genre logits (m, G), the title experts' standardised
    vectors concatenated (m, ΣD) and their availability (m, T) as float32, on CPU."""
    model.eval()
    out: list[list[Tensor]] = [[], [], []]
    for start in range(0, len(rows), batch_size):
        batch = _to_device(data.batch(rows[start : start + batch_size]), device)
        xs, avail = model.title_inputs(batch)
        out[0].append(model.classify(model.embed(batch)).float().cpu())
        out[1].append(torch.cat(xs, dim=-1).float().cpu())
        out[2].append(avail.float().cpu())
    if not rows.size:
        width = sum(model.expert_dims[e] for e in model.title_experts)
        return [torch.zeros(0, model.n_genres), torch.zeros(0, width),
                torch.zeros(0, len(model.title_experts))]
    return [torch.cat(parts) for parts in out]


def _logistic(x: Tensor, y: Tensor, l2: float) -> tuple[Tensor, Tensor]:
    """Multi-label logistic regression, full batch: x (n, D) float64, y (n, G) → weight (G, D),
    bias (G,) minimising the mean BCE + ``l2`` · ‖weight‖² (L-BFGS, deterministic)."""
    w = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    b = _log_odds(y.mean(0)).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().T, b.detach()


def _log_odds(p: Tensor) -> Tensor:
    p = p.clamp(1e-3, 1 - 1e-3)
    return torch.log(p / (1 - p))


def _micro_ap(y: np.ndarray, logits: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y.ravel(), logits.ravel())) if y.any() else float("nan")


def _fit_title_head(x: Tensor, y: Tensor, seed: int) -> tuple[Tensor, Tensor, float, float]:
    """One title expert's head: the L2 penalty of :data:`TITLE_L2` with the best
    :data:`TITLE_FOLDS`-fold cross-validated AU(PRC) micro on ``x (n, D)``, ``y (n, G)``, then
    refitted on all rows → weight (G, D), bias (G,), that penalty, its CV score."""
    n = len(x)
    folds = np.array_split(np.random.default_rng(seed).permutation(n), min(TITLE_FOLDS, n))
    best_l2, best = TITLE_L2[-1], -1.0
    if n >= 2 * TITLE_FOLDS:
        for l2 in TITLE_L2:
            logits = np.zeros(tuple(y.shape))
            for held in folds:
                fit = np.setdiff1d(np.arange(n), held)
                w, b = _logistic(x[fit], y[fit], l2)
                logits[held] = (x[held] @ w.T + b).numpy()
            score = _micro_ap(y.numpy(), logits)
            if score > best:
                best_l2, best = l2, score
    w, b = _logistic(x, y, best_l2)
    return w, b, best_l2, best


def _fit_fusion(z: Tensor, y: Tensor) -> Tensor:
    """Non-negative fusion weights (K,) of the logits ``z (n, G, K)`` minimising the mean BCE of
    ``z @ weights`` against ``y (n, G)`` + :data:`FUSION_L2` · ‖weights‖² (L-BFGS)."""
    raw = torch.zeros(z.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([raw], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        weights = F.softplus(raw)
        loss = F.binary_cross_entropy_with_logits(z @ weights, y) + FUSION_L2 * (
            weights * weights).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return F.softplus(raw).detach()


def fit_title_fusion(
    model: MMXNetwork,
    train: TrailerSet,
    val: TrailerSet,
    cfg: TrainConfig,
    *,
    batch_size: int = 64,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Fit the late-fused title experts of a coarse-trained ``model`` (network step 6).

    Each title expert's genre head is a logistic regression on its standardised vector over
    the labelled ``train`` trailers that have it (L2 by cross-validation: :func:`_fit_title_head`),
    whose logits are then taken relative to those trailers' genre frequencies (the prior's log
    odds subtracted from its bias): what the title adds to what the trailer's logits already
    say, and 0 for a title that lacks the input, as for a masked one. Measured on the quality
    benchmark's archive (seed 0, 64 withheld): without the centring the heads' prior was
    counted twice and the fused scores lost recall at ``train.threshold``. Then the non-negative weights of ``[trailer logits, *title logits]`` are fitted on the
    labelled ``val`` trailers (:func:`_fit_fusion`), which neither the heads nor the network's
    weights learned from, so a title expert that does not help there gets weight ~0. With fewer
    than :data:`MIN_FUSION_ROWS` labelled validation trailers the weights stay ``[1, 0, …]``.
    Rows are gathered from every worker and every worker computes the same fit (float64, CPU);
    beyond ``cfg.title_fusion_max_rows`` labelled trailers per split, a random subset of that
    many (seeded by ``cfg.seed``, the same on every worker) bounds the memory of the fit.
    Returns what was fitted (JSON-safe); {} when the model fuses no title expert.
    """
    m = unwrap(model)
    if not m.title_heads:
        return {}
    device = torch.device(device)
    gathered, labelled = {}, {}
    for name, part in (("train", train), ("val", val)):
        rows = np.flatnonzero(part.labelled)
        labelled[name] = len(rows)
        if len(rows) > cfg.title_fusion_max_rows:
            rng = np.random.default_rng([cfg.seed, len(rows)])
            rows = np.sort(rng.choice(rows, size=cfg.title_fusion_max_rows, replace=False))
        parts = shares(len(rows), world_size, None if part.owner is None else part.owner[rows])
        local = _title_rows(m, part, rows[parts[rank]], batch_size, device)
        logits, x, avail = (torch.from_numpy(a).double() for a in _gather_parts(
            local, parts, rank, world_size, device))
        gathered[name] = (logits, x, avail > 0.5, torch.from_numpy(part.labels[rows]).double())
    _, x_tr, avail_tr, y_tr = gathered["train"]
    logits_va, x_va, avail_va, y_va = gathered["val"]
    bounds = np.cumsum([0, *(m.expert_dims[e] for e in m.title_experts)])
    heads: dict[str, Any] = {}
    z_va = [logits_va]
    for t, name in enumerate(m.title_experts):
        has = avail_tr[:, t]
        x = x_tr[has, bounds[t] : bounds[t + 1]]
        if int(has.sum()) < 2:
            w = torch.zeros(m.n_genres, x.shape[1], dtype=torch.float64)
            b, l2, cv = torch.zeros(m.n_genres, dtype=torch.float64), None, float("nan")
        else:
            w, b, l2, cv = _fit_title_head(x, y_tr[has], cfg.seed)
            b = b - _log_odds(y_tr[has].mean(0))  # evidence relative to the prior (see above)
        with torch.no_grad():
            m.title_heads[name].weight.copy_(w.float())
            m.title_heads[name].bias.copy_(b.float())
        z_va.append((x_va[:, bounds[t] : bounds[t + 1]] @ w.T + b) * avail_va[:, t : t + 1])
        heads[name] = {"n_train": int(has.sum()), "l2": l2, "cv_au_prc_micro": cv}
    z = torch.stack(z_va, dim=-1)  # (n_val, G, 1 + T)
    before = _micro_ap(y_va.numpy(), logits_va.numpy())
    if len(y_va) < MIN_FUSION_ROWS:
        weights = torch.zeros(z.shape[-1], dtype=torch.float64)
        weights[0] = 1.0
        reason = f"{len(y_va)} labelled validation trailers (< {MIN_FUSION_ROWS}): titles unused"
    else:
        weights = _fit_fusion(z, y_va)
        reason = f"fitted on {len(y_va)} labelled validation trailers"
    with torch.no_grad():
        m.fusion.copy_(weights.float())
    return {
        "experts": heads,
        "weights": dict(zip(("trailer", *m.title_experts), map(float, weights), strict=True)),
        "val_au_prc_micro": {"trailer": before, "fused": _micro_ap(y_va.numpy(),
                                                                   (z @ weights).numpy())},
        "n_val": len(y_va),
        "reason": reason,
        "rows": {split: {"labelled": n, "used": min(n, cfg.title_fusion_max_rows)}
                 for split, n in labelled.items()},
    }


# ------------------------------------------------------------------------------ the fits
def fit_coarse(
    model: MMXNetwork,
    train: TrailerSet,
    val: TrailerSet,
    cfg: TrainConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
    start_epoch: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    best: Best | None = None,
    history: list[dict[str, Any]] | None = None,
) -> FitResult:
    """Coarse genre training (DESIGN §1): weighted BCE, Adam(AMSGrad), early stopping.

    Trains on the labelled rows of ``train`` with the global batch ``cfg.batch_size`` split over
    ``world_size`` workers, evaluates AU(PRC) weighted on ``val`` after each epoch, stops after
    ``cfg.patience`` epochs without improvement and leaves ``model`` holding the best epoch's
    weights. Without labelled validation rows the score is the negative training loss.
    Input standardisation statistics are set from all of ``train`` (:func:`input_stats`) when
    ``start_epoch == 0``. With ``train.owner`` set each worker trains on the rows it owns.

    Resuming: load the last epoch's weights into ``model``, pass ``start_epoch = epoch + 1``,
    its ``optimizer_state`` and ``best`` (metric, epoch and the best weights, or None weights
    if that epoch is the one loaded). ``on_epoch("coarse", epoch, model, optimizer, metrics)``
    runs on every worker after every epoch; metrics has ``improved`` to save a best checkpoint.
    """
    device = torch.device(device)
    seed_everything(cfg.seed)
    model.to(device)
    if start_epoch == 0:
        model.set_input_stats(input_stats(train, world_size=world_size, device=device))
    rows = np.flatnonzero(train.labelled)  # the coarse phase learns from labelled trailers
    loss = genre_loss(cfg, train.labels[rows]).to(device)
    params = _set_trainable(model, "coarse")
    objective = CoarseObjective(model, loss, cfg.coarse_windows == "random", cfg.expert_dropout)
    module = _wrap(objective, world_size, device)
    optimizer = Adam(params, lr=cfg.coarse_lr, amsgrad=True, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    history = list(history or [])
    if best is not None and best.state is None:  # the loaded weights are the best ones
        best = Best(best.metric, best.epoch, copy.deepcopy(model.state_dict()))

    for epoch in range(start_epoch, cfg.coarse_epochs):
        started = time.perf_counter()
        torch.manual_seed(_epoch_seed(cfg.seed, "coarse", epoch, rank))  # dropout
        batches = shard_batches(rows, train.owner, rank, world_size, epoch, cfg.seed,
                                cfg.batch_size)
        terms = train_epoch(
            module,
            train,
            batches,
            optimizer,
            device=device,
            world_size=world_size,
        )
        val_metrics = evaluate(
            model,
            val,
            threshold=cfg.threshold,
            batch_size=cfg.batch_size,
            rank=rank,
            world_size=world_size,
            device=device,
        )
        score = float(val_metrics.get("au_prc_weighted", float("nan")))
        if not math.isfinite(score):
            score = -terms.get("bce", 0.0)
        improved = best is None or score > best.metric
        if improved:
            best = Best(score, epoch, copy.deepcopy(model.state_dict()))
        metrics = {
            "epoch": epoch,
            **terms,
            "val": val_metrics,
            "score": score,
            "improved": improved,
            "best_metric": best.metric,
            "best_epoch": best.epoch,
            # the phase ends after this epoch: do not resume from a checkpoint with done=True
            "done": epoch - best.epoch >= cfg.patience or epoch == cfg.coarse_epochs - 1,
            "seconds": time.perf_counter() - started,  # training + validation, this worker
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch("coarse", epoch, model, optimizer, metrics)
        if metrics["done"]:
            break  # every worker sees the same gathered metrics, so all stop together

    if best is not None and best.state is not None:
        model.load_state_dict(best.state)
    return FitResult(history, best.metric if best else None, best.epoch if best else None)


def fit_contrastive(
    model: MMXNetwork,
    train: TrailerSet,
    cfg: TrainConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    silhouette_set: TrailerSet | None = None,
    on_epoch: EpochCallback | None = None,
    start_epoch: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    silhouettes: Sequence[float] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> FitResult:
    """Fine-grained contrastive training (DESIGN §1), continuing from the coarse model.

    Two views per trailer of ``train`` (labelled or not): windows over the first and the second
    half of its clips, embedded from one shot encoding, projected by the head (m, n); NT-Xent
    with ``cfg.temperature`` over the 2N views of the global batch; Adam(AMSGrad) at
    ``cfg.contrastive_lr`` with linear warm-up over ``cfg.warmup_epochs`` then cosine annealing
    (per step, a pure function of the step, so nothing to save for resuming). The genre head is
    frozen (and afterwards stale: take genre scores from the coarse model), unless
    ``cfg.contrastive_genre_weight`` > 0: then the labelled trailers' BCE (both views) is added
    with that weight and the head keeps learning.

    ``silhouette`` of the result: cosine silhouette of the bottleneck embeddings of
    ``silhouette_set`` w.r.t. the primary genre, first before training (the coarse model), then
    after every epoch. Resuming: ``start_epoch``, ``optimizer_state`` and the ``silhouettes`` so
    far (``metrics["silhouettes"]`` of the last epoch). With ``train.owner`` set each worker
    trains on the rows it owns.
    """
    device = torch.device(device)
    seed_everything(cfg.seed)
    model.to(device)
    learn_genres = cfg.contrastive_genre_weight > 0 and model.n_genres > 0
    cross_modal = bool(model.title_experts) and cfg.contrastive_title_weight > 0
    params = _set_trainable(model, "contrastive", genre_head=learn_genres, title_proj=cross_modal)
    loss = NTXentLoss(cfg.temperature, rank=rank, world_size=world_size)
    title_loss = CrossModalLoss(cfg.temperature, rank=rank, world_size=world_size)
    genre_bce = None
    if learn_genres:
        rows = np.flatnonzero(train.labelled)
        genre_bce = genre_loss(cfg, train.labels[rows]).to(device)
    objective = ContrastiveObjective(model, loss, cfg.contrastive_views, cfg.expert_dropout,
                                     genre_bce, cfg.contrastive_genre_weight, title_loss,
                                     cfg.contrastive_title_weight)
    module = _wrap(objective, world_size, device)
    optimizer = Adam(params, lr=cfg.contrastive_lr, amsgrad=True, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    every_row = np.arange(len(train))
    steps = len(shard_batches(every_row, train.owner, 0, world_size, 0, cfg.seed, cfg.batch_size))
    warmup, total = cfg.warmup_epochs * steps, cfg.contrastive_epochs * steps

    def lr_at(step: int) -> float:
        return _lr_warmup_cosine(step, cfg.contrastive_lr, warmup, total)

    def score_silhouette() -> float:
        return _silhouette(
            model,
            silhouette_set,
            batch_size=cfg.batch_size,
            rank=rank,
            world_size=world_size,
            device=device,
        )

    sil = list(silhouettes or [])
    if start_epoch == 0:
        sil = [score_silhouette()]  # the coarse model's
    history = list(history or [])

    for epoch in range(start_epoch, cfg.contrastive_epochs):
        started = time.perf_counter()
        torch.manual_seed(_epoch_seed(cfg.seed, "contrastive", epoch, rank))  # dropout
        batches = shard_batches(every_row, train.owner, rank, world_size, epoch, cfg.seed,
                                cfg.batch_size)
        terms = train_epoch(
            module,
            train,
            batches,
            optimizer,
            device=device,
            lr_at=lr_at,
            first_step=epoch * steps,
            world_size=world_size,
        )
        sil.append(score_silhouette())
        metrics = {
            "epoch": epoch,
            **terms,
            "lr": optimizer.param_groups[0]["lr"],
            "silhouette": sil[-1],
            "silhouettes": list(sil),
            "done": epoch == cfg.contrastive_epochs - 1,
            "seconds": time.perf_counter() - started,  # training + silhouette, this worker
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch("contrastive", epoch, model, optimizer, metrics)
    return FitResult(history, silhouette=sil)


def predict(
    model: MMXNetwork,
    data: TrailerSet,
    batch_size: int = 64,
    *,
    coarse_model: MMXNetwork | None = None,
    device: torch.device | str = "cpu",
) -> Predictions:
    """Embed every trailer of ``data`` (single process, eval mode).

    ``embeddings`` come from ``model`` (the fine-grained one); ``coarse_embeddings`` and genre
    ``scores`` from ``coarse_model`` (default ``model``): after the contrastive phase only the
    coarse model's head matches its bottleneck.
    """
    rows = np.arange(len(data))
    device = torch.device(device)
    model.to(device)
    emb, scores = infer_rows(model, data, rows, batch_size=batch_size, device=device)
    if coarse_model is None:
        return Predictions(emb, emb, scores)
    coarse_model.to(device)
    coarse_emb, scores = infer_rows(coarse_model, data, rows, batch_size=batch_size, device=device)
    return Predictions(emb, coarse_emb, scores)


# ----------------------------------------------------------------------------- checkpoints
class Checkpoint(NamedTuple):
    """A loaded checkpoint: model weights, optimizer state (or None) and the meta dict."""

    model_state: dict[str, Tensor]
    optimizer_state: dict[str, Any] | None
    meta: dict[str, Any]


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state dict → (tensors for safetensors, JSON-safe rest): no pickle."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": _jsonable(state["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": [dict(g) for g in rest["param_groups"]]}


class CheckpointError(ValueError):
    """A checkpoint folder that is unfinished or damaged (its ``meta.json`` missing, not
    JSON, or naming files that are missing or differ from their recorded checksums)."""


META = "meta.json"
# names of the files a checkpoint folder may hold besides meta.json (current and older layouts)
_CKPT_FILES = ("model", "optimizer")


def save_checkpoint(
    path: str,
    model: nn.Module,
    optimizer: Optimizer | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint under ``path`` (a local dir or any fsspec URL, e.g. s3://).

    The weights (``model-<v>.safetensors``) and optimizer state (``optimizer-<v>.safetensors``
    + ``optimizer-<v>.json``, when an optimizer is given) go to files named for this version
    ``v``; ``meta.json``, written last and atomically, names them with their SHA-256 and is the
    checkpoint's commit point; then the files of earlier versions are deleted. Writing over an
    existing checkpoint (``coarse-best``) is therefore safe: a kill at any moment leaves
    ``meta.json`` naming either the old complete version or the new one, never a mix.
    ``meta.json`` holds the model's constructor arguments under ``"model"`` plus ``meta``
    (e.g. phase, epoch, metric, run config). DDP and phase wrappers are unwrapped first."""
    from mmx import killpoints, storage

    raw = unwrap(model)
    # (uuid4 draws from os.urandom: the seeded RNGs of the training stay untouched)
    version = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"
    weights = {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items()}
    blobs = {f"model-{version}.safetensors": save_safetensors(weights)}
    files = {"model": f"model-{version}.safetensors"}
    if optimizer is not None:
        tensors, rest = _flatten_optimizer(optimizer.state_dict())
        files |= {"optimizer": f"optimizer-{version}.safetensors",
                  "optimizer_state": f"optimizer-{version}.json"}
        blobs[files["optimizer"]] = save_safetensors(tensors)
        blobs[files["optimizer_state"]] = json.dumps(rest).encode()
    for name, data in blobs.items():
        storage.write_bytes(storage.join(path, name), data)
    killpoints.reached("checkpoint")
    full_meta = {**_jsonable(dict(meta or {})), "model": raw.init_args(), "files": files,
                 "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}}
    storage.write_text(storage.join(path, META), json.dumps(full_meta, indent=2, sort_keys=True))
    _drop_stale_files(path, set(blobs))


def _drop_stale_files(path: str, keep: set[str]) -> None:
    """Delete the weight/optimizer files of ``path`` that ``meta.json`` no longer names (older
    versions, or those of a save killed before its ``meta.json``)."""
    fs, root = fsspec.core.url_to_fs(str(path))
    doomed = [f for f in fs.ls(root, detail=False)
              if (name := f.rstrip("/").rsplit("/", 1)[-1]) not in keep
              and name.startswith(_CKPT_FILES) and (".safetensors" in name or ".json" in name)]
    if doomed:
        fs.rm(doomed)


def read_checkpoint_meta(path: str) -> dict[str, Any]:
    """The validated ``meta.json`` of the checkpoint at ``path``; :class:`CheckpointError` if
    it is missing, not JSON, or names files that do not exist."""
    fs, root = fsspec.core.url_to_fs(str(path))
    try:
        with fs.open(f"{root}/{META}", "r") as f:
            meta = json.loads(f.read())
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no {META} (missing or unfinished checkpoint)") from err
    except ValueError as err:  # truncated or garbled
        raise CheckpointError(f"{path}: {META} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or "model" not in meta:
        raise CheckpointError(f"{path}: {META} has no model description")
    for name in _checkpoint_files(meta).values():
        if not fs.exists(f"{root}/{name}"):
            raise CheckpointError(f"{path}: {META} names {name}, which is missing")
    return meta


def checkpoint_complete(path: str) -> bool:
    """Whether ``path`` holds a finished, readable checkpoint (its files are checked against
    their checksums when loaded)."""
    try:
        read_checkpoint_meta(path)
    except CheckpointError:
        return False
    return True


def _checkpoint_files(meta: Mapping[str, Any]) -> dict[str, str]:
    """role → file name (checkpoints from before versioned files used fixed names)."""
    return dict(meta["files"]) if "files" in meta else {"model": "model.safetensors"}


def load_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (weights on CPU); every file is
    checked against the checksum ``meta.json`` records (:class:`CheckpointError` if not)."""
    meta = read_checkpoint_meta(path)
    fs, root = fsspec.core.url_to_fs(str(path))
    files = _checkpoint_files(meta)
    if "files" not in meta and fs.exists(f"{root}/optimizer.json"):  # the older layout
        files |= {"optimizer": "optimizer.safetensors", "optimizer_state": "optimizer.json"}
    sums = meta.get("sha256", {})

    def read(name: str) -> bytes:
        with fs.open(f"{root}/{name}", "rb") as f:
            data = f.read()
        if name in sums and hashlib.sha256(data).hexdigest() != sums[name]:
            raise CheckpointError(f"{path}: {name} differs from the checksum in {META}")
        return data

    model_state = load_safetensors(read(files["model"]))
    optimizer_state = None
    if "optimizer" in files:
        tensors = load_safetensors(read(files["optimizer"]))
        optimizer_state = _unflatten_optimizer(tensors, json.loads(read(files["optimizer_state"])))
    return Checkpoint(model_state, optimizer_state, meta)


def load_model(path: str) -> tuple[MMXNetwork, dict[str, Any]]:
    """Rebuild the network stored at ``path`` (eval mode) and return it with its meta."""
    ckpt = load_checkpoint(path)
    model = MMXNetwork.from_init_args(ckpt.meta["model"])
    model.load_state_dict(ckpt.model_state)
    model.eval()
    return model, ckpt.meta
