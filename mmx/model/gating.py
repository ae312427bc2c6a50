"""Collaborative gating and gated embedding units (the per-shot fusion of the experts).

Collaborative gating (Liu et al., "Use What You Have: Video retrieval using representations
from collaborative experts", BMVC 2019): every expert e gets an attention vector
``T_e = h(Σ_{f≠e} g(ψ_e, ψ_f))`` from its pairwise relations with the other *available*
experts and is modulated ``ψ_e ← ψ_e ∘ σ(T_e)``. Gated embedding units (Miech et al.,
"Learning a Text-Video Embedding from Incomplete and Heterogeneous Data") then map each
expert to the shot space. Both are vectorised over shots and experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CollaborativeGating(nn.Module):
    """``forward(psi (N, E, P) float32, avail (N, E) bool) -> (N, E, P)`` gated experts.

    g is a 2-layer MLP on the concatenation ``[ψ_e; ψ_f]`` and h a 2-layer MLP; both hidden
    widths are ``hidden``. The first layer of g splits into ``A ψ_e + B ψ_f + b``, so ``A ψ`` and
    ``B ψ`` are computed once per expert and broadcast-added into all (e, f) pairs.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.g_a = nn.Linear(dim, hidden)  # A ψ_e + b  (first layer of g, "self" half)
        self.g_b = nn.Linear(dim, hidden, bias=False)  # B ψ_f  (first layer of g, "other" half)
        self.g_out = nn.Linear(hidden, hidden)
        self.h = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def pair_relations(self, psi: Tensor) -> Tensor:
        """g(ψ_e, ψ_f) for every ordered pair: (N, E, P) -> (N, E, E, H), index [n, e, f]."""
        a = self.g_a(psi)  # (N, E, H)
        b = self.g_b(psi)  # (N, E, H)
        pre = a.unsqueeze(2) + b.unsqueeze(1)  # (N, E, 1, H) + (N, 1, E, H) -> (N, E, E, H)
        return self.g_out(F.relu(pre))  # (N, E, E, H)

    def attention(self, psi: Tensor, avail: Tensor) -> Tensor:
        """T_e = h(Σ_{f≠e, f available} g(ψ_e, ψ_f)): (N, E, P), (N, E) bool -> (N, E, P)."""
        n_experts = psi.shape[1]
        rel = self.pair_relations(psi)  # (N, E, E, H)
        off_diag = ~torch.eye(n_experts, dtype=torch.bool, device=psi.device)  # (E, E)
        pair_mask = off_diag.unsqueeze(0) & avail.unsqueeze(1)  # (N, E, E): f ≠ e, f available
        summed = (rel * pair_mask.unsqueeze(-1).to(rel.dtype)).sum(dim=2)  # (N, E, H)
        return self.h(summed)  # (N, E, P)

    def forward(self, psi: Tensor, avail: Tensor) -> Tensor:
        return psi * torch.sigmoid(self.attention(psi, avail))


class ExpertGEU(nn.Module):
    """One gated embedding unit per expert, batched over experts with stacked weights.

    ``forward(x (N, E, P)) -> (N, E, D)``: ``y = W1_e x + b1_e``, ``y ← y ∘ σ(W2_e y + b2_e)``,
    then L2-normalised over D. Equivalent to E independent GEUs without a loop over experts.
    """

    def __init__(self, n_experts: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, in_dim, out_dim))
        self.b1 = nn.Parameter(torch.empty(n_experts, out_dim))
        self.w2 = nn.Parameter(torch.empty(n_experts, out_dim, out_dim))
        self.b2 = nn.Parameter(torch.empty(n_experts, out_dim))
        # the default nn.Linear initialisation, applied per expert
        for w, b, fan_in in ((self.w1, self.b1, in_dim), (self.w2, self.b2, out_dim)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("nep,epd->ned", x, self.w1) + self.b1  # (N, E, D)
        gate = torch.einsum("ned,edk->nek", y, self.w2) + self.b2  # (N, E, D)
        return F.normalize(y * torch.sigmoid(gate), dim=-1)
