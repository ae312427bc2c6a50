"""Content styles of synthetic sub-genres: settings, recurring objects, grading and music.

A *sub-genre* is what a film scholar means by one: the same genre labels, different content
(space opera vs cyberpunk city under one "Action|Sci-Fi"). :mod:`mmx.synth` gives every
sub-genre of its benchmark archive a genre combination and one :class:`ContentStyle` from a
pool; this module owns what a style is and how it shows in frames and sound, the way real ones
do:

* a **setting**: a structural background (skyline, horizon, neon grid, starfield, waves,
  forest, tiled floor, arches) laid over the genre's palette in the shots that show the style;
* a **recurring object**: a motif shape (star, triangle, cross, …) in the style's colour;
* **colour grading**: a per-channel gain/lift and saturation applied to every frame;
* **music**: an ostinato with the style's root, interval pattern, tempo and timbre.

Styles are drawn from a seed (:func:`make_styles`); everything here is pure numpy/OpenCV and
deterministic for a given generator state. Nothing in ``mmx`` outside the synthetic archive
reads a style: the job never sees the truth.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

SETTINGS = ("skyline", "horizon", "grid", "starfield", "waves", "forest", "tiles", "arches")
MOTIFS = ("star", "triangle", "cross", "diamond", "hexagon", "crescent", "arrow", "bars")
TIMBRES = ("square", "pluck", "bell", "organ", "pulse")


@dataclass(frozen=True)
class ContentStyle:
    """What a sub-genre looks and sounds like beyond its genres (see the module docstring).

    Hues are in [0, 1); ``grade_gain``/``grade_lift`` are per RGB channel; ``music_pattern``
    holds frequency ratios to ``music_root`` (Hz), played at ``music_tempo`` notes per second.
    """

    index: int
    setting: str
    setting_hue: float
    setting_dark: bool
    motif: str
    motif_hue: float
    motif_scale: float
    grade_gain: tuple[float, float, float]
    grade_lift: tuple[float, float, float]
    grade_saturation: float
    music_root: float
    music_pattern: tuple[float, ...]
    music_tempo: float
    music_timbre: str

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index, "setting": self.setting, "motif": self.motif,
            "setting_hue": round(self.setting_hue, 3), "motif_hue": round(self.motif_hue, 3),
            "grade_gain": [round(g, 3) for g in self.grade_gain],
            "music_timbre": self.music_timbre, "music_root": round(self.music_root, 1),
            "music_tempo": round(self.music_tempo, 2),
        }


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def make_styles(seed: int, n: int) -> list[ContentStyle]:
    """``n`` distinct content styles drawn from ``seed``.

    Settings, motifs and timbres are dealt round-robin from shuffled lists (so styles differ in
    every channel when ``n`` is small, and combinations repeat only past their counts); hues,
    grading and music parameters are drawn per style.
    """
    rng = np.random.default_rng([int(seed), 0x57])
    settings = [SETTINGS[i] for i in rng.permutation(len(SETTINGS))]
    motifs = [MOTIFS[i] for i in rng.permutation(len(MOTIFS))]
    timbres = [TIMBRES[i] for i in rng.permutation(len(TIMBRES))]
    grade_hues = (rng.permutation(n) + rng.uniform(0, 1)) / max(n, 1)  # spread around the wheel
    styles = []
    for i in range(n):
        gh = float(grade_hues[i])
        tint = _rgb(gh, 1.0, 1.0) / 255.0  # (3,) in [0, 1]
        strength = float(rng.uniform(0.25, 0.45))
        gain = 1.0 + strength * (tint - tint.mean())  # (3,) per-channel gain around 1
        lift = 0.06 * (tint - tint.mean()) * float(rng.choice([-1.0, 1.0]))
        n_notes = int(rng.integers(3, 6))
        pattern = tuple(float(x) for x in rng.choice(
            [1.0, 9 / 8, 6 / 5, 5 / 4, 4 / 3, 3 / 2, 8 / 5, 5 / 3, 2.0], size=n_notes))
        styles.append(ContentStyle(
            index=i,
            setting=settings[i % len(settings)],
            setting_hue=float(rng.uniform(0, 1)),
            setting_dark=bool(rng.random() < 0.5),
            motif=motifs[(i + i // len(motifs)) % len(motifs)],
            motif_hue=float(rng.uniform(0, 1)),
            motif_scale=float(rng.uniform(0.8, 1.3)),
            grade_gain=(float(gain[0]), float(gain[1]), float(gain[2])),
            grade_lift=(float(lift[0]), float(lift[1]), float(lift[2])),
            grade_saturation=float(rng.choice([0.55, 0.8, 1.2, 1.4])),
            music_root=float(np.exp(rng.uniform(np.log(110), np.log(660)))),
            music_pattern=pattern,
            music_tempo=float(rng.uniform(1.5, 5.0)),
            music_timbre=timbres[(i + i // len(timbres)) % len(timbres)],
        ))
    return styles


def vary_style(style: ContentStyle, rng: np.random.Generator, amount: float) -> ContentStyle:
    """A variant of ``style`` for one sub-genre: the same setting, motif and timbre (its
    ``index``), with hues, motif size, grading, and the music's key and tempo moved by up to
    about ``amount`` (0: identical; 1: a clearly different take on the style). The same style
    under two genre combinations then differs in its details, as real ones do."""
    if amount <= 0:
        return style
    tint = (np.asarray(style.grade_gain) - 1.0) * float(np.exp(rng.normal(0, 0.3 * amount)))
    gain = 1.0 + np.roll(tint, int(rng.random() < 0.3 * amount))  # (3,) sometimes re-tinted
    return replace(
        style,
        setting_hue=(style.setting_hue + float(rng.normal(0, 0.08 * amount))) % 1.0,
        motif_hue=(style.motif_hue + float(rng.normal(0, 0.12 * amount))) % 1.0,
        motif_scale=style.motif_scale * float(np.exp(rng.normal(0, 0.15 * amount))),
        grade_gain=(float(gain[0]), float(gain[1]), float(gain[2])),
        music_root=style.music_root * float(np.exp(rng.normal(0, 0.2 * amount))),
        music_tempo=style.music_tempo * float(np.exp(rng.normal(0, 0.15 * amount))),
    )


# ------------------------------------------------------------------------------ settings
def setting_layer(
    style: ContentStyle, rng: np.random.Generator, height: int, width: int, scale: float,
    base: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The style's setting over a ``(height, width)`` canvas: colour (H, W, 3) float32 in
    [0, 255] and alpha (H, W) float32 in [0, 1]. ``base`` (3,) is the shot's main colour,
    whose saturation and value the setting borrows (the genre's palette stays visible)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    _, s_, v_ = colorsys.rgb_to_hsv(*(np.clip(base, 0, 255) / 255.0))
    value = 0.18 if style.setting_dark else min(1.0, 0.45 + v_)
    colour = _rgb(style.setting_hue + rng.normal(0, 0.02), max(0.35, s_), value)
    alpha = np.zeros((height, width), np.float32)
    kind = style.setting
    if kind == "skyline":
        x = 0.0
        ground = height * rng.uniform(0.55, 0.75)
        while x < width:
            w = rng.uniform(12, 34) * scale
            top = ground - rng.uniform(0.2, 0.55) * height
            alpha[int(top):, int(x):int(x + w)] = 1.0
            x += w + rng.uniform(0, 6) * scale
        alpha[int(ground):] = 1.0
    elif kind == "horizon":
        y0 = height * rng.uniform(0.45, 0.65)
        ground = yy > y0
        stripes = 0.5 + 0.5 * np.sin((xx - width / 2) / np.maximum(yy - y0, 1.0) * 12.0)
        alpha = np.where(ground, 0.65 + 0.35 * stripes, 0.0).astype(np.float32)
    elif kind == "grid":
        y0 = height * rng.uniform(0.35, 0.5)
        depth = np.maximum(yy - y0, 1.0)
        u = (xx - width / 2) / depth * 20.0
        v = 400.0 / depth
        lines = np.maximum(np.abs(np.sin(np.pi * u / 8.0)) ** 20, np.abs(np.sin(v)) ** 20)
        alpha = np.where(yy > y0, np.clip(lines * 1.5, 0, 1), 0.0).astype(np.float32)
    elif kind == "starfield":
        n_stars = int(rng.integers(60, 120) * (width * height) / (320 * 180))
        for _ in range(n_stars):
            cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
            cv2.circle(alpha, (cx, cy), max(1, int(rng.uniform(1, 2.5) * scale)), 1.0, -1,
                       cv2.LINE_AA)
    elif kind == "waves":
        y0 = height * rng.uniform(0.5, 0.7)
        k = rng.uniform(0.05, 0.1) / scale
        crest = y0 + 6 * scale * np.sin(xx * k + rng.uniform(0, 6))
        bands = 0.5 + 0.5 * np.sin((yy - crest) * 0.4 / scale)
        alpha = np.where(yy > crest, 0.6 + 0.4 * bands, 0.0).astype(np.float32)
    elif kind == "forest":
        x = rng.uniform(0, 10) * scale
        while x < width:
            w = rng.uniform(4, 10) * scale
            alpha[:, int(x):int(x + w)] = 1.0
            x += w + rng.uniform(10, 30) * scale
        alpha[int(height * 0.85):] = 1.0
    elif kind == "tiles":
        y0 = height * rng.uniform(0.5, 0.65)
        depth = np.maximum(yy - y0, 1.0)
        u = np.floor((xx - width / 2) / depth * 6.0)
        v = np.floor(240.0 / depth)
        checker = ((u + v) % 2 == 0).astype(np.float32)
        alpha = np.where(yy > y0, 0.3 + 0.7 * checker, 0.0).astype(np.float32)
    elif kind == "arches":
        period = rng.uniform(40, 70) * scale
        r = 0.32 * period
        top = height * rng.uniform(0.25, 0.4)
        cx = np.mod(xx, period) - period / 2
        inside = (np.abs(cx) < r) & ((yy > top) | (cx**2 + (yy - top) ** 2 < r * r))
        alpha = np.where(inside, 0.0, 1.0).astype(np.float32)
        alpha[: int(top - r - 4 * scale)] = 0.0
    else:  # pragma: no cover - SETTINGS lists every kind
        raise ValueError(f"unknown setting {kind!r}")
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.8 * scale) * 0.85
    colour_img = np.broadcast_to(colour, (height, width, 3)).astype(np.float32)
    return colour_img, alpha


# ------------------------------------------------------------------------------- motifs
def motif_polygon(kind: str, x: float, y: float, r: float, angle: float) -> list[np.ndarray]:
    """Outline(s) of a motif centred at (x, y), radius ``r``, rotated by ``angle``: a list of
    (P, 2) float arrays in pixel coordinates."""
    def ring(n: int, radii: list[float], offset: float = 0.0) -> np.ndarray:
        t = offset + angle + np.arange(n) * (2 * math.pi / n)
        rad = np.resize(np.asarray(radii, np.float64), n)
        return np.stack([x + r * rad * np.cos(t), y + r * rad * np.sin(t)], axis=1)

    if kind == "star":
        return [ring(10, [1.0, 0.42], -math.pi / 2)]
    if kind == "triangle":
        return [ring(3, [1.0], -math.pi / 2)]
    if kind == "diamond":
        return [ring(4, [1.0, 0.6])]
    if kind == "hexagon":
        return [ring(6, [1.0])]
    if kind == "cross":
        a, b = 1.0, 0.33
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]])
    elif kind == "arrow":
        pts = np.array([[-1.0, -0.3], [0.2, -0.3], [0.2, -0.7], [1.0, 0.0], [0.2, 0.7],
                        [0.2, 0.3], [-1.0, 0.3]])
    elif kind == "crescent":
        t = np.linspace(-math.pi / 2, math.pi / 2, 16)
        outer = np.stack([np.cos(t), np.sin(t)], axis=1)
        inner = np.stack([0.45 * np.cos(t[::-1]), np.sin(t[::-1])], axis=1)
        pts = np.concatenate([outer, inner])
    elif kind == "bars":
        return [
            np.array([[x + r * (dx - 0.12), y - r], [x + r * (dx + 0.12), y - r],
                      [x + r * (dx + 0.12), y + r], [x + r * (dx - 0.12), y + r]])
            for dx in (-0.6, 0.0, 0.6)
        ]
    else:  # pragma: no cover - MOTIFS lists every kind
        raise ValueError(f"unknown motif {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return [np.stack([x + r * rot[:, 0], y + r * rot[:, 1]], axis=1)]


def draw_motif(
    img: np.ndarray, kind: str, x: float, y: float, r: float, angle: float, colour: np.ndarray
) -> None:
    """Draw a filled, anti-aliased motif into ``img`` (H, W, 3) uint8 RGB, in place."""
    shift = 4  # sub-pixel precision of cv2's fixed-point coordinates
    polys = [np.round(p * (1 << shift)).astype(np.int32) for p in motif_polygon(kind, x, y, r,
                                                                               angle)]
    cv2.fillPoly(img, polys, tuple(float(c) for c in colour), cv2.LINE_AA, shift)


def motif_colour(style: ContentStyle, rng: np.random.Generator) -> np.ndarray:
    return _rgb(style.motif_hue + rng.normal(0, 0.02), 0.85, float(rng.uniform(0.75, 1.0)))


# ------------------------------------------------------------------------------ grading
def grade_matrix(
    style: ContentStyle | None,
    strength: float,
    brightness: float = 0.0,
    contrast: float = 1.0,
    cast: np.ndarray | None = None,
) -> np.ndarray:
    """The colour grade of a trailer as one affine map of RGB in [0, 255]: (3, 4) float32.

    The style's saturation, per-channel gain and lift at ``strength`` in [0, 1] (none without a
    style), then the trailer's nuisance (its own film stock): a per-channel ``cast`` gain (3,),
    ``contrast`` about mid-grey and a ``brightness`` offset (fractions of full scale). All are
    linear in RGB, so they compose into one matrix that :func:`grade` applies per frame.
    """
    luma = np.array([0.299, 0.587, 0.114])
    a, b = np.eye(3), np.zeros(3)
    if style is not None:
        sat = 1.0 + strength * (style.grade_saturation - 1.0)
        a = sat * np.eye(3) + (1.0 - sat) * np.outer(np.ones(3), luma)  # saturation about luma
        gain = 1.0 + strength * (np.asarray(style.grade_gain) - 1.0)
        a = gain[:, None] * a
        b = strength * np.asarray(style.grade_lift)
    if cast is not None:
        a, b = np.asarray(cast)[:, None] * a, np.asarray(cast) * b
    a = contrast * a
    b = contrast * b + 0.5 - 0.5 * contrast + brightness
    return np.concatenate([a, 255.0 * b[:, None]], axis=1).astype(np.float32)  # (3, 4)


def grade(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a :func:`grade_matrix` to one RGB uint8 frame (H, W, 3); saturating uint8 out."""
    return cv2.transform(img, matrix)


