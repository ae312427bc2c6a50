"""One trailer in, its shots and CPU features out: the pure core of the decode stage.

Owns :func:`analyse_trailer`. The video is decoded once, forward-only, downscaled in the
decoder, in chunks of ``video.chunk_frames``; every chunk goes to the shot detector and the
cheap CPU experts while it is in memory, then is dropped:

* shot detection sees every frame (:class:`~mmx.shots.ShotDetector`); the frames of a gradual
  transition (dissolve, fade) belong to no shot;
* the scene descriptor runs on every ``experts.scene_stride``-th frame and the optical flow on
  the pairs ``(t, t + 1)`` for every ``experts.motion_stride``-th frame ``t``; their small rows
  are kept and aggregated per clip at the end (mean; motion adds spread and tempo);
* a few candidate frames of the shot still open are held (at most
  ``experts.appearance_candidates``, thinned 2:1 when full); when the detector reports the cut
  that closes the shot, ``experts.appearance_frames`` frames near evenly spaced positions of its
  clip are kept and the rest dropped (one frame per clip even without the appearance
  expert: the trailer's thumbnail, :func:`thumbnail`, is the middle one of its longest clip).

So memory is one chunk plus one open shot's candidates plus small per-frame rows, whatever the
trailer's length; only the few frames per clip the appearance CNN needs leave this function
(the CNN runs later, batched across trailers, in an actor). Audio is decoded separately
(PyAV, audio stream only) into 0.96 s log-mel examples assigned to clips by time.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from mmx.audio import EXAMPLE_S, load_audio, log_mel_frames
from mmx.config import ExpertsConfig, ShotsConfig, VideoConfig
from mmx.errors import TrailerError, excluded, failed
from mmx.experts.audio import AudioExpert
from mmx.experts.motion import MotionExpert, to_grey
from mmx.experts.scene import SceneExpert
from mmx.shots.clips import shots_to_clips
from mmx.shots.detect import ShotDetector
from mmx.video.reader import PathLike, VideoInfo, iter_frames, probe
from mmx.video.sampling import evenly_spaced, mean_in_ranges, nearest, rows_in_ranges

log = logging.getLogger(__name__)

TRUNCATION_SLACK = 0.02  # fewer decoded frames than the header's exact count minus this: failed
THUMBNAIL_WIDTH = 160  # px; the report draws thumbnails at half that
THUMBNAIL_QUALITY = 80  # JPEG quality (a 160×90 thumbnail is a few kB)


@dataclass
class TrailerFeatures:
    """Everything the decode stage learns about one trailer.

    ``C`` kept clips, ``F = experts.appearance_frames``, ``A = experts.max_audio_frames``,
    ``h, w = video.height, video.width``. Frame ranges are ``[start, end)`` decoded-frame
    indices; a clip's time is ``start / info.fps`` to ``end / info.fps`` seconds.
    """

    info: VideoInfo
    shots: list[tuple[int, int]]  # detected shots [start, end): every frame but gradual ones
    clips: np.ndarray  # (C, 2) int64 kept clip [start, end) frames
    features: dict[str, np.ndarray]  # CPU experts: name -> (C, dim) float32 (scene, motion)
    audio: np.ndarray  # (C, A, 128) float32, zero padded
    audio_frames: np.ndarray  # (C,) int32 number of real audio frames per clip (0 = none)
    has_audio: bool
    frames: np.ndarray  # (C, F, h, w, 3) uint8 RGB frames for the appearance CNN
    thumbnail: bytes | None = None  # small JPEG (:func:`thumbnail`)
    timings_s: dict[str, float] = field(default_factory=dict)  # seconds per step

    @property
    def n_frames(self) -> int:
        """Number of decoded frames."""
        return self.shots[-1][1] if self.shots else 0

    def clip_seconds(self) -> np.ndarray:
        """float64 ``(C, 2)``: clip ``[start_s, end_s)`` in seconds (``frame / fps``)."""
        return self.clips.astype(np.float64) / self.info.fps


class _FramePicker:
    """Holds candidate frames of the open shot; keeps F frames per clip when a shot closes."""

    def __init__(self, n_pick: int, capacity: int, drop_edge_frames: int) -> None:
        self.n_pick = n_pick
        self.capacity = max(capacity, 2 * n_pick, 2)
        self.drop = drop_edge_frames
        self.shot_start = 0
        self.stride = 1
        self.anchor = 0
        self.index: list[int] = []
        self.frames: list[np.ndarray] = []
        self.picked: dict[int, np.ndarray] = {}  # clip start -> (F, h, w, 3)

    def add(self, first_index: int, chunk: np.ndarray) -> None:
        """Offer a chunk ``(T, h, w, 3)`` whose first frame is ``first_index``."""
        if self.n_pick == 0:
            return
        for k in range(len(chunk)):
            i = first_index + k
            if (i - self.anchor) % self.stride:
                continue
            self.index.append(i)
            self.frames.append(chunk[k].copy())  # a copy: never keep the whole chunk alive
            if len(self.index) > self.capacity:  # thin 2:1, halve the sampling rate
                self.index, self.frames = self.index[::2], self.frames[::2]
                self.stride *= 2

    def close(self, end: int, next_start: int | None = None) -> None:
        """The shot ``[shot_start, end)`` is final: keep its clip's frames, drop the rest.

        The next shot starts at ``next_start`` (default ``end``); frames in between belong to a
        gradual transition and to no shot."""
        next_start = end if next_start is None else next_start
        start, self.shot_start = self.shot_start, next_start
        n_done = int(np.searchsorted(np.asarray(self.index, np.int64), end))
        index, frames = self.index[:n_done], self.frames[:n_done]
        n_skip = int(np.searchsorted(np.asarray(self.index, np.int64), next_start))
        self.index, self.frames = self.index[n_skip:], self.frames[n_skip:]
        self.stride, self.anchor = 1, next_start  # a new shot starts dense
        clip = shots_to_clips([(start, end)], self.drop, 1)
        if self.n_pick == 0 or not clip or not index:
            return
        a, b = clip[0]
        idx = np.asarray(index, np.int64)
        inside = np.flatnonzero((idx >= a) & (idx < b))
        pool = inside if inside.size else np.arange(idx.size)
        chosen = pool[nearest(idx[pool], evenly_spaced(a, b, self.n_pick))]
        self.picked[a] = np.stack([frames[c] for c in chosen])


class _Rows:
    """Per-frame (or per-pair) expert rows kept as small arrays, positions increasing."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.positions: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def add(self, positions: np.ndarray, rows: np.ndarray) -> None:
        if len(positions):
            self.positions.append(np.asarray(positions, np.int64))
            self.rows.append(np.asarray(rows, np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.positions:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(self.positions), np.concatenate(self.rows)


def analyse_trailer(
    path: PathLike, video: VideoConfig, shots: ShotsConfig, experts: ExpertsConfig
) -> TrailerFeatures:
    """Decode one trailer once and describe its clips with the CPU experts.

    Args:
        path: local video file (any name, unicode and spaces allowed).
        video, shots, experts: the run's configuration sections.

    Returns:
        :class:`TrailerFeatures` with ``C >= shots.min_shots`` clips.

    Raises:
        TrailerError: ``failed`` for unreadable input (empty, not a video, no video stream,
            truncated — also when the stream ends cleanly well before the frame count its
            header declares —, corrupt), ``excluded`` when the trailer is longer than
            ``video.max_duration_s`` or has fewer than ``shots.min_shots`` kept clips.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = probe(path)
    if not video.min_fps <= info.fps <= video.max_fps:  # (NaN fails too)
        raise failed(f"declared frame rate {info.fps:g} fps is outside "
                     f"[{video.min_fps:g}, {video.max_fps:g}] (video.min_fps/max_fps)")
    if info.duration_s > video.max_duration_s:
        raise excluded(f"duration {info.duration_s:.0f} s > {video.max_duration_s:.0f} s")
    max_frames = math.ceil(video.max_duration_s * info.fps) + 1  # when the header lies
    fps = info.fps
    names = set(experts.names)
    scene = SceneExpert(experts) if "scene" in names else None
    motion = MotionExpert(experts) if "motion" in names else None
    scene_stride = max(1, experts.scene_stride)
    motion_stride = max(1, experts.motion_stride)
    n_cnn = experts.appearance_frames if "appearance" in names else 0
    n_pick = max(1, n_cnn)  # one frame per clip at least: the thumbnail's candidates

    detector = ShotDetector(shots, fps)
    picker = _FramePicker(n_pick, experts.appearance_candidates, shots.drop_edge_frames)
    scene_rows = _Rows(SceneExpert.frame_dim)
    motion_rows = _Rows(MotionExpert.frame_dim)
    pending_grey: np.ndarray | None = None  # grey frame t when pair (t, t + 1) spans chunks
    spent = {"detect": 0.0, "scene": 0.0, "motion": 0.0}
    n_frames = 0
    chunks = iter_frames(path, width=video.width, height=video.height,
                         chunk_frames=video.chunk_frames, backend=video.backend,
                         threads=video.decode_threads, prefetch=video.prefetch_chunks,
                         skip_loop_filter=video.skip_loop_filter)
    with closing(chunks):  # stops the decode thread at once if we raise mid-video
        for first, chunk in chunks:
            n = len(chunk)
            index = np.arange(first, first + n)
            n_frames = first + n
            if n_frames > max_frames:
                raise excluded(f"longer than {video.max_duration_s:.0f} s "
                               f"(> {max_frames} frames at {fps:g} fps)")
            if time.perf_counter() - t0 > video.decode_timeout_s:
                raise TimeoutError(f"decoding stopped after {video.decode_timeout_s:g} s "
                                   f"(video.decode_timeout_s) at frame {n_frames}")
            if len(detector.boundaries) > shots.max_clips:
                raise excluded(f"more than {shots.max_clips} shots (shots.max_clips) in the "
                               f"first {n_frames} frames")
            t = time.perf_counter()
            position = first  # frames before this one were offered to the picker
            for start, end in detector.push(first, chunk):
                if start > position:  # offer the shot's frames up to the boundary, close it
                    picker.add(position, chunk[position - first : start - first])
                # a boundary reported late still splits the candidates by index; the frames
                # of a gradual transition [start, end) go to no shot
                position = max(position, min(end, n_frames))
                picker.close(start, end)
            picker.add(position, chunk[position - first :])
            spent["detect"] += time.perf_counter() - t

            if scene is not None:
                t = time.perf_counter()
                local = np.flatnonzero(index % scene_stride == 0)
                scene_rows.add(index[local], scene.frame_features(chunk[local]))
                spent["scene"] += time.perf_counter() - t

            if motion is not None:
                t = time.perf_counter()
                starts = np.flatnonzero(index[:-1] % motion_stride == 0)  # pairs inside the chunk
                need = np.union1d(starts, starts + 1)  # local frames the flow needs
                grey = to_grey(chunk[need])  # (len(need), 72, 128)
                first_grey = grey[np.searchsorted(need, starts)]  # (P, 72, 128)
                second_grey = grey[np.searchsorted(need, starts + 1)]
                pair_index = index[starts]
                if pending_grey is not None:  # pair (first - 1, first) spans the chunk border
                    first_grey = np.concatenate([pending_grey[None], first_grey])
                    second_grey = np.concatenate([to_grey(chunk[:1]), second_grey])
                    pair_index = np.concatenate([[first - 1], pair_index])
                motion_rows.add(pair_index, motion.pair_rows(first_grey, second_grey, fps))
                last = index[-1]
                pending_grey = to_grey(chunk[-1:])[0] if last % motion_stride == 0 else None
                spent["motion"] += time.perf_counter() - t
            del chunk

    if n_frames == 0:
        raise failed("video stream has no decodable frames")
    if info.exact_n_frames and n_frames < info.n_frames * (1 - TRUNCATION_SLACK) - 2:
        # The stream just ended early (a file cut short after its index): not a short trailer.
        raise failed(f"truncated video: decoded {n_frames} of {info.n_frames} frames "
                     f"(the count its header declares)")
    t = time.perf_counter()
    n_closed = len(detector.boundaries)
    shot_list = detector.finish()
    for start, end in detector.boundaries[n_closed:]:  # released by finish(): close them too
        picker.close(start, end)
    picker.close(n_frames)
    spent["detect"] += time.perf_counter() - t
    timings["decode"] = time.perf_counter() - t0 - sum(spent.values())
    timings.update(spent)

    clip_list = shots_to_clips(shot_list, shots.drop_edge_frames, 1)
    if len(clip_list) < shots.min_shots:
        raise excluded(f"{len(clip_list)} shots < {shots.min_shots}")
    clips = np.asarray(clip_list, np.int64).reshape(-1, 2)  # (C, 2)

    features: dict[str, np.ndarray] = {}
    if scene is not None:
        positions, rows = scene_rows.arrays()
        features["scene"] = mean_in_ranges(positions, rows, clips)  # (C, 180)
    if motion is not None:
        features["motion"] = _motion_per_clip(motion, motion_rows, clips, shots, fps)

    t = time.perf_counter()
    audio, audio_frames, has_audio = _audio_per_clip(path, info, clips, video, experts)
    timings["audio"] = time.perf_counter() - t

    h, w = video.height, video.width
    frames = np.zeros((len(clips), n_pick, h, w, 3), np.uint8)  # (C, F, h, w, 3)
    for c, start in enumerate(clips[:, 0]):
        picked = picker.picked.get(int(start))
        if picked is not None:
            frames[c] = picked
    thumb = thumbnail(frames, clips)
    frames = frames[:, :n_cnn]  # (C, F, h, w, 3): no frames travel without the CNN
    timings["total"] = time.perf_counter() - t0
    return TrailerFeatures(
        info=info,
        shots=shot_list,
        clips=clips,
        features=features,
        audio=audio,
        audio_frames=audio_frames,
        has_audio=has_audio,
        frames=frames,
        thumbnail=thumb,
        timings_s=timings,
    )


def thumbnail(frames: np.ndarray, clips: np.ndarray, width: int = THUMBNAIL_WIDTH) -> bytes | None:
    """A small JPEG of a trailer: the middle sampled frame of its longest clip, at most
    ``width`` px wide. ``frames (C, F, h, w, 3)`` uint8 RGB, ``clips (C, 2)`` [start, end).
    None when there is no frame (or it cannot be encoded)."""
    import cv2

    if frames.ndim != 5 or frames.shape[0] == 0 or frames.shape[1] == 0:
        return None
    c = int(np.argmax(clips[:, 1] - clips[:, 0]))
    frame = frames[c, frames.shape[1] // 2]  # (h, w, 3) RGB
    h, w = frame.shape[:2]
    if w > width:
        frame = cv2.resize(frame, (width, max(1, round(h * width / w))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    return buf.tobytes() if ok else None


def _motion_per_clip(
    motion: MotionExpert, store: _Rows, clips: np.ndarray, shots: ShotsConfig, fps: float
) -> np.ndarray:
    """Motion vectors ``(C, 30)``: pairs with both frames inside the clip, tempo of the shot."""
    positions, rows = store.arrays()
    out = np.zeros((len(clips), motion.dim), np.float32)
    if len(positions) == 0:
        return out
    pair_ranges = np.stack([clips[:, 0], clips[:, 1] - 1], axis=1)  # pair t needs t + 1 < end
    lo, hi = rows_in_ranges(positions, pair_ranges)
    shot_len = clips[:, 1] - clips[:, 0] + 2 * shots.drop_edge_frames
    for c in range(len(clips)):
        if hi[c] > lo[c]:
            clip_rows = rows[lo[c] : hi[c]]
        else:  # clip too short for a sampled pair: nearest pair
            mid = (clips[c, 0] + clips[c, 1] - 1) // 2
            clip_rows = rows[nearest(positions, np.array([mid]))]
        out[c] = motion.aggregate(clip_rows, int(shot_len[c]), fps)
    return out


def _audio_per_clip(
    path: PathLike, info: VideoInfo, clips: np.ndarray, video: VideoConfig,
    experts: ExpertsConfig,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Audio rows ``(C, A, 128)``, real counts ``(C,)`` int32 and whether audio was used.

    A clip takes the 0.96 s examples whose centre lies inside it (evenly subsampled to ``A``);
    a clip shorter than that takes the example under its midpoint.
    """
    n_slots = experts.max_audio_frames
    out = np.zeros((len(clips), n_slots, AudioExpert.dim), np.float32)
    counts = np.zeros(len(clips), np.int32)
    if "audio" not in experts.names or not info.has_audio or n_slots == 0:
        return out, counts, False
    try:
        # no more audio than the video lasts (a long or lying audio track is cut)
        wave = load_audio(path, video.audio_rate,
                          max_s=min(info.duration_s, video.max_duration_s) + EXAMPLE_S)
    except TrailerError as err:  # broken audio does not fail a readable video
        log.warning("%s: %s; indexing without audio", path, err.reason)
        return out, counts, False
    if wave is None:
        return out, counts, False
    examples = AudioExpert(experts)(log_mel_frames(wave, video.audio_rate))  # (N, 128)
    if len(examples) == 0:
        return out, counts, True
    centres = (np.arange(len(examples)) + 0.5) * EXAMPLE_S  # (N,) seconds
    seconds = clips.astype(np.float64) / info.fps  # (C, 2)
    lo = np.searchsorted(centres, seconds[:, 0], side="left")
    hi = np.searchsorted(centres, seconds[:, 1], side="left")
    for c in range(len(clips)):
        if hi[c] > lo[c]:
            chosen = np.arange(lo[c], hi[c])
            if chosen.size > n_slots:
                chosen = chosen[evenly_spaced(0, chosen.size, n_slots)]
        else:
            mid = seconds[c].mean()
            chosen = np.array([min(int(mid // EXAMPLE_S), len(examples) - 1)])
        out[c, : chosen.size] = examples[chosen]
        counts[c] = chosen.size
    return out, counts, True
