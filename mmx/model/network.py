"""The MMX network (DESIGN §1): experts → gated shot vectors → sequences → trailer embedding.

Pipeline per trailer, every step vectorised over trailers, shots, windows and experts:

1. each expert's per-shot feature is standardised (train-split statistics held as buffers, so a
   checkpoint is self-contained) and linearly projected to ``proj_dim``; the audio expert's
   per-0.96 s frames are first aggregated by a learnable :class:`NetVLAD`;
2. collaborative gating modulates each expert by its relations with the other *available*
   experts, a gated embedding unit maps each expert to ``shot_dim``, and the availability-masked
   concatenation of the per-expert units is fused by one linear layer into one L2-normalised
   ``shot_dim`` vector per shot (``gating=False``: the masked concatenation of the projections
   goes straight into that linear layer: the naive-concatenation ablation);
3. ``n_seqs`` windows of ``shots_per_seq`` consecutive shots are gathered from the encoded shots
   (each distinct shot is encoded once), flattened and passed through MLP j;
4. the sequence vectors are concatenated (or summed) and passed through MLP k to the bottleneck,
   the trailer embedding; MLP l maps it to genre logits, the projection head (m, n) to the
   contrastive space;
5. ``pooled_skip``: the mean and std over the clips the windows cover of each *standardised*
   expert input (audio: over their frames) go through one linear layer into the bottleneck too,
   added to MLP k's output. The shot path compresses each shot to ``shot_dim`` before anything
   sees the whole trailer; this skip keeps the trailer-level statistics a linear probe on the
   same features reads (measured: without it, the learned genre scores and fine embedding fell
   below a logistic regression on pooled features, ``benchmarks/quality.py``).
6. per-title experts (``title_experts``: one vector per title, broadcast to every clip) are
   fused *late* (``cfg.title_fusion="late"``, the default): they stay out of steps 1–5, so the
   trailer embedding is the shot experts' alone, and each has a linear genre head over its
   standardised vector whose logits (relative to the genres' prior: 0 adds nothing, as for a
   title that lacks the input) are added to the trailer's, scaled by the non-negative
   ``fusion`` weights (``[trailer, *title_experts]``). Heads and weights are not learned with
   the network: :func:`mmx.train.loop.fit_title_fusion` fits each head as a regularised
   logistic regression on the training split after the coarse phase and the weights on the
   validation split (a stacking step), so an uninformative title expert gets weight 0. Until
   then the weights are ``[1, 0, …]``: the trailer's logits alone. Measured
   (``benchmarks/quality.py --with-metadata``): gated with the shot experts, the wide title
   vectors (1,280-d poster, 384-d plot) learned from ~100 labelled titles pulled the withheld
   AU(PRC) below the trailer-only model's. ``"gated"``: the title experts join the shot
   experts in steps 1–5 (how models were built before). A model with no shot expert gates them
   whatever the setting (there is nothing to fuse them with late).
7. in the fine-grained phase only, each late-fused title expert has a linear map into the
   contrastive space (``title_proj``): a cross-modal term (CLIP's symmetric InfoNCE) asks the
   trailer's projection to pick its own title's plot, poster and facts out of the batch's, so
   the video embedding learns what the plot says about the film (its setting, its objects, its
   mood: what tells sub-genres apart) without the plot being needed at inference.

The batch is a dict (see :func:`mmx.train.data.collate`)::

    experts      dict[str, (B, C, D_e) float32]   one entry per non-audio expert
    audio        (B, C, A, Da) float32            only when the model has an audio expert
    audio_mask   (B, C, A) bool                   valid audio frames
    expert_mask  (B, C, E) bool                   column order = ``model.expert_names``
    clip_mask    (B, C) bool                      False = padding
    n_clips      (B,) int64
    labels       (B, G) float32                   optional, multi-hot
    labelled     (B,) bool                        optional
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmx.config import ModelConfig
from mmx.model.gating import CollaborativeGating, ExpertGEU
from mmx.model.netvlad import NetVLAD

# The slot of the run's one ``audio``-kind expert (a sequence per clip, aggregated with NetVLAD,
# always last in the mask; its weights are stored under this key, whatever the expert's name).
# Every other expert — per-clip ones and per-title ones broadcast to every clip — is an entry of
# ``expert_dims``: the network knows their widths, never their names.
AUDIO = "audio"


def sequence_windows(
    n_clips: Tensor,
    n_seqs: int,
    shots_per_seq: int,
    lo: Tensor | int | None = None,
    hi: Tensor | int | None = None,
) -> Tensor:
    """Clip indices of ``n_seqs`` windows of ``shots_per_seq`` consecutive clips per trailer.

    ``n_clips (B,) int`` → ``(B, S, n) int64``. Window starts are spread evenly (rounded half up)
    over ``[lo, hi − n]`` (``lo``/``hi`` default to ``0``/``n_clips``; scalars or ``(B,)``);
    windows overlap or repeat when a trailer has few clips. When ``[lo, hi)`` holds fewer than
    ``n`` clips the indices are clamped to its last clip, and always to ``[0, n_clips − 1]``,
    so padding is never gathered.
    """
    n_clips = n_clips.long()
    lo_t = (
        torch.zeros_like(n_clips) if lo is None else torch.as_tensor(lo).long().expand_as(n_clips)
    )
    hi_t = n_clips if hi is None else torch.as_tensor(hi).long().expand_as(n_clips)
    span = (hi_t - lo_t - shots_per_seq).clamp(min=0)  # (B,) room for the window starts
    if n_seqs == 1:
        frac = torch.full((1,), 0.5, dtype=torch.float64)  # a single window is centred
    else:
        frac = torch.arange(n_seqs, dtype=torch.float64) / (n_seqs - 1)  # (S,)
    frac = frac.to(n_clips.device)
    offsets = torch.floor(span.unsqueeze(1).double() * frac + 0.5).long()  # (B, S)
    starts = lo_t.unsqueeze(1) + offsets  # (B, S)
    idx = starts.unsqueeze(-1) + torch.arange(shots_per_seq, device=n_clips.device)  # (B, S, n)
    last = torch.minimum(torch.maximum(hi_t - 1, lo_t), n_clips - 1).clamp(min=0)  # (B,)
    return torch.minimum(idx, last.view(-1, 1, 1)).clamp(min=0)  # (B, S, n)


def random_windows(
    n_clips: Tensor,
    n_seqs: int,
    shots_per_seq: int,
    lo: Tensor | int | None = None,
    hi: Tensor | int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Like :func:`sequence_windows`, but the ``n_seqs`` window starts are drawn uniformly at
    random over ``[lo, hi − n]`` (then sorted, so windows stay in time order): a fresh sample of
    the trailer's shots at every call, the augmentation of training. ``(B,)`` → ``(B, S, n)``."""
    n_clips = n_clips.long()
    lo_t = (
        torch.zeros_like(n_clips) if lo is None else torch.as_tensor(lo).long().expand_as(n_clips)
    )
    hi_t = n_clips if hi is None else torch.as_tensor(hi).long().expand_as(n_clips)
    span = (hi_t - lo_t - shots_per_seq).clamp(min=0)  # (B,)
    u = torch.rand(len(n_clips), n_seqs, generator=generator).to(n_clips.device)  # (B, S)
    offsets = torch.sort(torch.floor(u * (span + 1).unsqueeze(1)).long(), dim=1).values
    starts = lo_t.unsqueeze(1) + offsets  # (B, S)
    idx = starts.unsqueeze(-1) + torch.arange(shots_per_seq, device=n_clips.device)  # (B, S, n)
    last = torch.minimum(torch.maximum(hi_t - 1, lo_t), n_clips - 1).clamp(min=0)  # (B,)
    return torch.minimum(idx, last.view(-1, 1, 1)).clamp(min=0)  # (B, S, n)


