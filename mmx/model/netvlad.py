"""NetVLAD: learnable aggregation of a variable number of local descriptors into one vector.

Used for the audio expert, whose per-shot input is a set of 0.96 s VGGish-style frames
(Arandjelović et al., "NetVLAD", CVPR 2016; as used by Miech et al. and collaborative experts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NetVLAD(nn.Module):
    """Soft-assignment VLAD over masked descriptors.

    ``forward(x (N, A, D) float32, mask (N, A) bool) -> (N, clusters * D) float32``: residuals
    to each of ``clusters`` learnt centres, summed over the valid descriptors, L2-normalised per
    cluster (intra-normalisation) and then as a whole. Rows with no valid descriptor give zeros.
    """

    def __init__(self, dim: int, clusters: int) -> None:
        super().__init__()
        self.dim = dim
        self.clusters = clusters
        self.assign = nn.Linear(dim, clusters)  # soft-assignment logits
        self.centroids = nn.Parameter(torch.randn(clusters, dim) / dim**0.5)

    @property
    def out_dim(self) -> int:
        return self.clusters * self.dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        a = torch.softmax(self.assign(x), dim=-1)  # (N, A, K)
        a = a * mask.unsqueeze(-1).to(a.dtype)  # padded frames get no weight
        # Σ_a a_ak (x_a − c_k) = (aᵀ x)_k − (Σ_a a_ak) c_k
        vlad = torch.einsum("nak,nad->nkd", a, x)  # (N, K, D)
        vlad = vlad - a.sum(dim=1).unsqueeze(-1) * self.centroids  # (N, K, D)
        vlad = F.normalize(vlad, dim=-1)  # intra-normalisation
        vlad = vlad.reshape(x.shape[0], self.clusters * self.dim)  # (N, K*D)
        return F.normalize(vlad, dim=-1)
