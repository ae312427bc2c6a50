"""Scene expert: a GIST-like spatial layout and colour-grading descriptor per frame.

Owns the offline default for "place, lighting, palette" (DESIGN §2). Per frame, on a 128x72
working copy:

* oriented edge energy (Sobel gradients, 4 unsigned orientations, 2 scales) mean-pooled on a
  4x4 grid, square-rooted: 2 x 4 x 16 = 128 values (the spatial envelope of Oliva & Torralba's
  GIST, with gradients instead of Gabor filters);
* colour grading: hue histogram (12 bins, weighted by chroma), saturation and value histograms
  (8 bins each), hue circular mean (cos, sin), saturation and value mean/std, luma mean
  (brightness), luma std (contrast), colourfulness (Hasler & Suesstrunk), fractions of dark and
  bright pixels, edge density: 40 values;
* a 2x2 colour layout (mean RGB per quadrant): 12 values.

``dim = 180``. A shot's vector is the mean of its frames' vectors (the pipeline averages).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from mmx.experts.registry import Expert, register_expert

WORK_SIZE = (128, 72)  # (width, height); both divisible by 8 so both scales pool on 4x4
GRID = 4
ORIENTATIONS = 4
SCALES = 2
HUE_BINS = 12
SV_BINS = 8
EDGE_DIM = SCALES * ORIENTATIONS * GRID * GRID  # 128
COLOUR_DIM = HUE_BINS + 2 * SV_BINS + 12  # 40
LAYOUT_DIM = 2 * 2 * 3  # 12


def _edge_energy(grey: np.ndarray) -> np.ndarray:
    """Oriented gradient energy pooled on a grid.

    Args:
        grey: float32 ``(N, H, W)`` in [0, 1], ``H`` and ``W`` divisible by ``GRID``.

    Returns:
        float32 ``(N, ORIENTATIONS * GRID * GRID)``.
    """
    n, h, w = grey.shape
    gx = np.stack([cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) for g in grey])  # (N, H, W)
    gy = np.stack([cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) for g in grey])
    # Magnitude and angle in [0, 2 pi) in one OpenCV pass (angles good to ~0.3 degrees).
    mag, theta = cv2.cartToPolar(gx.reshape(n * h, w), gy.reshape(n * h, w))
    # Unsigned orientation: bin of theta mod pi; adding pi shifts the bin by exactly O.
    bins = (theta * (ORIENTATIONS / np.pi) + 0.5).astype(np.int64) % ORIENTATIONS  # (N*H, W)
    cell = _cell_index(h, w)  # (H, W) cell of each pixel, row-major on the grid
    index = (np.arange(n)[:, None, None] * GRID * GRID + cell) * ORIENTATIONS  # (N, H, W)
    index = index + bins.reshape(n, h, w)
    energy = np.bincount(index.reshape(-1), weights=mag.reshape(-1) / 4.0,  # Sobel gain 4
                         minlength=n * GRID * GRID * ORIENTATIONS)
    cells = energy.reshape(n, GRID * GRID, ORIENTATIONS) / ((h // GRID) * (w // GRID))  # means
    return np.sqrt(cells.transpose(0, 2, 1).reshape(n, -1)).astype(np.float32)  # (N, O*G*G)


@functools.cache
def _cell_index(h: int, w: int) -> np.ndarray:
    """int64 ``(h, w)``: grid cell of each pixel, ``row * GRID + col`` on a GRID x GRID grid."""
    rows = np.arange(h) // (h // GRID)
    cols = np.arange(w) // (w // GRID)
    return rows[:, None] * GRID + cols[None, :]


def _histogram(codes: np.ndarray, bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row normalised histogram of uint8 codes read as values ``code / 256`` in [0, 1).

    ``(N, P)`` uint8 (and optional float weights ``(N, P)``) → float32 ``(N, bins)``; bin
    ``floor(code * bins / 256)``.
    """
    n = codes.shape[0]
    lut = (np.arange(256) * bins) // 256  # code -> bin
    flat = lut[codes] + bins * np.arange(n)[:, None]  # offset each row into its own bin range
    w = None if weights is None else weights.reshape(-1)
    hist = np.bincount(flat.reshape(-1), weights=w, minlength=n * bins).reshape(n, bins)
    total = hist.sum(axis=1, keepdims=True)
    return (hist / np.maximum(total, 1e-6)).astype(np.float32)


_UNIT = (np.arange(256) / 256.0).astype(np.float32)  # uint8 HSV code -> [0, 1)
_COS = np.cos(2 * np.pi * _UNIT).astype(np.float32)  # hue code -> cos / sin of its angle
_SIN = np.sin(2 * np.pi * _UNIT).astype(np.float32)