# -------------------------------------------------------------------------------- music
def music_track(style: ContentStyle, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """The style's ostinato, float64 (n,) with unit RMS: its pattern of notes over its root,
    at its tempo (± 5% per trailer), in its timbre."""
    y = np.zeros(n)
    step = 1.0 / (style.music_tempo * rng.uniform(0.95, 1.05))
    root = style.music_root * rng.uniform(0.98, 1.02)
    note_len = int(min(step * 0.95, 0.6) * sr)
    t = np.arange(note_len) / sr
    pos, i = int(rng.uniform(0, step) * sr), 0
    while pos < n:
        f = root * style.music_pattern[i % len(style.music_pattern)]
        note = _note(style.music_timbre, f, t, rng)
        end = min(n, pos + note_len)
        y[pos:end] += note[: end - pos]
        pos += int(step * sr)
        i += 1
    return y / (np.sqrt(np.mean(y**2)) + 1e-9)


def _note(timbre: str, f: float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dur = t[-1] if len(t) else 1.0
    if timbre == "square":
        wave = sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 3, 5, 7))
        env = np.minimum(1.0, t / 0.01) * np.clip((dur - t) / 0.03, 0, 1)
    elif timbre == "pluck":
        wave = sum(np.sin(2 * np.pi * f * h * t) * 0.6**h for h in (1, 2, 3, 4))
        env = np.exp(-t / 0.12)
    elif timbre == "bell":
        wave = sum(a * np.sin(2 * np.pi * f * p * t) for p, a in ((1, 1.0), (2.76, 0.5),
                                                                  (5.4, 0.25), (8.93, 0.12)))
        env = np.exp(-t / 0.35)
    elif timbre == "organ":
        wave = sum(np.sin(2 * np.pi * f * h * t) for h in (1, 2, 3)) / 3
        env = np.minimum(1.0, t / 0.05) * np.clip((dur - t) / 0.05, 0, 1)
    else:  # pulse: band-passed noise bursts at the note's pitch
        noise = rng.standard_normal(len(t))
        wave = noise * np.sin(2 * np.pi * f * t)
        env = np.exp(-t / 0.06)
    return wave * env