def _masked_moments(x: Tensor, mask: Tensor) -> list[Tensor]:
    """Mean and std over dim 1 of ``x (B, N, D)`` where ``mask (B, N)`` → two (B, D)."""
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    n = w.sum(dim=1).clamp(min=1.0)  # (B, 1)
    x = torch.where(mask.unsqueeze(-1), x, 0.0)  # padded slots may hold anything, even inf
    mean = x.sum(dim=1) / n
    var = ((x - mean.unsqueeze(1)) ** 2 * w).sum(dim=1) / n
    return [mean, torch.sqrt(var + 1e-6)]


class Standardize(nn.Module):
    """``(x − mean) / std`` per feature dimension; buffers so they travel with the weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MMXNetwork(nn.Module):
    """Multi-expert trailer model of Fish et al. (ICIP 2021); see the module docstring.

    ``expert_dims``: non-audio expert name → feature width (order = mask column order);
    ``audio_dim``: width of one audio frame descriptor, or None for no audio expert;
    ``n_genres``: size of the genre vocabulary G;
    ``title_experts``: the names in ``expert_dims`` that are per-title experts (step 6).
    """

    def __init__(
        self,
        expert_dims: Mapping[str, int],
        audio_dim: int | None,
        n_genres: int,
        cfg: ModelConfig,
        title_experts: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if AUDIO in expert_dims:
            raise ValueError(f"pass the {AUDIO!r} expert via audio_dim, not expert_dims")
        if not expert_dims and not audio_dim:
            raise ValueError("the model needs at least one expert")
        self.cfg = cfg
        self.expert_dims = dict(expert_dims)
        self.audio_dim = audio_dim
        self.n_genres = n_genres
        unknown = set(title_experts) - set(expert_dims)
        if unknown:
            raise ValueError(f"title experts {sorted(unknown)} are not in expert_dims")
        self.video_experts: tuple[str, ...] = tuple(expert_dims)
        # the expert_mask column order: every non-audio expert, then audio
        self.expert_names: tuple[str, ...] = self.video_experts + ((AUDIO,) if audio_dim else ())
        late = cfg.title_fusion == "late" and len(set(expert_dims) - set(title_experts)) + bool(
            audio_dim) > 0
        self.title_experts: tuple[str, ...] = tuple(
            e for e in expert_dims if e in set(title_experts)) if late else ()
        # the experts of steps 1-5 (gated per shot, pooled) and their mask columns
        self.shot_experts = tuple(e for e in self.video_experts if e not in self.title_experts)
        shot_cols = [self.expert_names.index(e) for e in self.shot_experts]
        self.register_buffer(
            "shot_cols", torch.tensor(shot_cols + ([len(self.video_experts)] if audio_dim else []),
                                      dtype=torch.long), persistent=False)
        self.register_buffer(
            "title_cols", torch.tensor([self.expert_names.index(e) for e in self.title_experts],
                                       dtype=torch.long), persistent=False)
        n_experts = len(self.shot_experts) + bool(audio_dim)
        p, s = cfg.proj_dim, cfg.shot_dim

        self.norms = nn.ModuleDict({name: Standardize(d) for name, d in expert_dims.items()})
        self.proj = nn.ModuleDict({name: nn.Linear(d, p) for name, d in expert_dims.items()
                                   if name in self.shot_experts})
        if audio_dim:
            self.norms[AUDIO] = Standardize(audio_dim)
            self.netvlad = NetVLAD(audio_dim, cfg.netvlad_clusters)
            self.proj[AUDIO] = nn.Linear(self.netvlad.out_dim, p)
        if cfg.gating:
            self.gating = CollaborativeGating(p, cfg.gate_hidden)
            self.geu = ExpertGEU(n_experts, p, s)
            self.fuse = nn.Linear(n_experts * s, s)
        else:
            self.fuse = nn.Linear(n_experts * p, s)

        agg_dim = cfg.n_seqs * cfg.seq_dim if cfg.aggregation == "concat" else cfg.seq_dim
        # MLP j: one window of n shot vectors → one sequence vector
        self.seq_mlp = nn.Sequential(
            nn.Linear(cfg.shots_per_seq * s, cfg.seq_dim), nn.ReLU(), nn.Dropout(cfg.dropout)
        )
        # MLP k: aggregated sequences → bottleneck (the trailer embedding)
        self.trailer_mlp = nn.Sequential(
            nn.Linear(agg_dim, cfg.k_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.k_hidden, cfg.bottleneck),
        )
        # skip: per-expert mean and std of the standardised inputs → bottleneck (step 5)
        pooled_dim = 2 * (sum(expert_dims[e] for e in self.shot_experts) + (audio_dim or 0))
        self.pool_skip = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(pooled_dim, cfg.bottleneck)
        ) if cfg.pooled_skip else None
        # MLP l: bottleneck → genre logits (coarse phase); none in a self-supervised model
        self.head = nn.Sequential(
            nn.Linear(cfg.bottleneck, cfg.head_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.head_hidden, n_genres),
        ) if n_genres > 0 else nn.Sequential()
        # projection head m, n: bottleneck → contrastive space (fine-grained phase)
        self.proj_head = nn.Sequential(
            nn.Linear(cfg.bottleneck, cfg.proj_head_hidden),
            nn.ReLU(),
            nn.Linear(cfg.proj_head_hidden, cfg.proj_head_dim),
        )
        # step 6: one linear genre head per late-fused title expert, and the fusion weights
        # [trailer, *title_experts] (fitted after the coarse phase: fit_title_fusion). Built
        # last, so the trailer's path starts from the same weights with or without title experts
        heads = self.title_experts if n_genres > 0 else ()
        self.title_heads = nn.ModuleDict({e: nn.Linear(expert_dims[e], n_genres) for e in heads})
        for lin in self.title_heads.values():
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        fusion = torch.zeros(1 + len(heads))
        fusion[0] = 1.0
        self.register_buffer("fusion", fusion, persistent=bool(heads))
        # step 7: a linear map of each late-fused title expert into the contrastive space, for
        # the cross-modal term of the fine-grained phase (ContrastiveObjective): the trailer's
        # projection learns to find its own plot (poster, facts) among the batch's
        self.title_proj = nn.ModuleDict({e: nn.Linear(expert_dims[e], cfg.proj_head_dim)
                                         for e in self.title_experts})

    # ----------------------------------------------------------------------------- helpers
    def init_args(self) -> dict[str, Any]:
        """JSON-safe constructor arguments (stored in checkpoints to rebuild the model)."""
        return {
            "expert_dims": [[name, dim] for name, dim in self.expert_dims.items()],  # ordered
            "audio_dim": self.audio_dim,
            "n_genres": self.n_genres,
            "model": dataclasses.asdict(self.cfg),
            "title_experts": list(self.title_experts),
        }

    @classmethod
    def from_init_args(cls, args: Mapping[str, Any]) -> MMXNetwork:
        """Inverse of :meth:`init_args` (the expert order is the mask column order)."""
        dims = {str(name): int(dim) for name, dim in args["expert_dims"]}
        # models saved before the skip / before late title fusion (their title experts gated)
        model_args = {"pooled_skip": False, "title_fusion": "gated", **args["model"]}
        return cls(dims, args["audio_dim"], args["n_genres"], ModelConfig(**model_args),
                   args.get("title_experts", ()))

    @torch.no_grad()
    def set_input_stats(self, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Set per-expert input standardisation: name → (mean (D,), std (D,)) float arrays."""
        for name, (mean, std) in stats.items():
            if name in self.norms:
                norm = self.norms[name]
                norm.mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
                norm.std.copy_(
                    torch.as_tensor(np.maximum(np.asarray(std), 1e-6), dtype=torch.float32)
                )

    windows = staticmethod(sequence_windows)

    # ----------------------------------------------------------------------------- forward
    def encode_shots(self, batch: Mapping[str, Any]) -> Tensor:
        """Encode every valid clip once: → (B, C, shot_dim) float32, zeros at padded clips."""
        clip_mask: Tensor = batch["clip_mask"]  # (B, C)
        n_batch, n_slots = clip_mask.shape
        avail = batch["expert_mask"][clip_mask][:, self.shot_cols]  # (N, E) valid clips only
        psi = []
        for name in self.shot_experts:  # the one loop: a fixed, small list of experts
            x = batch["experts"][name][clip_mask]  # (N, D_e)
            psi.append(self.proj[name](self.norms[name](x)))  # (N, P)
        if self.audio_dim:
            frames = batch["audio"][clip_mask]  # (N, A, Da)
            frame_mask = batch["audio_mask"][clip_mask]  # (N, A)
            vlad = self.netvlad(self.norms[AUDIO](frames), frame_mask)  # (N, K*Da)
            psi.append(self.proj[AUDIO](vlad))  # (N, P)
            has_frames = frame_mask.any(dim=-1, keepdim=True)  # (N, 1)
            avail = torch.cat([avail[:, :-1], avail[:, -1:] & has_frames], dim=1)  # (N, E)
        psi_t = torch.stack(psi, dim=1) * avail.unsqueeze(-1).to(torch.float32)  # (N, E, P)
        shots = self.fuse_experts(psi_t, avail)  # (N, shot_dim)
        out = shots.new_zeros(n_batch, n_slots, shots.shape[-1])  # (B, C, shot_dim)
        out[clip_mask] = shots
        return out

    def fuse_experts(self, psi: Tensor, avail: Tensor) -> Tensor:
        """Experts (N, E, P) float32, availability (N, E) bool → (N, shot_dim), L2-normed."""
        n_shots = psi.shape[0]
        keep = avail.unsqueeze(-1).to(psi.dtype)  # (N, E, 1)
        if self.cfg.gating:
            gated = self.gating(psi, avail)  # (N, E, P)
            units = self.geu(gated) * keep  # (N, E, shot_dim), missing experts zeroed
            flat = units.reshape(n_shots, -1)  # (N, E*shot_dim)
        else:
            flat = (psi * keep).reshape(n_shots, -1)  # (N, E*P)
        return F.normalize(self.fuse(flat), dim=-1)

    def embed(
        self,
        batch: Mapping[str, Any],
        windows: Tensor | None = None,
        shots: Tensor | None = None,
    ) -> Tensor:
        """Trailer embeddings (B, bottleneck) float32.

        ``windows (B, S, n) int64`` defaults to :func:`sequence_windows` over all clips;
        ``shots (B, C, shot_dim)`` defaults to :meth:`encode_shots` (pass it to embed several
        views of the same trailers from one encoding).
        """
        if shots is None:
            shots = self.encode_shots(batch)
        if windows is None:
            windows = self.windows(batch["n_clips"], self.cfg.n_seqs, self.cfg.shots_per_seq)
        n_batch, n_seqs, n_shots = windows.shape
        rows = torch.arange(n_batch, device=shots.device).view(-1, 1, 1)  # (B, 1, 1)
        seqs = shots[rows, windows]  # (B, S, n, shot_dim)
        seqs = seqs.reshape(n_batch, n_seqs, n_shots * shots.shape[-1])  # (B, S, n*shot_dim)
        seqs = self.seq_mlp(seqs)  # (B, S, seq_dim)
        if self.cfg.aggregation == "concat":
            agg = seqs.reshape(n_batch, n_seqs * seqs.shape[-1])  # (B, S*seq_dim)
        else:
            agg = seqs.sum(dim=1)  # (B, seq_dim)
        emb = self.trailer_mlp(agg)  # (B, bottleneck)
        if self.pool_skip is not None:
            cover = torch.zeros_like(batch["clip_mask"])  # (B, C): clips the windows gather
            cover.scatter_(1, windows.reshape(n_batch, -1), True)
            emb = emb + self.pool_skip(self.pool_experts(batch, cover & batch["clip_mask"]))
        return emb

    def pool_experts(self, batch: Mapping[str, Any], cover: Tensor) -> Tensor:
        """Mean and std over the ``cover`` (B, C) bool clips of each available, standardised
        expert input (audio: over the valid frames of those clips) → (B, 2 * sum(D)) float32,
        zeros for an expert a trailer lacks there."""
        avail = batch["expert_mask"][..., self.shot_cols] & cover.unsqueeze(-1)  # (B, C, E)
        parts = []
        for e, name in enumerate(self.shot_experts):  # the fixed, small list of experts
            parts += _masked_moments(self.norms[name](batch["experts"][name]), avail[..., e])
        if self.audio_dim:
            frames = self.norms[AUDIO](batch["audio"])  # (B, C, A, Da)
            ok = batch["audio_mask"] & avail[..., -1:]  # (B, C, A)
            parts += _masked_moments(frames.flatten(1, 2), ok.flatten(1, 2))
        return torch.cat(parts, dim=-1)

    def classify(self, emb: Tensor) -> Tensor:
        """Genre logits (B, G) from embeddings (B, bottleneck); (B, 0) without a genre head."""
        if self.n_genres == 0:
            return emb.new_zeros(emb.shape[0], 0)
        return self.head(emb)

    def title_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """The late-fused title experts' standardised vectors and availability of each trailer:
        ``[(B, D_e) float32 per title expert]`` (zeros where absent) and (B, T) bool. A title
        vector is the same on every clip: read from the first."""
        first = batch["expert_mask"][:, 0]  # (B, E): every trailer has a first clip
        avail = first[:, self.title_cols]  # (B, T)
        xs = [torch.where(avail[:, t : t + 1], self.norms[e](batch["experts"][e][:, 0]), 0.0)
              for t, e in enumerate(self.title_experts)]
        return xs, avail

    def title_logits(self, batch: Mapping[str, Any]) -> Tensor:
        """Each late-fused title expert's genre logits (B, G, T), zeros where it is absent."""
        xs, avail = self.title_inputs(batch)
        if not xs:
            return batch["clip_mask"].new_zeros(len(avail), self.n_genres, 0, dtype=torch.float32)
        logits = torch.stack([self.title_heads[e](x) for e, x in zip(
            self.title_experts, xs, strict=True)], dim=-1)  # (B, G, T)
        return logits * avail.unsqueeze(1).to(logits.dtype)

    def title_project(self, batch: Mapping[str, Any]) -> tuple[list[Tensor], Tensor]:
        """Each late-fused title expert's vector in the contrastive space (step 7):
        ``[(B, proj_head_dim) float32 per title expert]`` (not normalised; rows where the input
        is absent are meaningless) and the availability (B, T) bool."""
        xs, avail = self.title_inputs(batch)
        return [self.title_proj[e](x) for e, x in zip(self.title_experts, xs, strict=True)], avail

    def fuse_logits(self, logits: Tensor, title_logits: Tensor) -> Tensor:
        """Trailer logits (B, G) and title logits (B, G, T) → fused (B, G) (``fusion``)."""
        if title_logits.shape[-1] == 0:
            return logits * self.fusion[0]
        return logits * self.fusion[0] + (title_logits * self.fusion[1:]).sum(dim=-1)

    def project(self, emb: Tensor) -> Tensor:
        """Contrastive projections (B, proj_head_dim), not normalised (the loss normalises)."""
        return self.proj_head(emb)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Embedding (B, bottleneck) and genre logits (B, G): the trailer's, fused with the
        title experts' (step 6)."""
        emb = self.embed(batch)
        logits = self.classify(emb)
        if self.title_experts and self.n_genres:
            logits = self.fuse_logits(logits, self.title_logits(batch))
        return {"embedding": emb, "logits": logits}