def describe_frames(frames: np.ndarray) -> np.ndarray:
    """Scene descriptors of uint8 RGB frames ``(N, H, W, 3)`` → float32 ``(N, 180)``."""
    frames = np.asarray(frames)
    n = len(frames)
    if n == 0:
        return np.zeros((0, SceneExpert.dim), np.float32)
    small = np.stack([cv2.resize(f, WORK_SIZE, interpolation=cv2.INTER_AREA) for f in frames])
    rgb = small.astype(np.float32) / 255.0  # (N, h, w, 3)
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # (N, h, w) luma
    half = np.stack([cv2.resize(g, (WORK_SIZE[0] // 2, WORK_SIZE[1] // 2),
                                interpolation=cv2.INTER_AREA) for g in grey])
    edges = np.concatenate([_edge_energy(grey), _edge_energy(half)], axis=1)  # (N, 128)

    # One HSV conversion for all frames (stacked vertically they are one image).
    hsv8 = cv2.cvtColor(small.reshape(n * small.shape[1], small.shape[2], 3),
                        cv2.COLOR_RGB2HSV_FULL).reshape(n, -1, 3)  # (N, P, 3) uint8
    hue8, sat8, val8 = hsv8[..., 0], hsv8[..., 1], hsv8[..., 2]
    sat, val = _UNIT[sat8], _UNIT[val8]  # (N, P) float32 in [0, 1)
    chroma = sat * val  # weight hue by how coloured the pixel is
    chroma_sum = np.maximum(chroma.sum(axis=1), 1e-6)
    hue_cos = (chroma * _COS[hue8]).sum(axis=1) / chroma_sum  # tables: hue has 256 values
    hue_sin = (chroma * _SIN[hue8]).sum(axis=1) / chroma_sum
    luma = grey.reshape(n, -1)
    r, g, b = (rgb[..., c].reshape(n, -1) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2) + 0.3 * np.sqrt(
        rg.mean(1) ** 2 + yb.mean(1) ** 2)
    gmag = edges[:, : ORIENTATIONS * GRID * GRID] ** 2  # undo sqrt: mean gradient energy
    stats = np.stack([
        hue_cos, hue_sin,
        sat.mean(1), sat.std(1), val.mean(1), val.std(1),
        luma.mean(1), luma.std(1), colourfulness,
        (luma < 0.1).mean(1), (luma > 0.9).mean(1), gmag.sum(1) / ORIENTATIONS,
    ], axis=1)  # (N, 12)
    colour = np.concatenate([
        _histogram(hue8, HUE_BINS, chroma), _histogram(sat8, SV_BINS), _histogram(val8, SV_BINS),
        stats,
    ], axis=1)  # (N, 40)
    h2, w2 = WORK_SIZE[1] // 2, WORK_SIZE[0] // 2
    # Quadrant means: sum the rows of each half first (contiguous), then the columns.
    rows = rgb.reshape(n, 2, h2, w2 * 2 * 3).sum(axis=2)  # (N, 2, 2 * w2 * 3)
    layout = rows.reshape(n, 2, 2, w2, 3).sum(axis=3) / (h2 * w2)  # (N, 2, 2, 3)
    layout = layout.reshape(n, -1)  # (N, 12)
    return np.concatenate([edges, colour, layout], axis=1).astype(np.float32)


@register_expert
class SceneExpert(Expert):
    """Spatial layout + colour grading per frame; a shot is the mean of its frames."""

    name = "scene"
    dim = EDGE_DIM + COLOUR_DIM + LAYOUT_DIM  # 180
    kind = "frames"
    frame_dim = dim  # per-frame rows have the shot vector's width

    def frame_stride(self) -> int:
        """In the decode stage: every ``experts.scene_stride``-th frame, averaged per clip."""
        return max(1, self.cfg.scene_stride)

    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(T, H, W, 3)`` → float32 ``(T, 180)``, one row per frame."""
        return describe_frames(frames)

    def aggregate(self, rows: np.ndarray, n_frames: int = 0, fps: float = 0.0) -> np.ndarray:
        """Rows ``(K, 180)`` of one shot → float32 ``(180,)`` (their mean)."""
        rows = np.asarray(rows, np.float32)
        if len(rows) == 0:
            return np.zeros(self.dim, np.float32)
        return rows.mean(axis=0)

    def __call__(self, batch: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Shots (each uint8 ``(T, H, W, 3)``) → float32 ``(N, 180)``.

        A single ``(N, H, W, 3)`` array is read as N one-frame shots.
        """
        if isinstance(batch, np.ndarray) and batch.ndim == 4:
            return describe_frames(batch)
        out = [self.aggregate(self.frame_features(shot)) for shot in batch]
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)
