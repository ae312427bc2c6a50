"""The expert interface and the name → class registry (a plain dict filled by a decorator).

Owns :class:`Expert` (``name``, ``dim``, ``kind``, ``__call__(batch) -> float32 [N, dim]``,
optional ``load_weights``), :data:`EXPERTS`, :func:`register_expert`, :func:`get_expert`, and
:func:`load_state_dict` (a state dict from a local path or ``s3://`` URI, torch or
safetensors), so a GPU cluster can swap in the paper's backbones by configuration.

Kinds: ``"frames"`` experts describe decoded frames cheaply on CPU inside the decode stage and
are averaged (or summarised) over a shot; ``"image"`` experts are CNNs run later, batched across
trailers, on a few sampled frames per shot; ``"audio"`` experts map log-mel examples to
per-example vectors that the model aggregates with NetVLAD.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from mmx.config import ExpertsConfig

Kind = Literal["frames", "image", "audio", "title"]


class Expert:
    """Base class: one descriptor of a shot's frames or audio, batched.

    Subclasses set ``name``, ``dim`` and ``kind`` and implement ``__call__``.
    """

    name: ClassVar[str] = ""
    dim: ClassVar[int] = 0
    kind: ClassVar[Kind] = "frames"

    def __init__(self, cfg: ExpertsConfig | None = None) -> None:
        self.cfg = cfg or ExpertsConfig()

    def __call__(self, batch: Any) -> np.ndarray:
        """Describe a batch; returns float32 ``(N, dim)``."""
        raise NotImplementedError

    def load_weights(self, uri: str) -> None:
        """Replace the expert's weights by the state dict at ``uri`` (local path or s3://)."""
        raise ValueError(f"expert {self.name!r} is computed, it has no weights to load "
                         f"(got {uri!r}); register a learned expert under another name instead")


EXPERTS: dict[str, type[Expert]] = {}

E = TypeVar("E", bound=type[Expert])


def register_expert(cls: E) -> E:
    """Class decorator: add ``cls`` to :data:`EXPERTS` under ``cls.name``."""
    if not cls.name or cls.dim <= 0:
        raise ValueError(f"{cls.__name__} must declare a name and a positive dim")
    if cls.name in EXPERTS and EXPERTS[cls.name] is not cls:
        raise ValueError(f"expert {cls.name!r} is already registered by "
                         f"{EXPERTS[cls.name].__name__}")
    EXPERTS[cls.name] = cls
    return cls


def get_expert(name: str, cfg: ExpertsConfig, **kwargs: Any) -> Expert:
    """Build the expert ``name``; load ``cfg.weights[name]`` when the user supplied weights.

    ``kwargs`` go to the expert's constructor, e.g. ``device="cuda"`` for the appearance CNN.
    """
    _import_builtin_experts()
    if name not in EXPERTS:
        raise KeyError(f"unknown expert {name!r}; registered: {sorted(EXPERTS)}")
    expert = EXPERTS[name](cfg, **kwargs)
    uri = cfg.weights.get(name)
    if uri:
        expert.load_weights(uri)
    return expert


def _import_builtin_experts() -> None:
    """Importing the modules registers the built-in experts."""
    from mmx.experts import appearance, audio, motion, scene  # noqa: F401


def load_state_dict(uri: str) -> dict[str, Any]:
    """A state dict from a local path or any fsspec URI (``s3://bucket/key.pt``).

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(..., weights_only=True)`` (no pickled code is executed). A checkpoint that
    wraps the weights under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    import fsspec
    import torch

    with fsspec.open(uri, "rb") as f:
        data = f.read()
    if uri.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        state: dict[str, Any] = load_safetensors(data)
    else:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TypeError(f"{uri}: expected a state dict, got {type(state).__name__}")
    return state
