"""Small pure sampling maths on frame indices (no decoding here).

Owns where frames are taken inside a clip (evenly spaced positions), how sparse samples are
matched to those positions (nearest sample), and how per-sample rows are grouped into clips.
"""

from __future__ import annotations

import numpy as np


def evenly_spaced(start: int, end: int, n: int) -> np.ndarray:
    """``n`` frame positions at the centres of ``n`` equal parts of ``[start, end)``.

    Returns:
        int64 array of shape ``(n,)``, non-decreasing, inside ``[start, end)`` (repeats when the
        range holds fewer than ``n`` frames). ``end <= start`` gives ``start`` repeated.
    """
    if n <= 0:
        return np.zeros(0, np.int64)
    length = max(int(end) - int(start), 1)
    pos = int(start) + np.floor((2 * np.arange(n) + 1) * length / (2 * n)).astype(np.int64)
    return np.clip(pos, start, int(start) + length - 1)


def nearest(samples: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index into sorted ``samples`` of the sample nearest to each target (ties: earlier).

    Args:
        samples: sorted int array ``(S,)``, ``S >= 1``.
        targets: int array ``(N,)``.

    Returns:
        int64 array ``(N,)`` of indices into ``samples``.
    """
    samples = np.asarray(samples)
    targets = np.asarray(targets)
    if samples.size == 0:
        raise ValueError("nearest() needs at least one sample")
    right = np.clip(np.searchsorted(samples, targets, side="left"), 0, samples.size - 1)
    left = np.clip(right - 1, 0, samples.size - 1)
    pick_left = np.abs(targets - samples[left]) <= np.abs(samples[right] - targets)
    return np.where(pick_left, left, right).astype(np.int64)


def rows_in_ranges(positions: np.ndarray, ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row span of each ``[start, end)`` range in sorted ``positions``.

    Args:
        positions: sorted int array ``(S,)`` (frame index of each sample row).
        ranges: int array ``(C, 2)`` of ``[start, end)`` frame ranges.

    Returns:
        ``(lo, hi)`` int64 arrays ``(C,)``: rows ``lo[c]:hi[c]`` have positions inside range c.
    """
    positions = np.asarray(positions)
    ranges = np.asarray(ranges).reshape(-1, 2)
    lo = np.searchsorted(positions, ranges[:, 0], side="left")
    hi = np.searchsorted(positions, ranges[:, 1], side="left")
    return lo.astype(np.int64), hi.astype(np.int64)


def mean_in_ranges(positions: np.ndarray, rows: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Mean of the rows whose position lies in each range; empty ranges take the nearest row.

    Args:
        positions: sorted int array ``(S,)``, ``S >= 1``.
        rows: float array ``(S, D)``.
        ranges: int array ``(C, 2)`` of ``[start, end)`` frame ranges.

    Returns:
        float32 array ``(C, D)``.
    """
    rows = np.asarray(rows, np.float64)
    lo, hi = rows_in_ranges(positions, ranges)
    csum = np.concatenate([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])  # (S+1, D)
    count = (hi - lo)[:, None]
    out = (csum[hi] - csum[lo]) / np.maximum(count, 1)
    empty = count[:, 0] == 0
    if empty.any():
        ranges = np.asarray(ranges).reshape(-1, 2)
        mid = (ranges[empty, 0] + ranges[empty, 1] - 1) // 2
        out[empty] = rows[nearest(positions, mid)]
    return out.astype(np.float32)
