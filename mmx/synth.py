"""Deterministic synthetic trailer archive (``mmx.synth``).

This module owns the generation of a fake-but-realistic movie-trailer archive used by the demo
and the tests. It writes real MP4 files (H.264 ``yuv420p`` video via libx264 + mono AAC audio,
both through PyAV) together with the ground truth needed to evaluate the rest of ``mmx``:

* ``<out_dir>/videos/<trailer_id>.mp4`` -- the trailers;
* ``<out_dir>/labels.csv`` -- ``trailer_id,genres`` with pipe-separated genres (``Action|Sci-Fi``);
* ``<out_dir>/truth.json`` -- generation parameters, per-trailer genres, hard-cut frames,
  dissolve spans, frame counts, fps, audio presence, and the ``extras`` (problem inputs with
  their expected processing status).

A trailer is a sequence of shots separated mostly by hard cuts, plus some linear cross-fades
(dissolves). Consecutive shots are forced to differ strongly (background hue, brightness and
layout; checked with the same HSV metric PySceneDetect's content detectors use), while motion
inside a shot is smooth (camera pan over a smooth texture plus anti-aliased moving shapes), so
content-based shot detectors find every hard cut and no false ones.

Genres leave learnable but noisy cues in every modality: colour palette / brightness, amount of
motion, shot length, spatial layout and audio texture. Each shot takes the "style" of one of the
trailer's genres (weighted at random per trailer), some shots take the style of a random genre
and some use a random palette, so the labels are a realistic noisy multi-label target.

Two archives share this machinery. :func:`generate_archive` (the demo's and the tests') uses
the six hand-made genres of :data:`GENRES` with the default :class:`Cues`; its output is pinned.
:func:`generate_subgenre_archive` (the quality benchmark's) uses :data:`GENRES_20`: the six plus
14 genres derived from them (blended looks and tracks with their own twist, so Thriller is
confusable with Horror and Action the way real genres are), hidden sub-genres (a genre
combination x a content style of :mod:`mmx.synth_styles`) and weakened :class:`Cues`: neutral
shots and title cards, genre tracks under music, voice-over and ambience, per-trailer nuisance,
noisy labels.

Everything is seeded: the same seed gives the same frames, audio, labels and truth (and, with
the pinned single-threaded encoder settings, byte-identical files).
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from mmx import synth_metadata, synth_styles
from mmx.synth_styles import ContentStyle

logger = logging.getLogger("mmx.synth")

GENRES: tuple[str, ...] = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")
"""Genre vocabulary, in canonical order (labels are always written in this order)."""

SYNTH_VERSION = 1
"""Bumped whenever the generator's output changes; stored in ``truth.json`` parameters."""

AUDIO_SAMPLE_RATE = 16_000
"""Sample rate (Hz) of the mono AAC audio track."""

GOP_SIZE = 48
"""Maximum keyframe interval (frames) of the H.264 stream."""

MIN_SHOT_FRAMES = 16
"""Minimum number of frames of a shot, and of the cut-free part between two transitions."""

_GENRE_PRIOR = np.array([0.22, 0.20, 0.24, 0.12, 0.10, 0.12])
_P_OFF_GENRE_SHOT = 0.18  # shot styled after a random genre (label noise in the cues)
_P_OFF_PALETTE = 0.12  # shot with a random palette whatever its style
_P_DISSOLVE = 1.0 / 6.0
_LEAN_CONCENTRATION = 15.0  # how closely a trailer's genre mix follows its sub-genre's lean
_MIN_CUT_SCORE = 40.0  # min HSV mean-abs-difference (scale 0..255) across a hard cut
_CUT_RETRIES = 8
_DETECT_WIDTH = 96  # width at which the cut-distinctness check measures frames


@dataclass(frozen=True)
class SynthTrailer:
    """Ground truth of one generated trailer.

    Attributes:
        trailer_id: File stem, e.g. ``trailer_0007``.
        path: Absolute path of the MP4 file.
        genres: Labelled genres in :data:`GENRES` order (empty for an unlabelled trailer).
        fps: Frame rate (frames per second).
        n_frames: Number of video frames in the file.
        cut_frames: Hard cuts, each the index of the first frame of the new shot.
        dissolves: ``(first, last_exclusive)`` frame spans of the cross-fades; every frame
            inside a span is a blend of the outgoing and the incoming shot.
        has_audio: Whether the file has an audio stream.
    """

    trailer_id: str
    path: str
    genres: tuple[str, ...]
    fps: float
    n_frames: int
    cut_frames: tuple[int, ...]
    dissolves: tuple[tuple[int, int], ...]
    has_audio: bool


# --------------------------------------------------------------------------------------------
# Genre profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    """Visual cues of one genre; pixel quantities are for a 180-pixel-high frame."""

    hues: tuple[float, ...]  # main hue candidates in [0, 1)
    hue_jitter: float
    sat: tuple[float, float]
    val: tuple[float, float]
    hue2_offsets: tuple[float, ...]  # hue offset of the secondary colour
    val2: tuple[float, float]  # value of the secondary colour relative to the main one
    obj_speed: tuple[float, float]  # moving-object speed, px/frame
    pan_speed: tuple[float, float]  # camera pan speed, px/frame
    shot_seconds: tuple[float, float]
    n_objects: tuple[int, int]  # inclusive range
    obj_radius: tuple[float, float]  # px
    layouts: tuple[tuple[str, float], ...]  # (layout, weight)
    shapes: tuple[tuple[str, float], ...]  # (shape, weight)
    texture: tuple[float, float]  # amplitude of the smooth multiplicative texture


_PROFILES: dict[str, _Profile] = {
    "Action": _Profile(
        hues=(0.05, 0.08, 0.52),
        hue_jitter=0.03,
        sat=(0.6, 0.9),
        val=(0.45, 0.75),
        hue2_offsets=(0.5, 0.45, 0.55),
        val2=(0.6, 1.3),
        obj_speed=(5.0, 10.0),
        pan_speed=(1.5, 3.0),
        shot_seconds=(0.6, 1.1),
        n_objects=(4, 8),
        obj_radius=(6.0, 18.0),
        layouts=(("split", 3.0), ("gradient", 2.0), ("blobs", 0.5), ("bands", 0.5)),
        shapes=(("rect", 2.0), ("circle", 1.0)),
        texture=(0.08, 0.18),
    ),
    "Comedy": _Profile(
        hues=(0.12, 0.16, 0.3, 0.58, 0.0, 0.83),
        hue_jitter=0.03,
        sat=(0.7, 1.0),
        val=(0.8, 1.0),
        hue2_offsets=(0.33, 0.5, 0.66),
        val2=(0.8, 1.1),
        obj_speed=(2.5, 4.5),
        pan_speed=(0.4, 1.2),
        shot_seconds=(1.0, 1.8),
        n_objects=(3, 6),
        obj_radius=(10.0, 24.0),
        layouts=(("blobs", 3.0), ("gradient", 1.5), ("split", 0.5)),
        shapes=(("circle", 3.0), ("rect", 1.0)),
        texture=(0.04, 0.1),
    ),
    "Drama": _Profile(
        hues=(0.06, 0.09, 0.11),
        hue_jitter=0.02,
        sat=(0.2, 0.45),
        val=(0.35, 0.6),
        hue2_offsets=(0.02, -0.03, 0.05),
        val2=(0.4, 0.8),
        obj_speed=(0.3, 1.0),
        pan_speed=(0.1, 0.6),
        shot_seconds=(1.7, 2.5),
        n_objects=(0, 1),
        obj_radius=(8.0, 14.0),
        layouts=(("center", 4.0), ("gradient", 1.0), ("vignette", 0.5)),
        shapes=(("circle", 1.0),),
        texture=(0.08, 0.16),
    ),
    "Horror": _Profile(
        hues=(0.45, 0.5, 0.55),
        hue_jitter=0.03,
        sat=(0.25, 0.45),
        val=(0.16, 0.32),
        hue2_offsets=(0.05, -0.05, 0.0),
        val2=(1.8, 2.8),
        obj_speed=(0.5, 2.0),
        pan_speed=(0.2, 0.8),
        shot_seconds=(1.0, 2.5),
        n_objects=(0, 2),
        obj_radius=(6.0, 14.0),
        layouts=(("vignette", 4.0), ("center", 1.0), ("gradient", 0.5)),
        shapes=(("circle", 1.0), ("rect", 1.0)),
        texture=(0.1, 0.2),
    ),
    "Romance": _Profile(
        hues=(0.92, 0.95, 0.98, 0.03),
        hue_jitter=0.02,
        sat=(0.3, 0.55),
        val=(0.72, 0.95),
        hue2_offsets=(0.06, -0.06, 0.1),
        val2=(1.0, 1.2),
        obj_speed=(0.4, 1.4),
        pan_speed=(0.2, 0.8),
        shot_seconds=(1.5, 2.5),
        n_objects=(3, 7),
        obj_radius=(8.0, 20.0),
        layouts=(("glow", 4.0), ("gradient", 1.0), ("center", 0.5)),
        shapes=(("bokeh", 3.0), ("circle", 1.0)),
        texture=(0.04, 0.1),
    ),
    "Sci-Fi": _Profile(
        hues=(0.5, 0.53, 0.8, 0.75),
        hue_jitter=0.03,
        sat=(0.75, 1.0),
        val=(0.45, 0.7),
        hue2_offsets=(0.3, -0.3, 0.5),
        val2=(0.5, 1.4),
        obj_speed=(2.0, 5.0),
        pan_speed=(0.4, 2.0),
        shot_seconds=(0.9, 1.8),
        n_objects=(1, 4),
        obj_radius=(8.0, 20.0),
        layouts=(("bands", 4.0), ("split", 0.5), ("gradient", 0.5)),
        shapes=(("ring", 2.0), ("rect", 1.0)),
        texture=(0.05, 0.12),
    ),
}


# --------------------------------------------------------------------------------------------
# Derived genres (the 20-genre vocabulary of the sub-genre archive)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Derivation:
    """A genre built from the six hand-made ones: its look and sound blend its ``parents``
    (genre -> weight), then its own twist. Multipliers apply to the blended ranges."""

    parents: tuple[tuple[str, float], ...]
    hue_shift: float = 0.0  # added to every parent hue
    sat: float = 1.0
    val: float = 1.0
    speed: float = 1.0  # object and pan speeds
    shot: float = 1.0  # shot length
    rate: float = 1.0  # audio resampling factor of the parent tracks: > 1 higher and faster


