"""Motion expert: dense optical flow statistics and camera motion of a shot.

Owns the offline default for "camera and action style" (DESIGN §2). For a pair of consecutive
frames, OpenCV DIS flow (ultrafast preset) on 128x72 grey copies, averaged over 2x2 pixels
(64x36 vectors: DIS's flow is smooth at that scale, and the statistics cost a quarter) and
expressed in frame widths per second so that resolution and frame rate cancel, gives a 22-d
row:

* orientation histogram of the flow (8 bins, weighted by magnitude, per pixel): 8;
* magnitude histogram (fractions of pixels, bin edges 0.02 ... 1.6 widths/s): 8;
* camera: pan and tilt (median flow), zoom and roll (least-squares similarity fit about the
  frame centre; zoom > 0 is zooming in / moving forward): 4;
* mean flow magnitude and mean residual after removing the camera fit (object motion): 2.

A shot's 30-d vector is the mean of its rows (22), the std of the camera and magnitude terms
over the shot (6), the peak mean magnitude (1) and the shot's tempo, ``log`` of its length in
seconds (1). Frames that straddle a cut never form a pair of the same clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mmx.config import ExpertsConfig, ShotsConfig
from mmx.experts.registry import Expert, FrameRows, register_expert
from mmx.video.sampling import nearest, rows_in_ranges

FLOW_SIZE = (128, 72)  # (width, height) of the grey frames the flow runs on
STATS_SIZE = (64, 36)  # the flow field is averaged to this many vectors for the statistics
ORIENT_BINS = 8
MAG_EDGES = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6], np.float32)  # widths / s
PAIR_DIM = ORIENT_BINS + len(MAG_EDGES) + 1 + 4 + 2  # 22
SPREAD_COLS = slice(PAIR_DIM - 6, PAIR_DIM)  # pan, tilt, zoom, roll, magnitude, residual
MEAN_MAG_COL = PAIR_DIM - 2


def to_grey(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(T, H, W, 3)`` → uint8 grey ``(T, 72, 128)`` for the flow."""
    return np.stack([
        cv2.cvtColor(cv2.resize(f, FLOW_SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        for f in frames
    ]) if len(frames) else np.zeros((0, FLOW_SIZE[1], FLOW_SIZE[0]), np.uint8)


def _grid() -> tuple[np.ndarray, np.ndarray, float]:
    w, h = STATS_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (x - (w - 1) / 2) / w  # centred, in frame widths
    y = (y - (h - 1) / 2) / w
    return x.reshape(-1), y.reshape(-1), float((x * x + y * y).sum())


_X, _Y, _R2 = _grid()


class FlowStats:
    """DIS optical flow between grey frames and the per-pair statistics above."""

    def __init__(self) -> None:
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def pair_rows(self, first: np.ndarray, second: np.ndarray, fps: float) -> np.ndarray:
        """Rows for frame pairs.

        Args:
            first, second: uint8 grey ``(P, 72, 128)`` (from :func:`to_grey`); pair ``i`` is
                ``first[i] → second[i]``, one frame apart.
            fps: frame rate, to express flow per second.

        Returns:
            float32 ``(P, 22)``.
        """
        p = len(first)
        if p == 0:
            return np.zeros((0, PAIR_DIM), np.float32)
        flow = np.stack([  # (P, 36, 64, 2): 2x2 means of the (72, 128) field, in pixels
            cv2.resize(self.dis.calc(a, b, None), STATS_SIZE, interpolation=cv2.INTER_AREA)
            for a, b in zip(first, second, strict=True)
        ])
        flow = flow.reshape(p, -1, 2) * (float(fps) / FLOW_SIZE[0])  # (P, HW, 2) widths / s
        u, v = np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1])
        # Magnitude and angle in [0, 2 pi) in one OpenCV pass (angles good to ~0.3 degrees).
        mag, angle = cv2.cartToPolar(u, v)  # (P, HW) each
        obin = np.minimum((angle * (ORIENT_BINS / (2 * np.pi))).astype(np.int64),
                          ORIENT_BINS - 1)
        offs = obin + ORIENT_BINS * np.arange(p)[:, None]
        orient = np.bincount(offs.reshape(-1), weights=mag.reshape(-1),
                             minlength=p * ORIENT_BINS).reshape(p, ORIENT_BINS) / mag.shape[1]
        mbin = np.searchsorted(MAG_EDGES, mag)  # (P, HW) in [0, 7]
        n_mag = len(MAG_EDGES) + 1
        moffs = mbin + n_mag * np.arange(p)[:, None]
        mag_hist = np.bincount(moffs.reshape(-1), minlength=p * n_mag).reshape(p, n_mag)
        mag_hist = mag_hist / mag.shape[1]
        pan, tilt = np.median(u, axis=1), np.median(v, axis=1)
        # Similarity fit u = tx + z x - r y, v = ty + r x + z y on centred coordinates
        # (sum x = sum y = 0, so the translation drops out of the zoom and roll sums).
        tx, ty = u.mean(1), v.mean(1)
        zoom = (u @ _X + v @ _Y) / _R2  # (P,)
        roll = (v @ _X - u @ _Y) / _R2
        ru = u - (tx[:, None] + np.outer(zoom, _X) - np.outer(roll, _Y))
        rv = v - (ty[:, None] + np.outer(roll, _X) + np.outer(zoom, _Y))
        residual = cv2.magnitude(ru, rv).mean(1)
        cols = [pan, tilt, zoom, roll, mag.mean(1), residual]
        return np.concatenate([orient, mag_hist, np.stack(cols, 1)], 1).astype(np.float32)


