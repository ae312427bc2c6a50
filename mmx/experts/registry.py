"""The expert interface and the name → class registry (a plain dict filled by a decorator).

Owns :class:`Expert`, :data:`EXPERTS`, :func:`register_expert`, :func:`get_expert`,
:func:`expert_class`, :func:`plan` (the run's experts, validated, split by how they run) and
:func:`load_state_dict` (a state dict from a local path or ``s3://`` URI, torch or safetensors,
so a GPU cluster can swap in the paper's backbones by configuration).

**An expert is one module plus one config line.** A module defines a subclass of
:class:`Expert` decorated with :func:`register_expert`; its name in ``experts.names`` turns it
on. A name not yet registered is looked up as the module ``mmx.experts.<name>``. Everything
downstream reads the declaration, nothing names an expert:

* the decode stage (:mod:`mmx.ingest`, :mod:`mmx.stages.ingest`) runs ``frames`` experts and
  ``inline`` ``image`` experts on the frames it decodes, ``audio`` experts on its log-mel
  examples, and hands the sampled frames of ``pool`` ``image`` experts to an actor pool;
* the ``features`` table has one ``list<float32>`` column per expert, named after it
  (:func:`mmx.schema.features_schema`; the built-in four keep their columns and layouts);
* :mod:`mmx.features` and :mod:`mmx.train.data` read every expert column the registry knows,
  the network (:class:`mmx.model.network.MMXNetwork`) gates whatever experts it is given, and
  ``mmx ablate`` makes one row per expert present.

Kinds (what the expert sees; ``dim`` is always the width of one output row):

``"frames"``  every ``frame_stride()``-th decoded frame of the trailer, streamed chunk by
              chunk (:meth:`Expert.accumulator`; by default :meth:`Expert.frame_features` per
              frame, averaged per clip) → one ``(dim,)`` vector per clip. Runs inline.
``"image"``   ``experts.appearance_frames`` frames sampled per clip, ``__call__`` on a batch of
              frames ``(N, h, w, 3)`` uint8 RGB → ``(N, dim)``, averaged per clip. ``runs`` =
              ``"pool"`` (an actor pool batched across trailers, GPU when configured: a CNN) or
              ``"inline"`` (in the decode task: a cheap descriptor).
``"audio"``   ``__call__`` on log-mel examples ``(N, 96, 64)`` → ``(N, dim)``: a sequence per
              clip (zero padded to ``experts.max_audio_frames``) that the network aggregates
              with NetVLAD. Runs inline; one audio expert per run (its frame counts are the
              ``audio_frames`` column).
``"title"``   one vector per *title* from its metadata (``needs`` names the sidecar fields,
              e.g. ``("plot",)``): ``__call__(inputs)`` → ``(N, dim)``. Not run by the decode
              stage; its column holds ``(dim,)`` per trailer (null: no input for that title),
              and training broadcasts it to every clip of the trailer, so collaborative gating
              treats it like a shot expert and the per-clip availability mask marks it missing.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from mmx.config import ExpertsConfig, ShotsConfig

Kind = Literal["frames", "image", "audio", "title"]
Runs = Literal["inline", "pool"]
KINDS: tuple[str, ...] = ("frames", "image", "audio", "title")
CLIP_KINDS = ("frames", "image")  # one (dim,) vector per clip


class FrameAccumulator(Protocol):
    """Per-trailer state of a ``frames`` expert while its trailer is decoded."""

    def add(self, first: int, chunk: np.ndarray) -> None:
        """Offer decoded frames ``chunk (T, h, w, 3)`` uint8 RGB, the first one frame ``first``."""

    def per_clip(self, clips: np.ndarray) -> np.ndarray:
        """Kept clips ``(C, 2)`` int64 ``[start, end)`` → float32 ``(C, dim)``."""


class Expert:
    """Base class: one descriptor of a shot (or a title), batched; see the module docstring.

    Subclasses set ``name``, ``dim``, ``kind`` (and ``runs``, ``needs`` where it matters) and
    implement ``__call__`` (``frames`` experts: :meth:`frame_features` suffices).
    """

    name: ClassVar[str] = ""
    dim: ClassVar[int] = 0
    kind: ClassVar[Kind] = "frames"
    runs: ClassVar[Runs] = "inline"
    needs: ClassVar[tuple[str, ...]] = ()  # title experts: the metadata fields they read
    frame_dim: ClassVar[int] = 0  # frames experts: width of a per-frame row (0: dim)

    def __init__(self, cfg: ExpertsConfig | None = None) -> None:
        self.cfg = cfg or ExpertsConfig()

    def __call__(self, batch: Any) -> np.ndarray:
        """Describe a batch; returns float32 ``(N, dim)``."""
        raise NotImplementedError

    def load_weights(self, uri: str) -> None:
        """Replace the expert's weights by the state dict at ``uri`` (local path or s3://)."""
        raise ValueError(f"expert {self.name!r} is computed, it has no weights to load "
                         f"(got {uri!r}); register a learned expert under another name instead")

    # ------------------------------------------------------------------ frames experts
    def frame_stride(self) -> int:
        """``frames`` experts see every k-th decoded frame (frame index % k == 0)."""
        return 1

    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` experts: uint8 RGB ``(T, h, w, 3)`` → float32 ``(T, frame_dim)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement frame_features")

    def accumulator(self, fps: float, shots: ShotsConfig) -> FrameAccumulator:
        """``frames`` experts: a fresh per-trailer accumulator. The default keeps
        :meth:`frame_features` of every :meth:`frame_stride`-th frame and gives each clip the
        mean of the rows inside it (the nearest row for a clip with none)."""
        return StridedMean(self.frame_features, self.frame_stride(),
                           self.frame_dim or self.dim)


class FrameRows:
    """Per-frame (or per-pair) rows of one trailer as small arrays, positions increasing."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.positions: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def add(self, positions: np.ndarray, rows: np.ndarray) -> None:
        if len(positions):
            self.positions.append(np.asarray(positions, np.int64))
            self.rows.append(np.asarray(rows, np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(S,)`` int64 and rows ``(S, dim)`` float32."""
        if not self.positions:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(self.positions), np.concatenate(self.rows)


class StridedMean:
    """The default :class:`FrameAccumulator`: rows of every ``stride``-th frame, mean per clip."""

    def __init__(self, describe: Any, stride: int, dim: int) -> None:
        self.describe = describe
        self.stride = max(1, int(stride))
        self.rows = FrameRows(dim)

    def add(self, first: int, chunk: np.ndarray) -> None:
        index = np.arange(first, first + len(chunk))
        local = np.flatnonzero(index % self.stride == 0)
        if local.size:
            self.rows.add(index[local], self.describe(chunk[local]))

    def per_clip(self, clips: np.ndarray) -> np.ndarray:
        from mmx.video.sampling import mean_in_ranges

        positions, rows = self.rows.arrays()
        if len(positions) == 0:
            return np.zeros((len(clips), self.rows.dim), np.float32)
        return mean_in_ranges(positions, rows, clips)  # (C, dim)


EXPERTS: dict[str, type[Expert]] = {}

E = TypeVar("E", bound=type[Expert])


def register_expert(cls: E) -> E:
    """Class decorator: add ``cls`` to :data:`EXPERTS` under ``cls.name`` (checks the
    declaration: a name usable as a column, a positive dim, a known kind and way to run)."""
    from mmx import schema

    if not cls.name or cls.dim <= 0:
        raise ValueError(f"{cls.__name__} must declare a name and a positive dim")
    if not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}: expert name {cls.name!r} must be an identifier")
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}: kind must be one of {KINDS}, got {cls.kind!r}")
    if cls.runs not in ("inline", "pool"):
        raise ValueError(f"{cls.__name__}: runs must be 'inline' or 'pool', got {cls.runs!r}")
    if cls.runs == "pool" and cls.kind not in ("image", "title"):
        raise ValueError(f"{cls.__name__}: only image and title experts run in a pool")
    if cls.name in schema.FEATURES.names and not schema.is_vector_column(schema.FEATURES,
                                                                          cls.name):
        raise ValueError(f"{cls.__name__}: {cls.name!r} is a column of the features table")
    if cls.name in EXPERTS and EXPERTS[cls.name] is not cls:
        raise ValueError(f"expert {cls.name!r} is already registered by "
                         f"{EXPERTS[cls.name].__name__}")
    EXPERTS[cls.name] = cls
    return cls


def expert_class(name: str) -> type[Expert]:
    """The registered class of expert ``name``; a name not registered yet is looked up as the
    module ``mmx.experts.<name>`` (importing it registers it). KeyError if there is none."""
    _import_builtin_experts()
    if name not in EXPERTS and name.isidentifier():
        try:
            importlib.import_module(f"mmx.experts.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"mmx.experts.{name}":
                raise  # the module exists but something it imports does not
    if name not in EXPERTS:
        raise KeyError(f"unknown expert {name!r}; registered: {sorted(EXPERTS)} (an expert is "
                       f"registered by importing its module, or found as mmx.experts.{name})")
    return EXPERTS[name]


def kind_of(name: str) -> str | None:
    """The kind of expert ``name``, or None when no expert has that name."""
    try:
        return expert_class(name).kind
    except KeyError:
        return None


def get_expert(name: str, cfg: ExpertsConfig, **kwargs: Any) -> Expert:
    """Build the expert ``name``; load ``cfg.weights[name]`` when the user supplied weights.

    ``kwargs`` go to the expert's constructor, e.g. ``device="cuda"`` for the appearance CNN.
    """
    expert = expert_class(name)(cfg, **kwargs)
    uri = cfg.weights.get(name)
    if uri:
        expert.load_weights(uri)
    return expert


@dataclass(frozen=True)
class ExpertPlan:
    """The run's experts (``experts.names``, in that order) grouped by where they run."""

    names: tuple[str, ...]
    kinds: dict[str, str]
    dims: dict[str, int]
    frames: tuple[str, ...]  # streamed over decoded frames in the decode task
    inline_image: tuple[str, ...]  # on the sampled frames, in the decode task
    pool_image: tuple[str, ...]  # on the sampled frames, in the actor pool
    audio: str | None  # the one audio expert
    title: tuple[str, ...]  # per title, outside the decode stage

    @property
    def image(self) -> tuple[str, ...]:
        return self.inline_image + self.pool_image

    @property
    def shot(self) -> tuple[str, ...]:
        """Experts the decode stage computes (their features depend on the video only)."""
        return tuple(n for n in self.names if self.kinds[n] != "title")

    @property
    def clip(self) -> tuple[str, ...]:
        """Experts with one vector per clip in the features table (frames and image)."""
        return tuple(n for n in self.names if self.kinds[n] in CLIP_KINDS)


def plan(names: Iterable[str]) -> ExpertPlan:
    """Validate ``experts.names`` against the registry and group them (clear errors for an
    unknown name, a repeated name or two audio experts)."""
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"experts.names repeats a name: {list(names)}")
    classes = {n: expert_class(n) for n in names}
    kinds = {n: c.kind for n, c in classes.items()}
    audio = [n for n in names if kinds[n] == "audio"]
    if len(audio) > 1:
        raise ValueError(f"experts.names has {len(audio)} audio experts {audio}: the network "
                         "aggregates one audio sequence per clip")

    def pick(kind: str, runs: str | None = None) -> tuple[str, ...]:
        return tuple(n for n in names
                     if kinds[n] == kind and (runs is None or classes[n].runs == runs))

    return ExpertPlan(
        names=names, kinds=kinds, dims={n: c.dim for n, c in classes.items()},
        frames=pick("frames"), inline_image=pick("image", "inline"),
        pool_image=pick("image", "pool"), audio=audio[0] if audio else None,
        title=pick("title"),
    )


def expert_columns(table_schema: pa.Schema, kinds: Sequence[str] = CLIP_KINDS
                   ) -> tuple[str, ...]:
    """The columns of a features table (schema order) that hold registered experts of
    ``kinds``: its ``list<float32>`` columns named after such an expert."""
    from mmx import schema

    return tuple(f.name for f in table_schema
                 if schema.is_vector_column(table_schema, f.name) and kind_of(f.name) in kinds)


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