_DERIVED: dict[str, _Derivation] = {
    "Adventure": _Derivation((("Action", 0.55), ("Comedy", 0.45)), 0.03, 1.0, 1.05, 0.8, 1.1,
                             0.92),
    "Animation": _Derivation((("Comedy", 0.7), ("Sci-Fi", 0.3)), -0.04, 1.15, 1.05, 1.2, 0.9,
                             1.18),
    "Biography": _Derivation((("Drama", 0.8), ("Romance", 0.2)), -0.02, 0.85, 1.05, 1.0, 1.0,
                             1.06),
    "Crime": _Derivation((("Drama", 0.45), ("Action", 0.3), ("Horror", 0.25)), 0.06, 0.9, 0.85,
                         0.9, 1.0, 0.9),
    "Documentary": _Derivation((("Drama", 0.7), ("Comedy", 0.3)), 0.0, 0.7, 1.1, 0.6, 1.15,
                               0.96),
    "Family": _Derivation((("Comedy", 0.6), ("Romance", 0.25), ("Drama", 0.15)), 0.05, 1.0, 1.0,
                          0.9, 1.05, 1.1),
    "Fantasy": _Derivation((("Sci-Fi", 0.4), ("Romance", 0.35), ("Action", 0.25)), 0.08, 1.0,
                           1.0, 0.9, 1.1, 0.88),
    "History": _Derivation((("Drama", 0.65), ("Action", 0.2), ("Romance", 0.15)), -0.01, 0.75,
                           0.95, 0.9, 1.05, 0.84),
    "Musical": _Derivation((("Romance", 0.5), ("Comedy", 0.5)), 0.03, 1.1, 1.0, 1.1, 1.0, 1.12),
    "Mystery": _Derivation((("Horror", 0.45), ("Drama", 0.35), ("Sci-Fi", 0.2)), -0.04, 0.9,
                           1.1, 0.9, 1.0, 1.08),
    "Sport": _Derivation((("Action", 0.5), ("Comedy", 0.3), ("Drama", 0.2)), 0.15, 1.0, 1.1,
                         1.1, 0.95, 1.04),
    "Thriller": _Derivation((("Horror", 0.5), ("Action", 0.5)), 0.02, 0.9, 0.9, 0.95, 0.9,
                            0.95),
    "War": _Derivation((("Action", 0.5), ("Drama", 0.5)), -0.02, 0.6, 0.95, 1.0, 1.0, 0.86),
    "Western": _Derivation((("Drama", 0.5), ("Action", 0.5)), 0.02, 0.8, 1.1, 0.85, 1.1, 0.94),
}

GENRES_20: tuple[str, ...] = GENRES + tuple(sorted(_DERIVED))
"""The sub-genre archive's vocabulary: the six hand-made genres, then the 14 derived ones."""

_GENRE_PRIOR_20: dict[str, float] = {
    "Drama": 0.28, "Comedy": 0.22, "Action": 0.2, "Thriller": 0.17, "Crime": 0.13,
    "Adventure": 0.13, "Romance": 0.12, "Horror": 0.1, "Sci-Fi": 0.09, "Mystery": 0.08,
    "Fantasy": 0.07, "Family": 0.06, "Animation": 0.05, "Biography": 0.05, "History": 0.04,
    "Documentary": 0.03, "Musical": 0.03, "Sport": 0.03, "War": 0.03, "Western": 0.02,
}  # skewed like real trailer archives (Drama, Comedy common; Western rare); label-frequency
# prior AU(PRC) micro ~0.27 on the default archive (0.2-0.36 over seeds)


def _blend_range(
    parents: tuple[tuple[str, float], ...], attr: str, mult: float = 1.0
) -> tuple[float, float]:
    lo = sum(w * getattr(_PROFILES[g], attr)[0] for g, w in parents) * mult
    hi = sum(w * getattr(_PROFILES[g], attr)[1] for g, w in parents) * mult
    return (lo, hi)


def _blend_items(
    parents: tuple[tuple[str, float], ...], attr: str
) -> tuple[tuple[str, float], ...]:
    """Union of the parents' weighted choices (layouts, shapes), weights scaled by parent."""
    acc: dict[str, float] = {}
    for g, w in parents:
        items = getattr(_PROFILES[g], attr)
        total = sum(x for _, x in items)
        for name, x in items:
            acc[name] = acc.get(name, 0.0) + w * x / total
    return tuple(acc.items())


def _derive_profile(d: _Derivation) -> _Profile:
    """The video profile of a derived genre: blended parent ranges and choices, then its
    twist. Related genres share hues, layouts and shapes: confusable the way real ones are."""
    ps = d.parents
    hues = tuple(sorted({round((h + d.hue_shift) % 1.0, 3) for g, _ in ps
                         for h in _PROFILES[g].hues}))
    sat = tuple(float(np.clip(x, 0.05, 1.0)) for x in _blend_range(ps, "sat", d.sat))
    val = tuple(float(np.clip(x, 0.08, 1.0)) for x in _blend_range(ps, "val", d.val))
    n_obj = _blend_range(ps, "n_objects")
    offsets = tuple(sorted({o for g, _ in ps for o in _PROFILES[g].hue2_offsets}))
    return _Profile(
        hues=hues,
        hue_jitter=max(_PROFILES[g].hue_jitter for g, _ in ps),
        sat=(sat[0], sat[1]),
        val=(val[0], val[1]),
        hue2_offsets=offsets,
        val2=_blend_range(ps, "val2"),
        obj_speed=_blend_range(ps, "obj_speed", d.speed),
        pan_speed=_blend_range(ps, "pan_speed", d.speed),
        shot_seconds=_blend_range(ps, "shot_seconds", d.shot),
        n_objects=(math.floor(n_obj[0]), math.ceil(n_obj[1])),
        obj_radius=_blend_range(ps, "obj_radius"),
        layouts=_blend_items(ps, "layouts"),
        shapes=_blend_items(ps, "shapes"),
        texture=_blend_range(ps, "texture"),
    )


_PROFILES.update({name: _derive_profile(d) for name, d in _DERIVED.items()})


def _related(genre: str) -> tuple[str, ...]:
    """Genres of :data:`GENRES_20` sharing a main parent with ``genre`` (its likely mislabels)."""
    def mains(g: str) -> set[str]:
        if g in _DERIVED:
            return {p for p, w in _DERIVED[g].parents if w >= 0.3}
        return {g}
    own = mains(genre)
    return tuple(g for g in GENRES_20 if g != genre and mains(g) & own)


def _weighted_choice(rng: np.random.Generator, items: Sequence[tuple[str, float]]) -> str:
    names = [name for name, _ in items]
    weights = np.array([w for _, w in items], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] (hue wraps) -> RGB float32 array of shape (3,) in [0, 255]."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return np.array([r, g, b], dtype=np.float32) * 255.0


# --------------------------------------------------------------------------------------------
# Shots (video)
# --------------------------------------------------------------------------------------------


@dataclass
class _Object:
    """A moving shape; position in frame pixels, bounces off the frame borders."""

    shape: str
    x0: float
    y0: float
    vx: float
    vy: float
    radius: float
    aspect: float
    color: np.ndarray  # (3,) float32 RGB
    alpha: float


def _bounce(p: float, lo: float, hi: float) -> float:
    """Reflect coordinate ``p`` into ``[lo, hi]`` (triangle wave)."""
    span = max(hi - lo, 1e-6)
    y = (p - lo) % (2.0 * span)
    return lo + (2.0 * span - y if y > span else y)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth random field, float32 ``(h, w)``, roughly in [-1, 1] (bicubic-upsampled grid)."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


