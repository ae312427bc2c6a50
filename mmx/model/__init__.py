"""The MMX model: NetVLAD, collaborative gating, the network and its losses (DESIGN §1)."""

from mmx.model.gating import CollaborativeGating, ExpertGEU
from mmx.model.losses import CrossModalLoss, GenreBCELoss, NTXentLoss
from mmx.model.netvlad import NetVLAD
from mmx.model.network import AUDIO, MMXNetwork, sequence_windows

__all__ = [
    "AUDIO",
    "CollaborativeGating",
    "CrossModalLoss",
    "ExpertGEU",
    "GenreBCELoss",
    "MMXNetwork",
    "NTXentLoss",
    "NetVLAD",
    "sequence_windows",
]
