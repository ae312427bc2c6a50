"""Video reading (decord with a PyAV fallback) and frame-sampling maths; no Ray here."""

from mmx.video.reader import VideoInfo, frame_to_rgb, iter_frames, probe, read_frames_pyav
from mmx.video.sampling import evenly_spaced, mean_in_ranges, nearest, rows_in_ranges

__all__ = [
    "VideoInfo",
    "evenly_spaced",
    "frame_to_rgb",
    "iter_frames",
    "mean_in_ranges",
    "nearest",
    "probe",
    "read_frames_pyav",
    "rows_in_ranges",
]