class _Shot:
    """One shot: a panned canvas (rendered once) plus moving shapes drawn per frame."""

    def __init__(
        self,
        rng: np.random.Generator,
        style: str,
        length: int,
        width: int,
        height: int,
        off_palette: bool,
        content: ContentStyle | None = None,
        content_rng: np.random.Generator | None = None,
    ) -> None:
        self.style = style
        self.length = length
        self.width = width
        self.height = height
        prof = _PROFILES[style]
        scale = height / 180.0

        # Palette.
        if off_palette:
            hue = float(rng.uniform(0, 1))
            sat = float(rng.uniform(0.2, 0.9))
            val = float(rng.uniform(0.25, 0.9))
        else:
            hue = float(rng.choice(prof.hues) + rng.normal(0, prof.hue_jitter))
            sat = float(rng.uniform(*prof.sat))
            val = float(rng.uniform(*prof.val))
        hue2 = hue + float(rng.choice(prof.hue2_offsets)) + float(rng.normal(0, 0.02))
        val2 = val * float(rng.uniform(*prof.val2))
        self.c1 = _hsv_rgb(hue, sat, val)
        self.c2 = _hsv_rgb(hue2, sat * float(rng.uniform(0.8, 1.1)), val2)
        self.accent = _hsv_rgb(
            hue + float(rng.uniform(0.35, 0.65)),
            min(1.0, sat + 0.3),
            min(1.0, max(val * 1.4, 0.45)),
        )
        self.layout = _weighted_choice(rng, prof.layouts)

        # Camera pan (integer-pixel offsets into a larger canvas).
        speed = float(rng.uniform(*prof.pan_speed)) * scale
        angle = float(rng.uniform(0, 2 * math.pi))
        self.vx, self.vy = speed * math.cos(angle), 0.5 * speed * math.sin(angle)
        travel_x = abs(self.vx) * (length - 1)
        travel_y = abs(self.vy) * (length - 1)
        self.ox0 = travel_x if self.vx < 0 else 0.0
        self.oy0 = travel_y if self.vy < 0 else 0.0
        ch = height + math.ceil(travel_y) + 1
        cw = width + math.ceil(travel_x) + 1
        self.canvas = self._render_canvas(rng, prof, ch, cw, scale)
        # The sub-genre's content (its setting and recurring object), drawn from its own
        # generator so that archives without content styles are unchanged.
        self.content = content
        self.motifs: list[tuple[float, float, float, float, float, float, np.ndarray]] = []
        if content is not None:
            crng = content_rng if content_rng is not None else np.random.default_rng(0)
            colour, alpha = synth_styles.setting_layer(content, crng, ch, cw, scale, self.c1)
            blended = self.canvas * (1 - alpha[..., None]) + colour * alpha[..., None]
            self.canvas = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
            for _ in range(int(crng.integers(1, 4))):
                r = float(crng.uniform(12, 24)) * scale * content.motif_scale
                spd = float(crng.uniform(0.3, 2.5)) * scale
                ang = float(crng.uniform(0, 2 * math.pi))
                self.motifs.append((
                    float(crng.uniform(r, width - r)), float(crng.uniform(r, height - r)),
                    spd * math.cos(ang), spd * math.sin(ang), r,
                    float(crng.uniform(0, 2 * math.pi)),
                    synth_styles.motif_colour(content, crng),
                ))

        # Moving objects.
        self.objects: list[_Object] = []
        n_obj = int(rng.integers(prof.n_objects[0], prof.n_objects[1] + 1))
        for _ in range(n_obj):
            shape = _weighted_choice(rng, prof.shapes)
            radius = float(rng.uniform(*prof.obj_radius)) * scale
            ospeed = float(rng.uniform(*prof.obj_speed)) * scale
            oang = float(rng.uniform(0, 2 * math.pi))
            color = self.accent if rng.random() < 0.6 else self.c2 * 1.15
            self.objects.append(
                _Object(
                    shape=shape,
                    x0=float(rng.uniform(0, width)),
                    y0=float(rng.uniform(0, height)),
                    vx=ospeed * math.cos(oang),
                    vy=ospeed * math.sin(oang),
                    radius=radius,
                    aspect=float(rng.uniform(0.6, 1.8)),
                    color=np.clip(color, 0, 255).astype(np.float32),
                    alpha=0.55 if shape == "bokeh" else 1.0,
                )
            )
        # A centred figure (Drama-like "center" layout): head + body, slowly swaying.
        self.figure: tuple[float, float, float, np.ndarray] | None = None
        if self.layout == "center":
            fx = width / 2 + float(rng.uniform(-0.08, 0.08)) * width
            sway = float(rng.uniform(2.0, 6.0)) * scale
            period = float(rng.uniform(40, 90))
            dark = rng.random() < 0.6
            fcol = self.c1 * (0.25 if dark else 1.6) + (0 if dark else 30)
            self.figure = (fx, sway, period, np.clip(fcol, 0, 255).astype(np.float32))

    # -- canvas ---------------------------------------------------------------------------

    def _render_canvas(
        self, rng: np.random.Generator, prof: _Profile, ch: int, cw: int, scale: float
    ) -> np.ndarray:
        """Static background of the shot, uint8 RGB ``(ch, cw, 3)``."""
        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        c1, c2 = self.c1, self.c2
        h = float(self.height)
        layout = self.layout
        if layout == "gradient":
            a = rng.uniform(0, 2 * math.pi)
            t = xx * math.cos(a) + yy * math.sin(a)
            t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
            m = t
        elif layout == "split":
            a = rng.uniform(0, 2 * math.pi)
            px = cw / 2 + rng.uniform(-0.25, 0.25) * self.width
            py = ch / 2 + rng.uniform(-0.25, 0.25) * h
            d = (xx - px) * math.cos(a) + (yy - py) * math.sin(a)
            m = np.clip(d / 2.0 + 0.5, 0, 1) * (0.8 + 0.2 * np.tanh(np.abs(d) / (0.5 * h)))
        elif layout == "bands":
            k = rng.uniform(3, 7)
            phase = yy / h * k * math.pi + 0.25 * np.sin(xx / (60 * scale) + rng.uniform(0, 6))
            s = np.sin(phase + rng.uniform(0, 2 * math.pi))
            m = np.clip(s * 4 + 0.5, 0, 1)
            line = np.clip(1 - np.abs(s) / 0.12, 0, 1)
        elif layout == "blobs":
            step = rng.uniform(40, 70) * scale
            r = step * rng.uniform(0.22, 0.4)
            ox, oy = rng.uniform(0, step, size=2)
            dx = np.mod(xx - ox, step) - step / 2
            dy = np.mod(yy - oy, step) - step / 2
            m = np.clip(r + 0.5 - np.sqrt(dx * dx + dy * dy), 0, 1)
        elif layout == "vignette":
            lx = cw / 2 + rng.uniform(-0.35, 0.35) * self.width
            ly = ch / 2 + rng.uniform(-0.3, 0.3) * h
            sig = rng.uniform(0.2, 0.45) * h
            m = np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * sig * sig))
        elif layout == "glow":
            lx = cw / 2 + rng.uniform(-0.4, 0.4) * self.width
            ly = ch / 2 + rng.uniform(-0.3, 0.3) * h
            sig = rng.uniform(0.3, 0.6) * h
            m = np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * sig * sig))
        elif layout == "center":
            cx, cy = cw / 2, ch / 2
            r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (0.9 * h)
            m = np.clip(r, 0, 1)
        else:  # pragma: no cover - profiles only use the layouts above
            raise ValueError(f"unknown layout {layout!r}")
        img = c1[None, None, :] * (1 - m)[..., None] + c2[None, None, :] * m[..., None]
        if layout == "bands":
            img = img * (1 - line)[..., None] + self.accent[None, None, :] * line[..., None]
        if layout == "glow":
            # A few soft bokeh discs baked into the background.
            for _ in range(int(rng.integers(4, 9))):
                bx, by = rng.uniform(0, cw), rng.uniform(0, ch)
                br = rng.uniform(6, 16) * scale
                x0, x1 = max(int(bx - br - 2), 0), min(int(bx + br + 3), cw)
                y0, y1 = max(int(by - br - 2), 0), min(int(by + br + 3), ch)
                if x0 >= x1 or y0 >= y1:
                    continue
                d = np.sqrt((xx[y0:y1, x0:x1] - bx) ** 2 + (yy[y0:y1, x0:x1] - by) ** 2)
                a = (np.clip((br - d) / (0.4 * br), 0, 1) * 0.4)[..., None]
                img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + self.accent * a
        amp = rng.uniform(*prof.texture)
        tex = _smooth_noise(rng, ch, cw, cell=rng.uniform(30, 60) * scale)
        img = img * (1.0 + amp * tex)[..., None]
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    # -- frames ---------------------------------------------------------------------------

    def frame(self, k: int) -> np.ndarray:
        """Local frame ``k`` (0-based) of the shot, uint8 RGB ``(height, width, 3)``."""
        ox = round(self.ox0 + self.vx * k)
        oy = round(self.oy0 + self.vy * k)
        img = self.canvas[oy : oy + self.height, ox : ox + self.width].copy()
        w, h = self.width, self.height
        if self.figure is not None:
            fx, sway, period, fcol = self.figure
            x = fx + sway * math.sin(2 * math.pi * k / period)
            _draw_ellipse(img, x, 0.86 * h, 0.17 * h, 0.36 * h, fcol, 1.0)
            _draw_ellipse(img, x, 0.4 * h, 0.095 * h, 0.11 * h, fcol, 1.0)
        for ob in self.objects:
            r = ob.radius
            x = _bounce(ob.x0 + ob.vx * k, r, w - r)
            y = _bounce(ob.y0 + ob.vy * k, r, h - r)
            if ob.shape == "rect":
                _draw_rect(img, x, y, r * ob.aspect, r, ob.color)
            elif ob.shape == "ring":
                _draw_ring(img, x, y, r, max(2.0, 0.25 * r), ob.color)
            elif ob.shape == "bokeh":
                _draw_disc(img, x, y, r, ob.color, ob.alpha, soft=0.4 * r)
            else:
                _draw_disc(img, x, y, r, ob.color, ob.alpha, soft=1.0)
        if self.content is not None:
            for mx, my, mvx, mvy, r, angle, colour in self.motifs:
                x = _bounce(mx + mvx * k, r, w - r)
                y = _bounce(my + mvy * k, r, h - r)
                synth_styles.draw_motif(img, self.content.motif, x, y, r, angle + 0.01 * k,
                                        colour)
        return img