@register_expert
class MotionExpert(Expert):
    """Optical-flow histograms, camera pan/tilt/zoom/roll and tempo of a shot."""

    name = "motion"
    dim = PAIR_DIM + 6 + 1 + 1  # 30
    kind = "frames"
    frame_dim = PAIR_DIM  # rows are per frame pair

    def __init__(self, cfg: ExpertsConfig | None = None) -> None:
        super().__init__(cfg)
        self.flow = FlowStats()

    def pair_rows(self, first: np.ndarray, second: np.ndarray, fps: float) -> np.ndarray:
        """Grey pairs ``(P, 72, 128)`` x 2 → float32 rows ``(P, 22)``; see :class:`FlowStats`."""
        return self.flow.pair_rows(first, second, fps)

    def frame_features(self, frames: np.ndarray, fps: float = 24.0) -> np.ndarray:
        """Consecutive uint8 RGB frames ``(T, H, W, 3)`` → rows ``(T - 1, 22)``."""
        grey = to_grey(frames)
        return self.pair_rows(grey[:-1], grey[1:], fps)

    def aggregate(self, rows: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
        """Rows ``(K, 22)`` of one shot of ``n_frames`` frames → float32 ``(30,)``."""
        rows = np.asarray(rows, np.float32).reshape(-1, PAIR_DIM)
        tempo = np.log(max(n_frames, 1) / max(float(fps), 1e-3))
        if len(rows) == 0:
            rows = np.zeros((1, PAIR_DIM), np.float32)
        peak = rows[:, MEAN_MAG_COL : MEAN_MAG_COL + 1].max(0)  # (1,)
        out = np.concatenate([rows.mean(0), rows[:, SPREAD_COLS].std(0), peak, [tempo]])
        return out.astype(np.float32)

    def __call__(self, batch: Sequence[np.ndarray], fps: float = 24.0) -> np.ndarray:
        """Shots (each uint8 consecutive frames ``(T, H, W, 3)``) → float32 ``(N, 30)``."""
        out = [self.aggregate(self.frame_features(shot, fps), len(shot), fps) for shot in batch]
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)

    def accumulator(self, fps: float, shots: ShotsConfig) -> MotionRows:
        """In the decode stage: flow on the pairs ``(t, t + 1)`` for every
        ``experts.motion_stride``-th frame ``t``, aggregated per clip (:class:`MotionRows`)."""
        return MotionRows(self, fps, max(1, self.cfg.motion_stride), shots.drop_edge_frames)


class MotionRows:
    """Flow rows of one trailer while it is decoded (a :class:`FrameAccumulator`): pairs
    ``(t, t + 1)`` for every ``stride``-th frame ``t``, a pair spanning two chunks included."""

    def __init__(self, expert: MotionExpert, fps: float, stride: int, drop_edge: int) -> None:
        self.expert = expert
        self.fps = fps
        self.stride = stride
        self.drop_edge = drop_edge
        self.rows = FrameRows(PAIR_DIM)
        self.pending: np.ndarray | None = None  # grey frame t when pair (t, t + 1) spans chunks

    def add(self, first: int, chunk: np.ndarray) -> None:
        index = np.arange(first, first + len(chunk))
        starts = np.flatnonzero(index[:-1] % self.stride == 0)  # pairs inside the chunk
        need = np.union1d(starts, starts + 1)  # local frames the flow needs
        grey = to_grey(chunk[need])  # (len(need), 72, 128)
        first_grey = grey[np.searchsorted(need, starts)]  # (P, 72, 128)
        second_grey = grey[np.searchsorted(need, starts + 1)]
        pair_index = index[starts]
        if self.pending is not None:  # pair (first - 1, first) spans the chunk border
            first_grey = np.concatenate([self.pending[None], first_grey])
            second_grey = np.concatenate([to_grey(chunk[:1]), second_grey])
            pair_index = np.concatenate([[first - 1], pair_index])
        self.rows.add(pair_index, self.expert.pair_rows(first_grey, second_grey, self.fps))
        last = index[-1]
        self.pending = to_grey(chunk[-1:])[0] if last % self.stride == 0 else None

    def per_clip(self, clips: np.ndarray) -> np.ndarray:
        """Motion vectors ``(C, 30)``: pairs with both frames inside the clip, tempo of the
        shot (the clip plus its dropped edge frames)."""
        positions, rows = self.rows.arrays()
        out = np.zeros((len(clips), self.expert.dim), np.float32)
        if len(positions) == 0:
            return out
        pair_ranges = np.stack([clips[:, 0], clips[:, 1] - 1], axis=1)  # pair t needs t+1 < end
        lo, hi = rows_in_ranges(positions, pair_ranges)
        shot_len = clips[:, 1] - clips[:, 0] + 2 * self.drop_edge
        for c in range(len(clips)):
            if hi[c] > lo[c]:
                clip_rows = rows[lo[c] : hi[c]]
            else:  # clip too short for a sampled pair: nearest pair
                mid = (clips[c, 0] + clips[c, 1] - 1) // 2
                clip_rows = rows[nearest(positions, np.array([mid]))]
            out[c] = self.expert.aggregate(clip_rows, int(shot_len[c]), self.fps)
        return out
