"""One trailer in, its shots and CPU features out: the pure core of the decode stage.

Owns :func:`analyse_trailer`. The video is decoded once, forward-only, downscaled in the
decoder, in chunks of ``video.chunk_frames``; every chunk goes to the shot detector and the
cheap CPU experts while it is in memory, then is dropped:

* shot detection sees every frame (:class:`~mmx.shots.ShotDetector`); the frames of a gradual
  transition (dissolve, fade) belong to no shot;
* every ``frames`` expert of ``experts.names`` (:mod:`mmx.experts.registry`) gets the chunk
  through its per-trailer accumulator: the built-in scene descriptor keeps rows of every
  ``experts.scene_stride``-th frame, the optical flow rows of the pairs ``(t, t + 1)`` for every
  ``experts.motion_stride``-th frame ``t``; their small rows are aggregated per clip at the end
  (mean; motion adds spread and tempo);
* a few candidate frames of the shot still open are held (at most
  ``experts.appearance_candidates``, thinned 2:1 when full); when the detector reports the cut
  that closes the shot, ``experts.appearance_frames`` frames near evenly spaced positions of its
  clip are kept and the rest dropped (one frame per clip even without an image expert: the
  trailer's thumbnail, :func:`thumbnail`, is the middle one of its longest clip). ``image``
  experts that run ``inline`` describe them here; those that run in a ``pool`` (the appearance
  CNN) get them later.

So memory is one chunk plus one open shot's candidates plus small per-frame rows, whatever the
trailer's length; only the few frames per clip the appearance CNN needs leave this function
(the CNN runs later, batched across trailers, in an actor). Audio is decoded separately
(PyAV, audio stream only) into 0.96 s log-mel examples that the audio expert describes and that
are assigned to clips by time. No expert is named here: which run, and how, is their
declaration.
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
from mmx.experts.registry import Expert, ExpertPlan, get_expert, plan
from mmx.shots.clips import shots_to_clips
from mmx.shots.detect import ShotDetector
from mmx.video.reader import PathLike, VideoInfo, iter_frames, probe
from mmx.video.sampling import evenly_spaced, nearest

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
    features: dict[str, np.ndarray]  # inline per-clip experts: name -> (C, dim) float32
    audio: np.ndarray  # (C, A, Da) float32 of the audio expert, zero padded (Da = 0: none)
    audio_frames: np.ndarray  # (C,) int32 number of real audio frames per clip (0 = none)
    has_audio: bool
    frames: np.ndarray  # (C, F, h, w, 3) uint8 RGB frames for the pool's image experts
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
    run = plan(experts.names)
    streams = {name: get_expert(name, experts).accumulator(fps, shots) for name in run.frames}
    n_cnn = experts.appearance_frames if run.image else 0  # frames per clip for image experts
    n_pick = max(1, n_cnn)  # one frame per clip at least: the thumbnail's candidates

    detector = ShotDetector(shots, fps)
    picker = _FramePicker(n_pick, experts.appearance_candidates, shots.drop_edge_frames)
    spent = {"detect": 0.0, **{name: 0.0 for name in streams}}
    n_frames = 0
    chunks = iter_frames(path, width=video.width, height=video.height,
                         chunk_frames=video.chunk_frames, backend=video.backend,
                         threads=video.decode_threads, prefetch=video.prefetch_chunks,
                         skip_loop_filter=video.skip_loop_filter)
    with closing(chunks):  # stops the decode thread at once if we raise mid-video
        for first, chunk in chunks:
            n = len(chunk)
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

            for name, stream in streams.items():  # frames experts see the chunk in memory
                t = time.perf_counter()
                stream.add(first, chunk)
                spent[name] += time.perf_counter() - t
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

    features = {name: stream.per_clip(clips) for name, stream in streams.items()}  # (C, D)

    t = time.perf_counter()
    audio, audio_frames, has_audio = _audio_per_clip(path, info, clips, video, experts, run)
    timings["audio"] = time.perf_counter() - t

    h, w = video.height, video.width
    frames = np.zeros((len(clips), n_pick, h, w, 3), np.uint8)  # (C, F, h, w, 3)
    for c, start in enumerate(clips[:, 0]):
        picked = picker.picked.get(int(start))
        if picked is not None:
            frames[c] = picked
    thumb = thumbnail(frames, clips)
    for name in run.inline_image:  # cheap image experts on the sampled frames, here
        t = time.perf_counter()
        features[name] = image_features(get_expert(name, experts), frames[:, :n_cnn])
        timings[name] = time.perf_counter() - t
    # (C, F, h, w, 3): only the pool's image experts need frames to travel on
    frames = frames[:, : n_cnn if run.pool_image else 0]
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


def image_features(expert: Expert, frames: np.ndarray, batch: int = 0) -> np.ndarray:
    """An image expert over the sampled frames of every clip, averaged per clip: uint8
    ``(C, F, h, w, 3)`` → float32 ``(C, dim)``; ``batch`` frames per call (0: all at once)."""
    c, f = frames.shape[:2]
    flat = frames.reshape(c * f, *frames.shape[2:])  # (C·F, h, w, 3)
    step = batch or max(len(flat), 1)
    parts = [expert(flat[i : i + step]) for i in range(0, len(flat), step)]
    emb = np.concatenate(parts) if parts else np.zeros((0, expert.dim), np.float32)
    return emb.reshape(c, f, -1).mean(axis=1).astype(np.float32)  # (C, F, D) → (C, D)


def _audio_per_clip(
    path: PathLike, info: VideoInfo, clips: np.ndarray, video: VideoConfig,
    experts: ExpertsConfig, run: ExpertPlan,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The audio expert's rows ``(C, A, Da)``, real counts ``(C,)`` int32 and whether audio
    was used (``Da = 0`` without an audio expert).

    A clip takes the 0.96 s examples whose centre lies inside it (evenly subsampled to ``A``);
    a clip shorter than that takes the example under its midpoint.
    """
    n_slots = experts.max_audio_frames
    dim = run.dims[run.audio] if run.audio else 0
    out = np.zeros((len(clips), n_slots if dim else 0, dim), np.float32)
    counts = np.zeros(len(clips), np.int32)
    if run.audio is None or not info.has_audio or n_slots == 0:
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
    examples = get_expert(run.audio, experts)(log_mel_frames(wave, video.audio_rate))  # (N, Da)
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