def _region(
    img: np.ndarray, x: float, y: float, rx: float, ry: float
) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Bounding box of a shape centred at (x, y); returns slices and centred coordinates."""
    h, w = img.shape[:2]
    x0, x1 = max(int(x - rx - 2), 0), min(int(x + rx + 3), w)
    y0, y1 = max(int(y - ry - 2), 0), min(int(y + ry + 3), h)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(x)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(y)
    return slice(y0, y1), slice(x0, x1), dx, dy


def _blend_into(
    img: np.ndarray, sy: slice, sx: slice, alpha: np.ndarray, color: np.ndarray
) -> None:
    """Alpha-blend ``color`` (3,) into ``img[sy, sx]`` with per-pixel ``alpha`` (h, w)."""
    reg = img[sy, sx].astype(np.float32)
    a = alpha[..., None]
    img[sy, sx] = np.clip(reg + (color - reg) * a + 0.5, 0, 255).astype(np.uint8)


def _draw_disc(
    img: np.ndarray, x: float, y: float, r: float, color: np.ndarray, alpha: float, soft: float
) -> None:
    reg = _region(img, x, y, r, r)
    if reg is None:
        return
    sy, sx, dx, dy = reg
    d = np.sqrt(dx * dx + dy * dy)
    a = np.clip((r - d) / soft + 0.5, 0, 1) * alpha
    _blend_into(img, sy, sx, a, color)


def _draw_rect(
    img: np.ndarray, x: float, y: float, hw: float, hh: float, color: np.ndarray
) -> None:
    reg = _region(img, x, y, hw, hh)
    if reg is None:
        return
    sy, sx, dx, dy = reg
    a = np.clip(np.minimum(hw + 0.5 - np.abs(dx), hh + 0.5 - np.abs(dy)), 0, 1)
    _blend_into(img, sy, sx, a, color)


def _draw_ring(
    img: np.ndarray, x: float, y: float, r: float, width: float, color: np.ndarray
) -> None:
    reg = _region(img, x, y, r + width, r + width)
    if reg is None:
        return
    sy, sx, dx, dy = reg
    d = np.sqrt(dx * dx + dy * dy)
    a = np.clip(width / 2 + 0.5 - np.abs(d - r), 0, 1)
    _blend_into(img, sy, sx, a, color)


def _draw_ellipse(
    img: np.ndarray, x: float, y: float, rx: float, ry: float, color: np.ndarray, alpha: float
) -> None:
    reg = _region(img, x, y, rx, ry)
    if reg is None:
        return
    sy, sx, dx, dy = reg
    d = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    a = np.clip((1 - d) * min(rx, ry) + 0.5, 0, 1) * alpha
    _blend_into(img, sy, sx, a, color)


def _hsv_small(img: np.ndarray) -> np.ndarray:
    """Downscale RGB uint8 ``(h, w, 3)`` to ~96 px wide and convert to OpenCV HSV (int16)."""
    h, w = img.shape[:2]
    size = (_DETECT_WIDTH, max(1, round(_DETECT_WIDTH * h / w)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.int16)


def _cut_score(a: np.ndarray, b: np.ndarray) -> float:
    """PySceneDetect-style content score between two RGB uint8 frames (mean |dH|,|dS|,|dV|)."""
    return float(np.abs(_hsv_small(a) - _hsv_small(b)).mean())


# --------------------------------------------------------------------------------------------
# Trailer plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cues:
    """How clearly a trailer shows its genres and its content style.

    The defaults are the demo archive's and leave :func:`write_trailer`'s output unchanged;
    :func:`generate_subgenre_archive` weakens them. Levels are relative to the genre tracks'.

    Attributes:
        vocab: Genre vocabulary (canonical order) the trailer's genres and off-genre shots
            come from: :data:`GENRES` or :data:`GENRES_20`.
        off_genre_share: Share of shots styled after a random genre of ``vocab``.
        neutral_share: Share of shots that carry no cue of the trailer: half title cards (text
            on a dark ground, no genre track), half a random genre's look in random colours.
        content_share: With a content style: share of the other shots showing its setting and
            recurring object (its grading and music cover the whole trailer).
        genre_audio: Level of the genre tracks.
        shot_audio: Share of a genre track's level that follows the shots styled after it; the
            rest follows the trailer's genre weights (a score that runs across cuts).
        music: With a content style: range of its music's level (drawn per trailer).
        voice: Level of a voice-over (speech-like syllables; x U(0.5, 1.5) per trailer, and a
            fifth of the trailers have none).
        ambience: Level of room tone / wind / crowd noise (x U(0.3, 1.5) per trailer).
        nuisance: Strength in [0, 1] of the per-trailer nuisance: colour cast, brightness and
            contrast, letterbox bars, softness, and an audio EQ tilt.
    """

    vocab: tuple[str, ...] = GENRES
    off_genre_share: float = _P_OFF_GENRE_SHOT
    neutral_share: float = 0.0
    content_share: float = 0.0
    genre_audio: float = 1.0
    shot_audio: float = 0.65
    music: tuple[float, float] = (0.35, 0.7)
    voice: float = 0.0
    ambience: float = 0.0
    nuisance: float = 0.0


class _TitleCard:
    """A neutral shot: a line or two of text on a dark ground, slowly zooming. ``style`` is
    None: it carries no genre (and no genre track plays under it)."""

    style = None

    def __init__(
        self, rng: np.random.Generator, length: int, width: int, height: int
    ) -> None:
        self.length, self.width, self.height = length, width, height
        scale = height / 180.0
        ground = _hsv_rgb(float(rng.uniform(0, 1)), float(rng.uniform(0.2, 0.9)),
                          float(rng.uniform(0.03, 0.2)))
        ink = _hsv_rgb(float(rng.uniform(0, 1)), float(rng.uniform(0.0, 0.5)),
                       float(rng.uniform(0.75, 1.0)))
        tex = _smooth_noise(rng, height, width, cell=50 * scale)
        canvas = ground[None, None, :] * (1.0 + 0.15 * tex)[..., None]
        canvas = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        n_lines = int(rng.integers(1, 3))
        font_scale = float(rng.uniform(0.6, 1.0)) * scale
        thickness = max(1, round(2 * scale))
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ     "
        for j in range(n_lines):
            text = "".join(letters[int(c)] for c in rng.integers(len(letters),
                                                                 size=int(rng.integers(6, 14))))
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, font_scale, thickness)
            x = max(2, (width - tw) // 2)
            y = int(height / 2 + (j - (n_lines - 1) / 2) * 1.8 * th + th / 2)
            cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, font_scale,
                        tuple(float(c) for c in ink), thickness, cv2.LINE_AA)
        self.canvas = canvas
        self.zoom = float(rng.uniform(0.0005, 0.002))  # relative zoom per frame

    def frame(self, k: int) -> np.ndarray:
        """Local frame ``k`` of the card, uint8 RGB ``(height, width, 3)``."""
        s = 1.0 + self.zoom * k
        cx, cy = self.width / 2, self.height / 2
        m = np.array([[s, 0, cx * (1 - s)], [0, s, cy * (1 - s)]], np.float32)
        return cv2.warpAffine(self.canvas, m, (self.width, self.height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@dataclass
class _Plan:
    """Timeline of a trailer. ``starts[i]`` is the first frame of shot ``i``; ``fades[i]`` is
    the dissolve length between shot ``i`` and ``i + 1`` (0 for a hard cut). The remaining
    fields are per-trailer draws for weakened cues (:class:`Cues`); their defaults change
    nothing."""

    shots: list[_Shot | _TitleCard]
    starts: list[int]
    fades: list[int]
    n_frames: int
    genre_weights: dict[str, float]
    cues: Cues = Cues()
    content: ContentStyle | None = None
    grade: np.ndarray | None = None  # (3, 4) affine RGB map of every frame (grading, nuisance)
    blur: float = 0.0  # Gaussian sigma (px) of every frame
    letterbox: int = 0  # rows blacked out at the top and at the bottom
    music_gain: float = 0.0  # the style's music
    voice_gain: float = 0.0
    voice_f0: float = 120.0  # the narrator's pitch (Hz)
    ambience_gain: float = 0.0
    eq_tilt: float = 0.0  # spectral slope of the mix, octaves^-1 in amplitude log2 units

    @property
    def cut_frames(self) -> tuple[int, ...]:
        return tuple(self.starts[i + 1] for i, d in enumerate(self.fades) if d == 0)

    @property
    def dissolves(self) -> tuple[tuple[int, int], ...]:
        return tuple(
            (self.starts[i + 1], self.starts[i + 1] + d) for i, d in enumerate(self.fades) if d
        )


def _plan_trailer(
    rng: np.random.Generator,
    genres: tuple[str, ...],
    n_shots: int | None,
    width: int,
    height: int,
    fps: float,
    content: ContentStyle | None = None,
    cue_rng: np.random.Generator | None = None,
    cues: Cues = Cues(),
    lean: tuple[Sequence[float], float] | None = None,
) -> _Plan:
    """Draw styles, lengths and transitions, and build distinct consecutive shots.

    ``lean``: ``(weights, pace)`` of a sub-genre, its trailers' usual mix of ``genres`` and
    shot-length multiplier; the trailer's own mix is drawn around it. Everything the default
    :class:`Cues` do not use (neutral shots, the ``content`` style's shots, the lean, the
    per-trailer nuisance) is drawn from ``cue_rng``, never from ``rng``, so the default output
    does not change.
    """
    vocab = cues.vocab
    k = len(genres)
    weights = rng.dirichlet(np.full(k, 3.0)) if k else np.zeros(0)
    crng = cue_rng if cue_rng is not None else np.random.default_rng(0)
    if lean is not None and k:
        weights = crng.dirichlet(_LEAN_CONCENTRATION * np.asarray(lean[0], np.float64) + 0.05)
    if n_shots is None:
        n_shots = int(rng.integers(12, 25))
    if n_shots < 1:
        raise ValueError("n_shots must be >= 1")
    styles: list[str] = []
    for _ in range(n_shots):
        if k == 0 or rng.random() < cues.off_genre_share:
            styles.append(vocab[int(rng.integers(len(vocab)))])
        else:
            styles.append(genres[int(rng.choice(k, p=weights))])
    off_palette = rng.random(n_shots) < _P_OFF_PALETTE
    neutral = np.zeros(n_shots, dtype=bool)
    titles = np.zeros(n_shots, dtype=bool)
    shows = np.zeros(n_shots, dtype=bool)  # shots showing the content style's setting, motif
    if cues.neutral_share > 0:
        neutral = crng.random(n_shots) < cues.neutral_share
        titles = neutral & (crng.random(n_shots) < 0.5)
        for i in np.flatnonzero(neutral):
            styles[i] = vocab[int(crng.integers(len(vocab)))]
        off_palette |= neutral
    if content is not None:
        shows = ~neutral & (crng.random(n_shots) < cues.content_share)
    tempo = float(np.exp(rng.normal(0, 0.12)))
    if lean is not None:
        tempo *= lean[1]
    min_frames = max(MIN_SHOT_FRAMES, math.ceil(0.6 * fps))
    lengths = []
    for style in styles:
        secs = float(np.clip(rng.uniform(*_PROFILES[style].shot_seconds) * tempo, 0.6, 2.5))
        lengths.append(max(min_frames, round(secs * fps)))
    fades = [
        int(rng.integers(6, 11)) if rng.random() < _P_DISSOLVE else 0 for _ in range(n_shots - 1)
    ]
    for i in range(n_shots):
        d_in = fades[i - 1] if i > 0 else 0
        d_out = fades[i] if i < n_shots - 1 else 0
        lengths[i] = max(lengths[i], d_in + d_out + MIN_SHOT_FRAMES)

    shots: list[_Shot | _TitleCard] = []
    for i, style in enumerate(styles):
        best: tuple[float, _Shot | _TitleCard] | None = None
        for attempt in range(_CUT_RETRIES):
            shot: _Shot | _TitleCard
            if titles[i]:
                shot = _TitleCard(crng, lengths[i], width, height)
            else:
                shot = _Shot(
                    rng, style, lengths[i], width, height, bool(off_palette[i]) and not attempt,
                    content if shows[i] else None, crng,
                )
            if not shots:
                best = (math.inf, shot)
                break
            prev = shots[-1]
            score = _cut_score(prev.frame(prev.length - 1), shot.frame(0))
            if best is None or score > best[0]:
                best = (score, shot)
            if score >= _MIN_CUT_SCORE:
                break
        assert best is not None
        shots.append(best[1])

    starts = [0]
    for i in range(n_shots - 1):
        starts.append(starts[-1] + lengths[i] - fades[i])
    n_frames = starts[-1] + lengths[-1]
    genre_weights = {g: float(w) for g, w in zip(genres, weights, strict=True)}
    plan = _Plan(shots, starts, fades, n_frames, genre_weights, cues, content)
    _draw_trailer_cues(plan, crng, height)
    return plan


def _draw_trailer_cues(plan: _Plan, rng: np.random.Generator, height: int) -> None:
    """Per-trailer draws of the weakened cues (:class:`Cues`): grading and nuisance, sound
    levels. Draws nothing with default cues and no content style."""
    cues, content = plan.cues, plan.content
    s = float(np.clip(cues.nuisance, 0.0, 1.0))
    if content is not None:
        plan.music_gain = float(rng.uniform(*cues.music))
    if content is not None or s > 0:  # the style's grading, then this trailer's film stock
        strength = float(rng.uniform(0.5, 1.0)) if content is not None else 0.0
        brightness = float(rng.normal(0, 0.05))
        contrast = float(rng.uniform(0.8, 1.2))
        cast = 1.0 + rng.normal(0, 0.07 * s, size=3)  # (3,) per-channel gain
        plan.grade = synth_styles.grade_matrix(content, strength, brightness, contrast, cast)
    if s > 0:
        if rng.random() < 0.35 * s:
            plan.letterbox = round(height * float(rng.uniform(0.08, 0.14)))
        plan.blur = float(rng.uniform(0.0, 1.2 * s))
        plan.eq_tilt = float(rng.uniform(-0.6, 0.6) * s)
    if cues.voice > 0 and rng.random() < 0.8:
        plan.voice_gain = cues.voice * float(rng.uniform(0.5, 1.5))
        plan.voice_f0 = float(np.exp(rng.uniform(np.log(85), np.log(230))))
    if cues.ambience > 0:
        plan.ambience_gain = cues.ambience * float(rng.uniform(0.3, 1.5))


def _iter_frames(plan: _Plan) -> Iterator[np.ndarray]:
    """Yield the trailer's frames in order, uint8 RGB ``(height, width, 3)``."""
    shots, fades = plan.shots, plan.fades
    n = len(shots)
    for i, shot in enumerate(shots):
        d_in = fades[i - 1] if i > 0 else 0
        d_out = fades[i] if i < n - 1 else 0
        for k in range(d_in, shot.length):
            img = shot.frame(k)
            j = k - (shot.length - d_out)
            if j >= 0:
                a = (j + 1) / (d_out + 1)
                nxt = shots[i + 1].frame(j).astype(np.float32)
                img = np.clip(img * (1 - a) + nxt * a + 0.5, 0, 255).astype(np.uint8)
            if plan.grade is not None:
                img = synth_styles.grade(img, plan.grade)
            if plan.blur >= 0.3:
                img = cv2.GaussianBlur(img, (0, 0), plan.blur)
            if plan.letterbox:
                img[: plan.letterbox] = 0
                img[-plan.letterbox :] = 0
            yield img


def render_frames(
    genres: Sequence[str],
    *,
    seed: int,
    n_shots: int | None = None,
    width: int = 320,
    height: int = 180,
    fps: float = 24,
) -> tuple[np.ndarray, dict[str, object]]:
    """Render a trailer's frames in memory, without encoding (for analysis and tests).

    Returns:
        ``(frames, info)``: frames uint8 RGB ``(n_frames, height, width, 3)`` identical to what
        :func:`write_trailer` encodes for the same arguments, and ``info`` with ``cut_frames``,
        ``dissolves``, ``shot_styles`` and ``genre_weights``.
    """
    gen = _canonical_genres(genres)
    video_ss, _ = np.random.SeedSequence(int(seed)).spawn(2)
    plan = _plan_trailer(np.random.default_rng(video_ss), gen, n_shots, width, height, fps)
    frames = np.stack(list(_iter_frames(plan)))
    info: dict[str, object] = {
        "cut_frames": plan.cut_frames,
        "dissolves": plan.dissolves,
        "shot_styles": tuple(s.style for s in plan.shots),
        "genre_weights": plan.genre_weights,
    }
    return frames, info


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _lowpass_noise(rng: np.random.Generator, n: int, cutoff: float, sr: int) -> np.ndarray:
    """Gaussian noise low-passed at ``cutoff`` Hz (FFT domain), float64 ``(n,)``, unit std."""
    nfft = 1 << max(1, (n - 1).bit_length())
    spec = np.fft.rfft(rng.standard_normal(nfft))
    f = np.fft.rfftfreq(nfft, 1.0 / sr)
    spec *= 1.0 / (1.0 + (f / cutoff) ** 4)
    y = np.fft.irfft(spec, nfft)[:n]
    return y / (y.std() + 1e-9)


