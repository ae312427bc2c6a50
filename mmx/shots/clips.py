"""Shots → clips: the frame ranges the experts describe.

Owns the paper's rule that the first and last frame(s) of each shot are dropped (detection is
fuzzy at boundaries, and a frame straddling a cut would mix two shots), and the minimum clip
length. Clips are frame ranges, never cut files (PySceneDetect#159).
"""

from __future__ import annotations

from collections.abc import Sequence


def shots_to_clips(
    shots: Sequence[tuple[int, int]], drop_edge_frames: int, min_len: int = 1
) -> list[tuple[int, int]]:
    """Shrink every shot ``[start, end)`` by ``drop_edge_frames`` at both ends.

    Args:
        shots: ``[start, end)`` frame ranges, in order.
        drop_edge_frames: frames removed at each end of a shot (>= 0).
        min_len: clips shorter than this many frames after shrinking are dropped (>= 1).

    Returns:
        Kept clips as ``[start, end)`` ranges, in order; a subset of the shots' frames.
    """
    if drop_edge_frames < 0:
        raise ValueError("drop_edge_frames must be >= 0")
    min_len = max(1, int(min_len))
    clips = []
    for start, end in shots:
        a, b = int(start) + drop_edge_frames, int(end) - drop_edge_frames
        if b - a >= min_len:
            clips.append((a, b))
    return clips
