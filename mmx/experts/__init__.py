"""Experts (one module each) and their registry (:mod:`mmx.experts.registry`).

Built in: appearance (an ``image`` CNN run in an actor pool), scene and motion (``frames``
descriptors run inline in the decode task), audio (per 0.96 s log-mel example). Importing this
package registers them in :data:`EXPERTS`; any other expert is one module that registers an
:class:`Expert` subclass, turned on by its name in ``experts.names``.
"""

from mmx.experts import appearance, audio, motion, scene
from mmx.experts.registry import (
    EXPERTS,
    Expert,
    ExpertPlan,
    expert_class,
    get_expert,
    load_state_dict,
    plan,
    register_expert,
)

__all__ = [
    "EXPERTS",
    "Expert",
    "ExpertPlan",
    "appearance",
    "audio",
    "expert_class",
    "get_expert",
    "load_state_dict",
    "motion",
    "plan",
    "register_expert",
    "scene",
]
