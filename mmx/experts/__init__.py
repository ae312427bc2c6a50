"""Shot experts (appearance, scene, motion, audio), one module each, and their registry.

Importing this package registers the built-in experts in :data:`EXPERTS`.
"""

from mmx.experts import appearance, audio, motion, scene
from mmx.experts.registry import EXPERTS, Expert, get_expert, load_state_dict, register_expert

__all__ = [
    "EXPERTS",
    "Expert",
    "appearance",
    "audio",
    "get_expert",
    "load_state_dict",
    "motion",
    "register_expert",
    "scene",
]
