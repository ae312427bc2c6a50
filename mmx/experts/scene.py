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
    mag = np.sqrt(gx * gx + gy * gy) / 4.0  # Sobel gain 4 → unit step ≈ 1
    theta = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned orientation in [0, pi)
    bins = np.floor(theta / (np.pi / ORIENTATIONS) + 0.5).astype(np.int64) % ORIENTATIONS
    onehot = np.eye(ORIENTATIONS, dtype=np.float32)[bins] * mag[..., None]  # (N, H, W, O)
    cells = onehot.reshape(n, GRID, h // GRID, GRID, w // GRID, ORIENTATIONS).mean(axis=(2, 4))
    return np.sqrt(cells.transpose(0, 3, 1, 2).reshape(n, -1))  # (N, O * G * G)


def _histogram(values: np.ndarray, bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row normalised histogram of values in [0, 1): ``(N, P)`` → ``(N, bins)``."""
    idx = np.clip((values * bins).astype(np.int64), 0, bins - 1)
    n = values.shape[0]
    flat = idx + bins * np.arange(n)[:, None]  # offset each row into its own bin range
    w = None if weights is None else weights.reshape(-1)
    hist = np.bincount(flat.reshape(-1), weights=w, minlength=n * bins).reshape(n, bins)
    total = hist.sum(axis=1, keepdims=True)
    return (hist / np.maximum(total, 1e-6)).astype(np.float32)


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

    hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV_FULL) for f in small])
    hsv = hsv.reshape(n, -1, 3).astype(np.float32) / 256.0  # (N, P, 3) in [0, 1)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    chroma = sat * val  # weight hue by how coloured the pixel is
    angle = 2 * np.pi * hue
    chroma_sum = np.maximum(chroma.sum(axis=1), 1e-6)
    hue_cos = (chroma * np.cos(angle)).sum(axis=1) / chroma_sum
    hue_sin = (chroma * np.sin(angle)).sum(axis=1) / chroma_sum
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
        _histogram(hue, HUE_BINS, chroma), _histogram(sat, SV_BINS), _histogram(val, SV_BINS),
        stats,
    ], axis=1)  # (N, 40)
    h2, w2 = WORK_SIZE[1] // 2, WORK_SIZE[0] // 2
    layout = rgb.reshape(n, 2, h2, 2, w2, 3).mean(axis=(2, 4)).reshape(n, -1)  # (N, 12)
    return np.concatenate([edges, colour, layout], axis=1).astype(np.float32)


@register_expert
class SceneExpert(Expert):
    """Spatial layout + colour grading per frame; a shot is the mean of its frames."""

    name = "scene"
    dim = EDGE_DIM + COLOUR_DIM + LAYOUT_DIM  # 180
    kind = "frames"
    frame_dim = dim  # per-frame rows have the shot vector's width

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