def _place(track: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Add ``sound`` into ``track`` at sample ``start`` (clipped to the track)."""
    if start >= len(track):
        return
    end = min(len(track), start + len(sound))
    track[start:end] += sound[: end - start]


def _aud_horror(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low drone with slow beating, sub rumble and rare dissonant swells."""
    t = np.arange(n) / sr
    f0 = rng.uniform(38, 62)
    y = np.sin(2 * np.pi * f0 * t)
    y += 0.7 * np.sin(2 * np.pi * f0 * 1.5 * 1.004 * t) * (0.6 + 0.4 * np.sin(0.8 * t + 1.0))
    y += 0.4 * np.sin(2 * np.pi * f0 * 2.02 * t)
    y += 0.6 * _lowpass_noise(rng, n, 120.0, sr)
    pos = int(rng.uniform(1.0, 4.0) * sr)
    while pos < n:
        dur = int(rng.uniform(1.5, 2.5) * sr)
        tt = np.arange(dur) / sr
        f = rng.uniform(900, 1300)
        env = np.sin(np.pi * tt / tt[-1]) ** 2
        swell = (np.sin(2 * np.pi * f * tt) + np.sin(2 * np.pi * f * 1.06 * tt)) * env * 0.25
        _place(y, pos, swell)
        pos += int(rng.uniform(4.0, 7.0) * sr)
    return y


def _aud_action(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Kick drums on the beat, snare-like noise on the off-beat, and big noise hits."""
    y = np.zeros(n)
    beat = 60.0 / rng.uniform(120, 160)
    tk = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-tk / 0.03)) / sr) * np.exp(-tk / 0.08)
    ts = np.arange(int(0.15 * sr)) / sr
    snare_len = len(ts)
    b = 0
    while b * beat * sr < n:
        _place(y, int(b * beat * sr), 1.2 * kick)
        noise = rng.standard_normal(snare_len)
        snare = np.diff(noise, prepend=0.0) * np.exp(-ts / 0.04) * 0.35
        _place(y, int((b + 0.5) * beat * sr), snare)
        b += 1
    pos = int(rng.uniform(0.2, 1.5) * sr)
    th = np.arange(int(0.5 * sr)) / sr
    while pos < n:
        hit = _lowpass_noise(rng, len(th), 2500.0, sr) * np.exp(-th / 0.12) * 0.9
        _place(y, pos, hit)
        pos += int(rng.uniform(0.8, 2.5) * sr)
    return y


def _aud_comedy(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bright, bouncy staccato high tones on a major pentatonic scale, plus slide whistles."""
    y = np.zeros(n)
    base = rng.uniform(520, 780)
    scale = np.array([1.0, 9 / 8, 5 / 4, 3 / 2, 5 / 3, 2.0])
    step = 60.0 / rng.uniform(110, 140) / 2
    tn = np.arange(int(0.2 * sr)) / sr
    env = np.exp(-tn / 0.07)
    i = 0
    while i * step * sr < n:
        if rng.random() > 0.25:
            f = base * scale[int(rng.integers(len(scale)))]
            note = (np.sin(2 * np.pi * f * tn) + 0.3 * np.sin(4 * np.pi * f * tn)) * env
            _place(y, int(i * step * sr), 0.6 * note)
        i += 1
    pos = int(rng.uniform(1.0, 3.0) * sr)
    while pos < n:
        dur = int(rng.uniform(0.3, 0.6) * sr)
        tt = np.arange(dur) / sr
        f = 300 * (3.0 ** (tt / tt[-1])) if rng.random() < 0.5 else 900 / (3.0 ** (tt / tt[-1]))
        slide = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * tt / tt[-1]) * 0.4
        _place(y, pos, slide)
        pos += int(rng.uniform(2.5, 5.0) * sr)
    return y


def _aud_romance(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Soft sustained major chords (sine tones with chorus) with slow attack and release."""
    y = np.zeros(n)
    roots = np.array([196.0, 220.0, 246.9, 261.6, 293.7]) * rng.uniform(0.97, 1.03)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(2.0, 3.0) * sr)
        tail = int(0.8 * sr)
        tt = np.arange(dur + tail) / sr
        env = np.minimum(1.0, tt / 0.6) * np.clip((dur / sr + 0.8 - tt) / 0.8, 0, 1)
        root = roots[int(rng.integers(len(roots)))]
        chord = np.zeros_like(tt)
        for ratio in (1.0, 1.25, 1.5, 2.0):
            f = root * ratio
            chord += np.sin(2 * np.pi * f * tt) + 0.5 * np.sin(2 * np.pi * (f + 0.5) * tt)
        _place(y, pos, chord * env * 0.3)
        pos += dur
    return y


def _aud_scifi(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """FM-synth sweeps: exponential carrier glides with a modulator at a fixed ratio."""
    y = np.zeros(n)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(1.2, 3.0) * sr)
        tt = np.arange(dur) / sr
        fa, fb = np.exp(rng.uniform(np.log(150), np.log(1600), size=2))
        fc = fa * (fb / fa) ** (tt / tt[-1])
        ratio = float(rng.choice([0.5, 1.5, 2.0, 3.5]))
        index = rng.uniform(1.5, 5.0)
        phase_m = 2 * np.pi * np.cumsum(fc * ratio) / sr
        sweep = np.sin(2 * np.pi * np.cumsum(fc) / sr + index * np.sin(phase_m))
        env = np.minimum(1.0, np.minimum(tt, tt[-1] - tt) / 0.05)
        _place(y, pos, sweep * env * 0.6)
        pos += dur
    return y


def _aud_drama(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """String-like swells: two voices of 1/n harmonic stacks with vibrato, minor intervals."""
    table_size = 2048
    ph = np.arange(table_size) * (2 * np.pi / table_size)
    table = sum(np.sin(h * ph) / h for h in range(1, 9))  # band-limited sawtooth-like stack
    y = np.zeros(n)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(3.0, 5.0) * sr)
        tt = np.arange(dur) / sr
        env = np.sin(np.pi * tt / tt[-1]) ** 2
        root = rng.uniform(110, 220)
        seg = np.zeros(dur)
        for ratio in (1.0, float(rng.choice([1.2, 1.5]))):
            f = root * ratio * (1 + 0.006 * np.sin(2 * np.pi * 5.5 * tt + rng.uniform(0, 6)))
            idx = (np.cumsum(f) * (table_size / sr)).astype(np.int64) % table_size
            seg += table[idx]
        _place(y, pos, seg * env * 0.3)
        pos += int(dur * 0.75)
    return y


_AUDIO_TRACKS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "Action": _aud_action,
    "Comedy": _aud_comedy,
    "Drama": _aud_drama,
    "Horror": _aud_horror,
    "Romance": _aud_romance,
    "Sci-Fi": _aud_scifi,
}


def _derived_track(d: _Derivation) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    """A derived genre's track: its parents' tracks (unit RMS, weighted) resampled by
    ``d.rate``, which shifts pitch and tempo together (a tape-speed change)."""

    def track(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
        m = math.ceil(n * d.rate) + 2
        at = np.arange(n) * d.rate  # where each output sample reads the parents' tracks
        y = np.zeros(n)
        for genre, w in d.parents:
            x = _AUDIO_TRACKS[genre](rng, m, sr)
            x /= np.sqrt(np.mean(x**2)) + 1e-9
            y += w * np.interp(at, np.arange(m), x)
        return y

    return track


_AUDIO_TRACKS.update({name: _derived_track(d) for name, d in _DERIVED.items()})


_VOWELS = (
    (730.0, 1090.0, 2440.0), (270.0, 2290.0, 3010.0), (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0), (570.0, 840.0, 2410.0), (440.0, 1020.0, 2240.0),
    (660.0, 1720.0, 2410.0), (490.0, 1350.0, 1690.0),
)  # formants F1-F3 (Hz) of common vowels
_FORMANT_BW = np.array([90.0, 120.0, 200.0])


def _voice_over(rng: np.random.Generator, n: int, sr: int, f0: float) -> np.ndarray:
    """A narrator: phrases of syllables (harmonics of a gliding pitch near ``f0`` shaped by a
    vowel's formants, a noisy consonant onset) separated by pauses; float64 ``(n,)``, unit
    RMS. Speech-like in a log-mel spectrogram, and the same for every genre."""
    y = np.zeros(n)
    harmonics = np.arange(1, int(3500 / f0) + 1, dtype=np.float64)  # (H,)
    table_size = 1024
    cycle = np.arange(table_size) * (2 * np.pi / table_size)  # one pitch period
    pos = int(rng.uniform(0.0, 1.5) * sr)
    while pos < n:
        for _ in range(int(rng.integers(3, 12))):
            dur = int(rng.uniform(0.1, 0.28) * sr)
            t = np.arange(dur) / sr
            pitch = f0 * rng.uniform(0.85, 1.2) * (1 + rng.uniform(-0.15, 0.1) * t / t[-1])
            formants = np.asarray(_VOWELS[int(rng.integers(len(_VOWELS)))]) * rng.uniform(
                0.9, 1.15)
            fh = harmonics * float(pitch.mean())  # (H,) harmonic frequencies
            amp = (1.0 / (1.0 + ((fh[:, None] - formants[None, :]) / _FORMANT_BW) ** 2)).sum(1)
            amp *= 1.0 / np.sqrt(harmonics)  # glottal roll-off
            # One period of the vowel (a wavetable), read at the gliding pitch.
            table = amp @ np.sin(np.outer(harmonics, cycle))  # (table_size,)
            idx = (np.cumsum(pitch) * (table_size / sr)).astype(np.int64) % table_size
            syl = table[idx] * np.abs(np.sin(np.pi * t / t[-1])) ** 0.6
            if rng.random() < 0.6:  # consonant: a short burst of high-passed noise
                m = int(rng.uniform(0.02, 0.05) * sr)
                burst = np.diff(rng.standard_normal(m + 1)) * np.exp(-np.arange(m) / (0.3 * m))
                syl[:m] += 0.5 * amp.max() * burst
            _place(y, pos, syl)
            pos += dur + int(rng.uniform(0.01, 0.06) * sr)
        pos += int(rng.uniform(0.3, 1.2) * sr)
    return y / (np.sqrt(np.mean(y**2)) + 1e-9)


def _ambience(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Room tone, wind or crowd: noise low-passed at a random cutoff, swelling slowly (a
    random envelope with a knot every 1-3 s); float64 ``(n,)``, unit RMS."""
    y = _lowpass_noise(rng, n, float(np.exp(rng.uniform(np.log(250), np.log(5000)))), sr)
    step = int(rng.uniform(1.0, 3.0) * sr)
    knots = np.arange(0, n + step, step)
    y *= np.interp(np.arange(n), knots, rng.uniform(0.2, 1.0, size=len(knots)))
    return y / (np.sqrt(np.mean(y**2)) + 1e-9)


def _tilt(y: np.ndarray, slope: float, sr: int) -> np.ndarray:
    """``y`` with its spectrum tilted by ``slope`` (log2 amplitude per octave around 1 kHz):
    a cheap speaker or microphone colouring."""
    spec = np.fft.rfft(y)
    f = np.maximum(np.fft.rfftfreq(len(y), 1.0 / sr), 50.0)
    return np.fft.irfft(spec * (f / 1000.0) ** slope, len(y))


def _render_audio(rng: np.random.Generator, plan: _Plan, fps: float, sr: int) -> np.ndarray:
    """Mix genre tracks following the shot styles; float32 mono ``(n_samples,)`` in [-1, 1].

    Each genre's gain is ``(1 - s) * trailer weight + s * [current shot has that style]``
    (``s = plan.cues.shot_audio``, 0.65 by default), smoothed over one frame, times
    ``plan.cues.genre_audio``; then the content style's music, a voice-over and ambience at the
    plan's levels, a low room-noise floor and the plan's EQ tilt. Title cards carry no genre's
    style: only the trailer weights play under them.
    """
    vocab = plan.cues.vocab
    n = round(plan.n_frames / fps * sr)
    n_frames = plan.n_frames
    style_w = np.zeros((n_frames, len(vocab)))
    for i, shot in enumerate(plan.shots):
        if shot.style is None:
            continue
        end = plan.starts[i] + shot.length
        style_w[plan.starts[i] : end, vocab.index(shot.style)] += 1.0
    style_w /= np.maximum(style_w.sum(axis=1, keepdims=True), 1.0)
    # Linear interpolation between frame centres smooths gain changes over one frame (~40 ms).
    frame_centres = (np.arange(n_frames) + 0.5) / fps
    sample_times = np.arange(n) / sr
    mix = np.zeros(n)
    # With weakened cues an off-genre track is rendered only over the span where it plays (it
    # is heard under a few shots); the default cues keep full-length tracks (unchanged output).
    spans = plan.cues != Cues()
    for gi, genre in enumerate(vocab):
        base = (1 - plan.cues.shot_audio) * plan.genre_weights.get(genre, 0.0)
        if base == 0.0 and not style_w[:, gi].any():
            continue
        gain = base + plan.cues.shot_audio * np.interp(sample_times, frame_centres,
                                                       style_w[:, gi])
        a, b = 0, n
        if spans and base == 0.0:
            playing = np.flatnonzero(gain > 0)
            a, b = int(playing[0]), int(playing[-1]) + 1
        track = _AUDIO_TRACKS[genre](rng, b - a, sr)
        track /= np.sqrt(np.mean(track**2)) + 1e-9
        mix[a:b] += plan.cues.genre_audio * gain[a:b] * track * rng.uniform(0.7, 1.3)
    if plan.content is not None:
        mix += plan.music_gain * synth_styles.music_track(plan.content, rng, n, sr)
    if plan.voice_gain > 0:
        mix += plan.voice_gain * _voice_over(rng, n, sr, plan.voice_f0)
    if plan.ambience_gain > 0:
        mix += plan.ambience_gain * _ambience(rng, n, sr)
    mix += rng.uniform(0.02, 0.1) * _lowpass_noise(rng, n, 3000.0, sr)
    if plan.eq_tilt:
        mix = _tilt(mix, plan.eq_tilt, sr)
    peak = float(np.abs(mix).max()) + 1e-9
    return (mix * (rng.uniform(0.5, 0.85) / peak)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _canonical_genres(
    genres: Sequence[str], vocab: tuple[str, ...] = GENRES
) -> tuple[str, ...]:
    unknown = [g for g in genres if g not in vocab]
    if unknown:
        raise ValueError(f"unknown genres {unknown}; vocabulary is {vocab}")
    return tuple(g for g in vocab if g in set(genres))


def _encode(
    path: Path,
    frames: Iterator[np.ndarray],
    audio: np.ndarray | None,
    width: int,
    height: int,
    fps: float,
) -> int:
    """Encode RGB frames (+ optional mono float32 audio) to an MP4 at ``path``; returns the
    number of video frames written."""
    rate = Fraction(fps).limit_denominator(1001)
    tmp = path.with_name(path.name + ".part")
    n_written = 0
    with av.open(str(tmp), "w", format="mp4") as container:
        vs = container.add_stream(
            "libx264",
            rate=rate,
            options={
                "preset": "superfast",
                "crf": "29",
                "x264-params": f"keyint={GOP_SIZE}:min-keyint={min(GOP_SIZE, 12)}",
            },
        )
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = GOP_SIZE
        vs.codec_context.thread_count = 1
        astream = None
        if audio is not None:
            astream = container.add_stream(
                "aac", rate=AUDIO_SAMPLE_RATE, layout="mono", options={"aac_coder": "fast"}
            )
            astream.bit_rate = 32_000
        apos, chunk = 0, 1024
        for img in frames:
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = n_written
            container.mux(vs.encode(vf))
            n_written += 1
            if astream is not None and audio is not None:
                t_end = n_written / float(rate) * AUDIO_SAMPLE_RATE
                while apos < len(audio) and apos < t_end:
                    af = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(audio[None, apos : apos + chunk]),
                        format="fltp",
                        layout="mono",
                    )
                    af.sample_rate = AUDIO_SAMPLE_RATE
                    af.pts = apos
                    af.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
                    container.mux(astream.encode(af))
                    apos += chunk
        container.mux(vs.encode(None))
        if astream is not None:
            container.mux(astream.encode(None))
    os.replace(tmp, path)
    return n_written


def write_trailer(
    path: str | os.PathLike[str],
    genres: Sequence[str],
    *,
    seed: int,
    n_shots: int | None = None,
    width: int = 320,
    height: int = 180,
    fps: float = 24,
    with_audio: bool = True,
    content: ContentStyle | None = None,
    cues: Cues | None = None,
    lean: tuple[Sequence[float], float] | None = None,
) -> SynthTrailer:
    """Generate one synthetic trailer MP4 (H.264 yuv420p + mono AAC 16 kHz) at ``path``.

    Args:
        path: Output ``.mp4`` path (parent directories are created).
        genres: Genres of the vocabulary (``cues.vocab``, default :data:`GENRES`) whose cues
            the trailer carries (may be empty: then every shot takes a random genre's style).
        seed: Seed; the same arguments give the same frames, audio and truth.
        n_shots: Number of shots (default: drawn in 12..24).
        width, height: Frame size in pixels (even numbers).
        fps: Frame rate.
        with_audio: Whether to add the audio stream.
        content: A sub-genre's content style (:mod:`mmx.synth_styles`): its grading and music
            over the whole trailer, its setting and recurring object in a
            ``cues.content_share`` of the shots. None: genre cues only.
        cues: How clearly the trailer shows its genres and content (:class:`Cues`); None:
            the defaults, the demo archive's.
        lean: ``(weights, pace)``: a sub-genre's usual mix of ``genres`` (in canonical order,
            summing to 1) and shot-length multiplier; the trailer's mix is drawn around it.
            None: the mix is drawn freely (Dirichlet(3)) and the pace is 1.

    Returns:
        The trailer's :class:`SynthTrailer` ground truth (``genres`` canonicalised).
    """
    if width % 2 or height % 2:
        raise ValueError("width and height must be even for yuv420p")
    t0 = time.perf_counter()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cues = cues if cues is not None else Cues()
    gen = _canonical_genres(genres, cues.vocab)
    video_ss, audio_ss = np.random.SeedSequence(int(seed)).spawn(2)
    cue_rng = np.random.default_rng([int(seed), 0xC0])  # its own stream: see _plan_trailer
    plan = _plan_trailer(np.random.default_rng(video_ss), gen, n_shots, width, height, fps,
                         content, cue_rng, cues, lean)
    audio = (
        _render_audio(np.random.default_rng(audio_ss), plan, fps, AUDIO_SAMPLE_RATE)
        if with_audio
        else None
    )
    n_written = _encode(out, _iter_frames(plan), audio, width, height, fps)
    if n_written != plan.n_frames:  # pragma: no cover - internal consistency
        raise RuntimeError(f"wrote {n_written} frames, planned {plan.n_frames}")
    logger.debug(
        "wrote %s: %d frames, %d shots, genres=%s in %.2fs",
        out.name,
        plan.n_frames,
        len(plan.shots),
        "|".join(gen),
        time.perf_counter() - t0,
    )
    return SynthTrailer(
        trailer_id=out.stem,
        path=str(out.resolve()),
        genres=gen,
        fps=float(fps),
        n_frames=plan.n_frames,
        cut_frames=plan.cut_frames,
        dissolves=plan.dissolves,
        has_audio=with_audio,
    )


def write_audio_only(path: str | os.PathLike[str], seconds: float = 1.0) -> None:
    """Write a silent mono AAC file with no video stream (an input that must fail as such)."""
    n = int(seconds * AUDIO_SAMPLE_RATE)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=AUDIO_SAMPLE_RATE)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = AUDIO_SAMPLE_RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# --------------------------------------------------------------------------------------------
# Archive
# --------------------------------------------------------------------------------------------


def _child_seed(seed: int, kind: int, index: int) -> int:
    """Independent 63-bit seed for item ``index`` of kind ``kind`` of the archive ``seed``."""
    state = np.random.SeedSequence([int(seed), kind, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _sample_genres(rng: np.random.Generator) -> tuple[str, ...]:
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    idx = rng.choice(len(GENRES), size=k, replace=False, p=_GENRE_PRIOR / _GENRE_PRIOR.sum())
    return tuple(GENRES[i] for i in sorted(idx))


def _trailer_record(t: SynthTrailer, out_dir: Path) -> dict[str, object]:
    return {
        "path": os.path.relpath(t.path, out_dir),
        "genres": list(t.genres),
        "cut_frames": list(t.cut_frames),
        "dissolves": [list(d) for d in t.dissolves],
        "n_frames": t.n_frames,
        "fps": t.fps,
        "has_audio": t.has_audio,
    }


def _from_record(trailer_id: str, rec: dict, out_dir: Path) -> SynthTrailer:
    return SynthTrailer(
        trailer_id=trailer_id,
        path=str((out_dir / rec["path"]).resolve()),
        genres=tuple(rec["genres"]),
        fps=float(rec["fps"]),
        n_frames=int(rec["n_frames"]),
        cut_frames=tuple(int(c) for c in rec["cut_frames"]),
        dissolves=tuple((int(a), int(b)) for a, b in rec["dissolves"]),
        has_audio=bool(rec["has_audio"]),
    )


def load_archive(out_dir: str | os.PathLike[str]) -> list[SynthTrailer]:
    """Parse ``out_dir/truth.json``: the normal trailers then the extras that are real videos
    (the corrupt file is not included). Paths are resolved against ``out_dir``."""
    root = Path(out_dir)
    truth = json.loads((root / "truth.json").read_text())
    items = [_from_record(tid, rec, root) for tid, rec in truth["trailers"].items()]
    for tid, rec in truth.get("extras", {}).items():
        if rec.get("n_frames") is not None:
            items.append(_from_record(tid, rec, root))
    return items


def _archive_is_current(root: Path, params: dict[str, object]) -> bool:
    truth_path = root / "truth.json"
    if not truth_path.exists():
        return False
    try:
        truth = json.loads(truth_path.read_text())
    except (OSError, ValueError):
        return False
    if truth.get("params") != params:
        return False
    recs = list(truth.get("trailers", {}).values()) + list(truth.get("extras", {}).values())
    return all((root / rec["path"]).exists() for rec in recs) and (root / "labels.csv").exists()


def generate_archive(
    out_dir: str | os.PathLike[str],
    n: int = 48,
    *,
    seed: int = 0,
    width: int = 320,
    height: int = 180,
    fps: float = 24,
    extras: bool = True,
    metadata: bool = False,
) -> list[SynthTrailer]:
    """Generate (or reuse) a synthetic trailer archive in ``out_dir``.

    Writes ``videos/trailer_0000.mp4`` ... , ``labels.csv`` (``trailer_id,genres``, genres
    pipe-separated, empty for unlabelled) and ``truth.json``. With ``extras`` it adds
    ``teaser_0000`` (5 shots; expected ``excluded``), ``noaudio_0000`` (no audio stream;
    ``ok``), ``unlabelled_0000`` (empty genres in labels.csv; ``ok``) and ``broken_0000``
    (corrupt bytes; ``failed``), listed under ``truth["extras"]`` with ``expected_status``.

    Trailer ``i`` depends only on ``(seed, i)``, so a smaller ``n`` gives a prefix of a larger
    archive. If ``truth.json`` exists with the same parameters and all files are present, the
    archive is parsed and returned without regenerating anything. With ``metadata``, also the
    metadata sidecar (:func:`write_metadata`; everything else is the same without it).

    Returns:
        The normal trailers followed by the extras that are real videos (teaser, no-audio,
        unlabelled -- whose ``genres`` is empty, as in labels.csv).
    """
    root = Path(out_dir)
    params: dict[str, object] = {
        "n": int(n),
        "seed": int(seed),
        "width": int(width),
        "height": int(height),
        "fps": fps,
        "extras": bool(extras),
        "version": SYNTH_VERSION,
        "audio_sample_rate": AUDIO_SAMPLE_RATE,
    }
    if _archive_is_current(root, params):
        logger.info("synthetic archive in %s is up to date; reusing it", root)
        if metadata:
            write_metadata(root)
        return load_archive(root)

    t0 = time.perf_counter()
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    stale = root / "truth.json"
    if stale.exists():
        stale.unlink()
    logger.info("generating %d synthetic trailers in %s (seed=%d)", n, root, seed)
    common = {"width": width, "height": height, "fps": fps}
    trailers: list[SynthTrailer] = []
    for i in range(n):
        genres = _sample_genres(np.random.default_rng(_child_seed(seed, 0, i)))
        t = write_trailer(
            videos / f"trailer_{i:04d}.mp4", genres, seed=_child_seed(seed, 1, i), **common
        )
        trailers.append(t)
        if (i + 1) % 8 == 0 or i + 1 == n:
            logger.info("  %d/%d trailers written", i + 1, n)

    labels: list[tuple[str, tuple[str, ...]]] = [(t.trailer_id, t.genres) for t in trailers]
    truth_extras: dict[str, dict[str, object]] = {}
    extra_trailers: list[SynthTrailer] = []
    if extras:
        xrng = np.random.default_rng(_child_seed(seed, 2, 0))
        specs = [
            ("teaser_0000", {"n_shots": 5}, "excluded", "only 5 shots (fewer than 10)"),
            ("noaudio_0000", {"with_audio": False}, "ok", "no audio stream"),
            ("unlabelled_0000", {}, "ok", "no genres in labels.csv"),
        ]
        for j, (tid, kwargs, status, reason) in enumerate(specs):
            genres = _sample_genres(xrng)
            t = write_trailer(
                videos / f"{tid}.mp4", genres, seed=_child_seed(seed, 3, j), **kwargs, **common
            )
            rec = _trailer_record(t, root)
            rec.update(expected_status=status, reason=reason)
            if tid.startswith("unlabelled"):
                rec["true_genres"] = list(t.genres)
                rec["genres"] = []
                t = dataclasses.replace(t, genres=())
            truth_extras[tid] = rec
            extra_trailers.append(t)
            labels.append((tid, t.genres))
        broken = videos / "broken_0000.mp4"
        header = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
        body = xrng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
        broken.write_bytes(header + b"\x00\x00\x10\x00moov" + body)
        bgenres = _sample_genres(xrng)
        truth_extras["broken_0000"] = {
            "path": os.path.relpath(broken, root),
            "genres": list(bgenres),
            "expected_status": "failed",
            "reason": "corrupt file (MP4 header followed by random bytes)",
            "n_frames": None,
            "has_audio": None,
        }
        labels.append(("broken_0000", bgenres))

    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trailer_id", "genres"])
        for tid, genres in labels:
            writer.writerow([tid, "|".join(genres)])

    truth = {
        "params": params,
        "genres": list(GENRES),
        "trailers": {t.trailer_id: _trailer_record(t, root) for t in trailers},
        "extras": truth_extras,
    }
    tmp = root / "truth.json.part"
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, root / "truth.json")
    logger.info(
        "synthetic archive ready: %d trailers + %d extras in %.1fs",
        len(trailers),
        len(truth_extras),
        time.perf_counter() - t0,
    )
    if metadata:
        write_metadata(root)
    return trailers + extra_trailers


# --------------------------------------------------------------------------------------------
# Archive with hidden sub-genres (the quality benchmark's)
# --------------------------------------------------------------------------------------------

SUBGENRE_VERSION = 2
"""Bumped whenever :func:`generate_subgenre_archive`'s output changes (in its parameters)."""

_CARDINALITY_20 = (0.3, 0.4, 0.2, 0.1)  # P(1, 2, 3, 4 genres) of a trailer


def _write_trailer_task(args: tuple[str, tuple[str, ...], dict[str, object]]) -> SynthTrailer:
    path, genres, kwargs = args
    return write_trailer(path, genres, **kwargs)  # type: ignore[arg-type]


def _vocabulary(n_genres: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The first ``n_genres`` of :data:`GENRES_20` (6: the hand-made ones) and their prior."""
    if not len(GENRES) <= n_genres <= len(GENRES_20):
        raise ValueError(f"n_genres must be in {len(GENRES)}..{len(GENRES_20)}")
    vocab = GENRES_20[:n_genres]
    return vocab, np.array([_GENRE_PRIOR_20[g] for g in vocab])


def _sample_combos(
    rng: np.random.Generator, n_combos: int, vocab: tuple[str, ...], prior: np.ndarray
) -> list[tuple[str, ...]]:
    """``n_combos`` distinct genre combinations (1-4 genres) drawn with the genre prior."""
    combos: list[tuple[str, ...]] = []
    for _ in range(1000 * n_combos):
        k = int(rng.choice(len(_CARDINALITY_20), p=_CARDINALITY_20)) + 1
        idx = rng.choice(len(vocab), size=min(k, len(vocab)), replace=False,
                         p=prior / prior.sum())
        c = tuple(vocab[i] for i in sorted(idx))
        if c not in combos:
            combos.append(c)
        if len(combos) == n_combos:
            return combos
    raise ValueError(f"could not draw {n_combos} distinct genre combinations")


def _subgenre_sizes(
    rng: np.random.Generator, n: int, n_sub: int, min_size: int, shape: float
) -> np.ndarray:
    """Trailers per sub-genre, summing to ``n``: ``min_size`` each (when ``n`` allows), the
    rest multinomial with Gamma(``shape``) weights: a few large sub-genres, many small ones."""
    weights = rng.gamma(shape, size=n_sub)
    weights /= weights.sum()
    base = min_size if n >= min_size * n_sub else 0
    return base + rng.multinomial(n - base * n_sub, weights)


def _observed_genres(
    rng: np.random.Generator, genres: tuple[str, ...], label_noise: float,
    vocab: tuple[str, ...],
) -> tuple[str, ...]:
    """The labels an archivist wrote. With probability ``label_noise`` one mistake: a genre
    dropped (when there are several), one swapped for a related genre, or a related (rarely
    any) genre added, as tagging mistakes go."""
    if rng.random() >= label_noise:
        return genres

    def confusable(g: str) -> list[str]:
        rel = [r for r in _related(g) if r in vocab and r not in genres]
        if rel and rng.random() < 0.8:
            return rel
        return [r for r in vocab if r not in genres]

    kind = rng.random()
    if len(genres) > 1 and kind < 0.4:
        drop = genres[int(rng.integers(len(genres)))]
        return tuple(g for g in genres if g != drop)
    pick = genres[int(rng.integers(len(genres)))]
    options = confusable(pick)
    if not options:
        return genres
    new = options[int(rng.integers(len(options)))]
    kept = tuple(g for g in genres if g != pick) if kind < 0.7 else genres
    return _canonical_genres((*kept, new), vocab)


def generate_subgenre_archive(
    out_dir: str | os.PathLike[str],
    n: int = 240,
    *,
    seed: int = 0,
    n_genres: int = 20,
    n_combos: int = 20,
    styles_per_combo: int = 3,
    n_styles: int = 20,
    min_subgenre: int = 2,
    size_shape: float = 0.7,
    lean: float = 2.0,
    style_variation: float = 0.5,
    unlabelled_share: float = 0.1,
    label_noise: float = 0.25,
    off_genre_share: float = 0.45,
    neutral_share: float = 0.25,
    content_share: float = 0.6,
    genre_audio: float = 1.0,
    shot_audio: float = 0.25,
    voice: float = 0.5,
    ambience: float = 0.3,
    nuisance: float = 0.8,
    extras: bool = True,
    width: int = 320,
    height: int = 180,
    fps: float = 24,
    workers: int = 1,
    metadata: bool = False,
) -> list[SynthTrailer]:
    """Generate (or reuse) an archive whose trailers belong to hidden fine-grained sub-genres.

    Genres: the first ``n_genres`` of :data:`GENRES_20` (the six hand-made ones, then 14
    derived from them and confusable with their parents: Thriller looks and sounds like Horror
    and Action), 1-4 per trailer, with a skewed prior (Drama common, Western rare). A
    sub-genre is a genre combination (``n_combos`` drawn with the prior) × one of
    ``styles_per_combo`` content styles (:mod:`mmx.synth_styles`) from a pool of ``n_styles``
    shared by all combinations: neither the labels nor the style alone tell a trailer's
    sub-genre, though each sub-genre takes its own variant of its style (``style_variation``:
    hues, grading, the music's key and tempo). A sub-genre also leans: its own mix of its
    genres (Dirichlet(``lean``); smaller leans harder on one genre, 0: none) and pace, which
    its trailers vary around. Sizes vary: ``min_subgenre`` trailers each, the rest by
    Gamma(``size_shape``) weights.

    The cues are weak on purpose (:class:`Cues`): ``off_genre_share`` of the shots take a random
    genre's look, ``neutral_share`` are title cards or random looks, ``content_share`` of the
    others show the style's setting and recurring object; the genre tracks play at
    ``genre_audio`` under the style's music, a voice-over (``voice``) and ambience
    (``ambience``); each trailer has its own colour cast, brightness, contrast, letterbox,
    softness and EQ (``nuisance``). Labels are noisy (``label_noise``: a genre dropped,
    swapped for a related one or added) and an ``unlabelled_share`` of trailers have none.

    Writes ``videos/*.mp4``, ``labels.csv`` (the archive's noisy labels) and ``truth.json``
    (per trailer: ``subgenre``, ``true_genres``, ``style``; the sub-genres with their genres,
    style, variant, lean and size; the styles), which the job never reads. With ``extras``:
    ``teaser_0000`` (5 shots: excluded) and ``broken_0000`` (corrupt: failed). ``workers``
    processes encode in parallel; the output depends only on the other arguments. With
    ``metadata``, also the metadata sidecar (:func:`write_metadata`; the videos, labels and
    truth are the same with or without it, and ``metadata=False`` leaves a sidecar written
    before in place).
    """
    root = Path(out_dir)
    params: dict[str, object] = {
        "kind": "subgenres", "n": int(n), "seed": int(seed), "n_genres": int(n_genres),
        "n_combos": int(n_combos), "styles_per_combo": int(styles_per_combo),
        "n_styles": int(n_styles), "min_subgenre": int(min_subgenre),
        "size_shape": float(size_shape), "lean": float(lean),
        "style_variation": float(style_variation),
        "unlabelled_share": float(unlabelled_share),
        "label_noise": float(label_noise), "off_genre_share": float(off_genre_share),
        "neutral_share": float(neutral_share), "content_share": float(content_share),
        "genre_audio": float(genre_audio), "shot_audio": float(shot_audio),
        "voice": float(voice), "ambience": float(ambience),
        "nuisance": float(nuisance), "extras": bool(extras), "width": int(width),
        "height": int(height), "fps": fps, "version": SYNTH_VERSION,
        "subgenre_version": SUBGENRE_VERSION, "audio_sample_rate": AUDIO_SAMPLE_RATE,
    }
    if _archive_is_current(root, params):
        logger.info("synthetic archive in %s is up to date; reusing it", root)
        if metadata:
            write_metadata(root)
        return load_archive(root)
    plan = plan_subgenre_archive(
        n, seed=seed, n_genres=n_genres, n_combos=n_combos, styles_per_combo=styles_per_combo,
        n_styles=n_styles, min_subgenre=min_subgenre, size_shape=size_shape, lean=lean,
        style_variation=style_variation, unlabelled_share=unlabelled_share,
        label_noise=label_noise)
    vocab, styles, combos, subgenres = plan.vocab, plan.styles, plan.combos, plan.subgenres
    sizes, leans, contents, truth_rows = plan.sizes, plan.leans, plan.contents, plan.rows
    t0 = time.perf_counter()
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    if (root / "truth.json").exists():
        (root / "truth.json").unlink()
    logger.info("generating %d synthetic trailers of %d hidden sub-genres in %s (seed=%d)",
                n, len(subgenres), root, seed)

    cues = Cues(vocab=vocab, off_genre_share=off_genre_share, neutral_share=neutral_share,
                content_share=content_share, genre_audio=genre_audio, shot_audio=shot_audio,
                voice=voice, ambience=ambience, nuisance=nuisance)
    common = {"width": width, "height": height, "fps": fps, "cues": cues}
    tasks = []
    for i, (tid, row) in enumerate(truth_rows.items()):
        sub = int(row["subgenre"])  # type: ignore[call-overload]
        tasks.append((str(videos / f"{tid}.mp4"), subgenres[sub][0],
                      {**common, "seed": _child_seed(seed, 5, i), "content": contents[sub],
                       "lean": leans[sub]}))
    trailers = _run_tasks(tasks, workers, n)
    labels: list[tuple[str, tuple[str, ...]]] = []
    records: dict[str, dict[str, object]] = {}
    for t in trailers:
        row = truth_rows[t.trailer_id]
        observed = tuple(row["labels"])  # type: ignore[arg-type]
        labels.append((t.trailer_id, observed))
        rec = _trailer_record(dataclasses.replace(t, genres=observed), root)
        rec.update(subgenre=row["subgenre"], true_genres=row["true_genres"], style=row["style"])
        records[t.trailer_id] = rec
    trailers = [dataclasses.replace(t, genres=tuple(truth_rows[t.trailer_id]["labels"]))
                for t in trailers]

    truth_extras: dict[str, dict[str, object]] = {}
    if extras:
        xrng = np.random.default_rng(_child_seed(seed, 6, 0))
        genres = combos[int(xrng.integers(len(combos)))]
        t = write_trailer(videos / "teaser_0000.mp4", genres, seed=_child_seed(seed, 7, 0),
                          n_shots=5, width=width, height=height, fps=fps,
                          cues=Cues(vocab=vocab))
        rec = _trailer_record(t, root)
        rec.update(expected_status="excluded", reason="only 5 shots (fewer than 10)")
        truth_extras["teaser_0000"] = rec
        labels.append(("teaser_0000", genres))
        broken = videos / "broken_0000.mp4"
        header = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
        broken.write_bytes(header + xrng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
        truth_extras["broken_0000"] = {
            "path": os.path.relpath(broken, root), "genres": [], "n_frames": None,
            "has_audio": None, "expected_status": "failed", "reason": "corrupt file",
        }
        labels.append(("broken_0000", ()))

    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trailer_id", "genres"])
        for tid, genres in labels:
            writer.writerow([tid, "|".join(genres)])
    truth = {
        "params": params,
        "genres": list(vocab),
        "styles": [s.to_dict() for s in styles],
        "subgenres": [{"subgenre": i, "genres": list(c), "style": s, "size": int(sizes[i]),
                       "content": contents[i].to_dict(), "lean": None if leans[i] is None else
                       {"weights": [round(w, 3) for w in leans[i][0]],
                        "pace": round(leans[i][1], 3)}}
                      for i, (c, s) in enumerate(subgenres)],
        "trailers": records,
        "extras": truth_extras,
    }
    tmp = root / "truth.json.part"
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, root / "truth.json")
    logger.info("synthetic archive ready: %d trailers + %d extras in %.1fs", n,
                len(truth_extras), time.perf_counter() - t0)
    if metadata:
        write_metadata(root)
    return trailers


@dataclass(frozen=True)
class SubgenrePlan:
    """What :func:`generate_subgenre_archive` draws before it renders a frame: the genre
    vocabulary, the content styles, the sub-genres (genre combination, style index) with their
    sizes, leans and style variants, and per trailer (``trailer_0000`` …, in order) its
    ``subgenre``, ``true_genres``, ``style`` and observed ``labels``."""

    vocab: tuple[str, ...]
    styles: list[ContentStyle]
    combos: list[tuple[str, ...]]
    subgenres: list[tuple[tuple[str, ...], int]]
    sizes: np.ndarray  # (n_subgenres,) trailers per sub-genre
    leans: list[tuple[tuple[float, ...], float] | None]
    contents: list[ContentStyle]  # each sub-genre's variant of its style
    rows: dict[str, dict[str, object]]


def plan_subgenre_archive(
    n: int = 240,
    *,
    seed: int = 0,
    n_genres: int = 20,
    n_combos: int = 20,
    styles_per_combo: int = 3,
    n_styles: int = 20,
    min_subgenre: int = 2,
    size_shape: float = 0.7,
    lean: float = 2.0,
    style_variation: float = 0.5,
    unlabelled_share: float = 0.1,
    label_noise: float = 0.25,
) -> SubgenrePlan:
    """The draws of :func:`generate_subgenre_archive` (same arguments, same defaults) without
    rendering video: its truth, in milliseconds (metadata and tests need no frames)."""
    if styles_per_combo > n_styles:
        raise ValueError("styles_per_combo must be <= n_styles")
    vocab, prior = _vocabulary(n_genres)
    rng = np.random.default_rng([int(seed), 0x5B])
    styles = synth_styles.make_styles(seed, n_styles)
    combos = _sample_combos(rng, n_combos, vocab, prior)
    subgenres = [
        (combo, int(s))
        for combo in combos
        for s in rng.choice(n_styles, size=styles_per_combo, replace=False)
    ]
    sizes = _subgenre_sizes(rng, n, len(subgenres), min_subgenre, size_shape)
    assignment = rng.permutation(np.repeat(np.arange(len(subgenres)), sizes))  # (n,)
    leans = [  # each sub-genre's usual genre mix and pace (shot-length multiplier)
        (tuple(float(w) for w in rng.dirichlet(np.full(len(combo), lean))),
         float(np.exp(rng.normal(0, 0.2))))
        if lean > 0 else None
        for combo, _ in subgenres
    ]
    contents = [synth_styles.vary_style(styles[s], rng, style_variation) for _, s in subgenres]
    rows: dict[str, dict[str, object]] = {}
    for i in range(n):
        trng = np.random.default_rng(_child_seed(seed, 4, i))
        sub = int(assignment[i])
        combo, style = subgenres[sub]
        observed = () if trng.random() < unlabelled_share else _observed_genres(
            trng, combo, label_noise, vocab)
        rows[f"trailer_{i:04d}"] = {"subgenre": sub, "true_genres": list(combo),
                                    "style": style, "labels": list(observed)}
    return SubgenrePlan(vocab=vocab, styles=styles, combos=combos, subgenres=subgenres,
                        sizes=sizes, leans=leans, contents=contents, rows=rows)


_PLAN_PARAMS = ("n", "seed", "n_genres", "n_combos", "styles_per_combo", "n_styles",
                "min_subgenre", "size_shape", "lean", "style_variation", "unlabelled_share",
                "label_noise")


def metadata_specs(truth: dict[str, Any]) -> list[synth_metadata.TitleSpec]:
    """What each trailer of a synthetic archive's ``truth.json`` draws its metadata from: its
    true genres and, in a sub-genre archive, its sub-genre's content style (re-drawn from the
    recorded parameters: the truth file keeps only a summary of it)."""
    params = truth["params"]
    contents: list[ContentStyle] = []
    if params.get("kind") == "subgenres":
        contents = plan_subgenre_archive(**{k: params[k] for k in _PLAN_PARAMS}).contents
    specs = []
    for tid, rec in sorted(truth["trailers"].items()):
        genres = tuple(rec.get("true_genres") or rec["genres"])
        content = contents[rec["subgenre"]] if contents else None
        specs.append(synth_metadata.TitleSpec(tid, genres, content))
    return specs


def genre_looks(vocab: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """genre → (hue, saturation, value): the main colour of its trailers' shots (posters)."""
    looks = {}
    for g in vocab:
        p = _PROFILES[g]
        looks[g] = (float(p.hues[0]), float(np.mean(p.sat)), float(np.mean(p.val)))
    return looks


def write_metadata(
    out_dir: str | os.PathLike[str],
    *,
    seed: int | None = None,
    cues: synth_metadata.MetadataCues | None = None,
) -> int:
    """Write the metadata sidecar of an existing synthetic archive (from its ``truth.json``,
    no video read): ``metadata.csv`` and ``posters/<trailer_id>.jpg`` (:mod:`mmx.synth_metadata`:
    plots, posters, years, runtimes correlated with the true genres and hidden sub-genre, noisy,
    some fields and titles missing). Deterministic per ``seed`` (default: the archive's); files
    whose bytes would not change are left alone. Returns the number of titles in the sidecar.
    The truth files are not touched."""
    root = Path(out_dir)
    truth = json.loads((root / "truth.json").read_text())
    seed = int(truth["params"]["seed"] if seed is None else seed)
    cues = cues or synth_metadata.MetadataCues()
    vocab = tuple(truth["genres"])
    looks = genre_looks(vocab)
    rows = []
    for spec in metadata_specs(truth):
        row, image = synth_metadata.draw_title(spec, vocab, seed, cues, looks)
        if row is None:
            continue
        rows.append(row)
        if image is not None:
            _write_if_changed(root / str(row["poster"]), synth_metadata.jpeg(image))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(synth_metadata.COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_if_changed(root / "metadata.csv", buf.getvalue().encode("utf-8"))
    logger.info("synthetic metadata: %d of %d titles in %s", len(rows),
                len(truth["trailers"]), root / "metadata.csv")
    return len(rows)


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _run_tasks(
    tasks: list[tuple[str, tuple[str, ...], dict[str, object]]], workers: int, n: int
) -> list[SynthTrailer]:
    """Write every trailer of ``tasks``, in ``workers`` processes; results in task order."""
    done: list[SynthTrailer] = []
    if workers <= 1:
        for t in tasks:
            done.append(_write_trailer_task(t))
            if len(done) % 20 == 0 or len(done) == n:
                logger.info("  %d/%d trailers written", len(done), n)
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for t in pool.map(_write_trailer_task, tasks, chunksize=4):
            done.append(t)
            if len(done) % 20 == 0 or len(done) == n:
                logger.info("  %d/%d trailers written", len(done), n)
    return done
