"""Hard cuts, gradual transitions and their look-alikes, from tiny frames, in one pass.

Owns the ``hybrid`` detector (:class:`TransitionDetector`), built for what a content score
misses or invents (PITFALLS: white flashes, dissolves, same-set cuts):

* every frame is reduced to ``signal_width`` px (32x18 uint8 RGB for 16:9) by 2:1 area
  halvings of the whole chunk, and three numbers per frame come from a few OpenCV calls over
  the chunk: ``d1[t] = mean |x_t - x_{t-1}|``, ``dh[t] = mean |x_t - x_{t-h}|`` for
  ``h = gradual_lag``, and ``lin[t]``, how far the window's middle frame ``x_{t-h/2}`` is from
  the mean of its ends, relative to ``dh[t]``; plus each frame's mean level ``mu[t]``. Only the
  few frames that pass these cheap tests are looked at again (from the last ``h + 10`` small
  frames kept), so Python touches candidates, not frames;
* a **hard cut** at ``t``: ``d1[t] >= cut_threshold`` and at least ``cut_isolation`` times
  both neighbours ``d1[t-1], d1[t+1]`` (a whip pan or fast motion spreads its change over
  several frames; a cut is one spike) — unless a frame up to 3 before ``t`` is close to a frame
  up to 3 after it (mean difference below ``flash_similarity`` of the spike): that is a
  1–2-frame flash, not a cut;
* a **gradual transition** (dissolve, fade): the window ``(t - h, t]`` is a straight line from
  one end to the other (``lin[t] <= gradual_linearity``: a cross-fade's middle frame is the
  mean of its ends; a pan's or a whip pan's is not) *and* its ends differ by at least
  ``gradual_threshold`` once both are scaled to mean level 128 (a lighting ramp is linear too,
  but its ends differ only in brightness); or frame ``t`` is black (a fade's middle). Passing
  windows and black frames no more than ``h`` apart form one event. Its span is where the
  per-frame change ``d1`` rises above the shot's own (a steady pan has no such frames: no
  event), widened over the frames that darken into and brighten out of black; it ends as one
  boundary ``(start, end)``, and its frames belong to neither shot. A fade from black at the
  start or to black at the end of a video is no boundary.

Measured (``benchmarks/shots.py``): ~46 µs of one core per 256x144 frame, half the cost of
the chunked PySceneDetect ``adaptive`` scorer and a few percent of decoding a 720p frame. No
Ray, no torch.
"""

from __future__ import annotations

import cv2
import numpy as np

LOOK_AHEAD = 4  # frames after t needed to decide on a cut at t (isolation + flash check)
FLASH_SPAN = 3  # frames each side of a spike searched for the frames a flash interrupts
DARK_LEVEL = 4.0  # mean level (0..255) below which brightness normalisation stops
FADE_LEVEL = 12.0  # a frame whose mean level (0..255) is below this is black (a fade's middle)
HOT_RATIO = 1.5  # a transition's frames change this much more than the shot before it
FADE_STEP = 0.96  # a fade darkens (brightens) by at least 4% per frame


def downscale(frames: np.ndarray, width: int) -> np.ndarray:
    """uint8 RGB ``(T, H, W, 3)`` -> uint8 ``(T, h, w, 3)`` with ``w = min(width, W)``.

    A power-of-two factor (256x144 -> 32x18) is a few exact 2:1 ``INTER_AREA`` halvings of the
    chunk seen as one tall image (every output row averages rows of a single frame; OpenCV's
    2:1 path is ~2x cheaper than one 8:1 step); other sizes go frame by frame.
    """
    t, h, w = frames.shape[:3]
    width = min(width, w)
    height = max(1, round(h * width / w))
    factor = w // width
    if t and w == width * factor and h == height * factor and factor & (factor - 1) == 0:
        tall = np.ascontiguousarray(frames).reshape(t * h, w, 3)
        while tall.shape[1] > width:  # (t * h', w', 3) -> (t * h' / 2, w' / 2, 3)
            tall = cv2.resize(tall, (tall.shape[1] // 2, tall.shape[0] // 2),
                              interpolation=cv2.INTER_AREA)
        return tall.reshape(t, height, width, 3)
    if t == 0:
        return np.zeros((0, height, width, 3), np.uint8)
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                     for f in frames])


def _row_means(diff: np.ndarray) -> np.ndarray:
    """Mean of every row of a uint8 ``(N, P)`` array, float32 ``(N,)`` (exact sums)."""
    if len(diff) == 0:
        return np.zeros(0, np.float32)
    sums = cv2.reduce(diff, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)  # (N, 1)
    return sums[:, 0].astype(np.float32) / diff.shape[1]


class TransitionDetector:
    """Streaming hard-cut and gradual-transition detector on tiny frames.

    Args:
        signal_width: frames are reduced to this width (px) before any comparison.
        cut_threshold: minimum ``d1`` (mean absolute RGB difference, 0..255) of a hard cut.
        cut_isolation: a cut's ``d1`` is at least this multiple of its neighbours'.
        flash_similarity: a spike is a flash when frames across it differ by less than this
            fraction of the spike.
        gradual_lag: h, frames between the ends of a gradual-transition window.
        gradual_threshold: minimum difference of a window's ends once their brightness is
            equalised (a lighting ramp does not count).
        gradual_linearity: maximum distance of the window's middle frame from the mean of its
            ends, as a fraction of the ends' difference.
        min_gap: boundaries closer than this (frames) are one (the shorter-shot rule).

    ``push(first, frames)`` returns boundaries that became final, as ``(start, end)`` frame
    spans in increasing order: ``start == end`` for a cut (the new shot starts there),
    ``[start, end)`` the mixed frames of a gradual transition.
    """

    def __init__(self, *, signal_width: int = 32, cut_threshold: float = 10.0,
                 cut_isolation: float = 2.5, flash_similarity: float = 0.3,
                 gradual_lag: int = 8, gradual_threshold: float = 18.0,
                 gradual_linearity: float = 0.2, min_gap: int = 6) -> None:
        self.width = signal_width
        self.cut_threshold = cut_threshold
        self.cut_isolation = cut_isolation
        self.flash_similarity = flash_similarity
        self.h = max(2, int(gradual_lag))
        self.gradual_threshold = gradual_threshold
        self.gradual_linearity = gradual_linearity
        self.min_gap = max(1, int(min_gap))
        self.keep = self.h + 2 * LOOK_AHEAD + 2  # frames kept from one chunk for the next
        self.recent = np.zeros((0, 0), np.uint8)  # (N, P) small frames from frame recent_first
        self.recent_first = 0
        self.n = 0  # frames seen
        cap = 4096
        self.d1 = np.zeros(cap, np.float32)  # mean |x_t - x_{t-1}|
        self.dh = np.zeros(cap, np.float32)  # mean |x_t - x_{t-h}|
        self.lin = np.ones(cap, np.float32)  # mean |x_{t-h/2} - (x_t + x_{t-h}) / 2| / dh[t]
        self.mu = np.zeros(cap, np.float32)  # mean level of frame t (0..255)
        self.cursor = 1  # next frame to decide on
        self.last = 0  # the latest boundary position (frame the current shot starts at)
        self.event: list[int] = []  # window ends t (or black frames) of the open gradual event
        self.boundaries: list[tuple[int, int]] = []

    # ------------------------------------------------------------------ signals
    def _grow(self, n: int) -> None:
        if n <= len(self.d1):
            return
        cap = max(n, 2 * len(self.d1))
        for name, fill in (("d1", 0.0), ("dh", 0.0), ("lin", 1.0), ("mu", 0.0)):
            old = getattr(self, name)
            new = np.full(cap, fill, np.float32)
            new[: len(old)] = old
            setattr(self, name, new)

    def _signals(self, frames: np.ndarray) -> None:
        """Per-frame signals of a chunk (uint8 RGB ``(T, H, W, 3)``), a few OpenCV calls each
        over the whole chunk."""
        small = downscale(frames, self.width)
        t = len(small)
        flat = small.reshape(t, -1)  # (T, P) uint8
        c = len(self.recent)
        x = flat if c == 0 else np.concatenate([self.recent, flat])  # (c + T, P)
        first = self.n
        self._grow(first + t)
        self.mu[first : first + t] = cv2.reduce(flat, 1, cv2.REDUCE_AVG,
                                                dtype=cv2.CV_32F)[:, 0]
        lo = max(1, c)  # rows of x whose previous frame is known
        self.d1[first + lo - c : first + t] = _row_means(cv2.absdiff(x[lo:], x[lo - 1 : -1]))
        h, m = self.h, self.h // 2
        lo = max(h, c)
        if lo < len(x):
            ends = _row_means(cv2.absdiff(x[lo:], x[lo - h : len(x) - h]))  # (n,)
            mean = cv2.addWeighted(x[lo:], 0.5, x[lo - h : len(x) - h], 0.5, 0.0)
            mid = _row_means(cv2.absdiff(x[lo - m : len(x) - m], mean))
            self.dh[first + lo - c : first + t] = ends
            self.lin[first + lo - c : first + t] = mid / np.maximum(ends, 1.0)
        self.recent, self.recent_first = x, first - c  # trimmed once decided (push)
        self.n += t

    def _frame(self, i: int) -> np.ndarray:
        """Small frame ``i`` as float32 ``(P,)`` (must be among the recent frames)."""
        return self.recent[i - self.recent_first].astype(np.float32)

    # ---------------------------------------------------------------- decisions
    def push(self, first: int, frames: np.ndarray) -> list[tuple[int, int]]:
        """Feed the next chunk (uint8 RGB ``(T, H, W, 3)``, ``first`` = frames seen so far)."""
        if len(frames):
            self._signals(frames)
        out = self._decide(self.n - LOOK_AHEAD)
        if len(self.recent) > self.keep:  # the next chunk's context
            self.recent = self.recent[-self.keep :].copy()
            self.recent_first = self.n - self.keep
        return out

    def finish(self) -> list[tuple[int, int]]:
        """Decide on the remaining frames; close an open gradual event."""
        out = self._decide(self.n)
        out += self._close_event()
        return out

    def _is_cut(self, t: int) -> bool:
        d1 = self.d1
        spike = float(d1[t])
        nxt = float(d1[t + 1]) if t + 1 < self.n else 0.0
        if spike < self.cut_isolation * max(float(d1[t - 1]), nxt, 0.5):
            return False
        # a flash: some frame a < t is close to some frame b >= t across the spike
        for a in range(max(0, t - FLASH_SPAN, self.recent_first), t):
            xa = self._frame(a)
            for b in range(t + 1 if a == t - 1 else t, min(self.n, a + FLASH_SPAN + 2)):
                if np.abs(self._frame(b) - xa).mean() < self.flash_similarity * spike:
                    return False
        return True

    def _is_gradual(self, t: int) -> bool:
        """Window ``(t - h, t]`` passed the linear-and-large test: is the change more than a
        brightness change? (the ends compared with their mean levels equalised)"""
        if t - self.h < self.last or t - self.h < self.recent_first:
            return False
        a = self._frame(t - self.h) * (128.0 / max(float(self.mu[t - self.h]), DARK_LEVEL))
        b = self._frame(t) * (128.0 / max(float(self.mu[t]), DARK_LEVEL))
        return float(np.abs(b - a).mean()) >= self.gradual_threshold

    def _decide(self, until: int) -> list[tuple[int, int]]:
        """Walk the frames ``[cursor, until)``; only candidates cost Python time."""
        out: list[tuple[int, int]] = []
        lo = self.cursor
        if until <= lo:
            return out
        sl = slice(lo, until)
        dark = self.mu[sl] < FADE_LEVEL
        # on the scale of frames whose mean level is 128 (the exact test, brightness
        # equalised, runs on the few windows that pass)
        level = np.maximum(0.5 * (self.mu[sl] + self.mu[lo - self.h : until - self.h]),
                           DARK_LEVEL) if lo >= self.h else np.full(until - lo, 128.0)
        linear = ((self.dh[sl] * (128.0 / level) >= 0.8 * self.gradual_threshold)
                  & (self.lin[sl] <= self.gradual_linearity))
        spike = self.d1[sl] >= self.cut_threshold
        for k in np.flatnonzero(dark | linear | spike).tolist():
            t = lo + k
            if self.event and t - self.event[-1] > self.h:
                out += self._close_event()
            if dark[k] or (linear[k] and self._is_gradual(t)):
                self.event.append(t)
            elif spike[k] and t - self.last >= self.min_gap and self._is_cut(t):
                out += self._close_event()  # its windows all end before t
                if t - self.last >= self.min_gap:
                    out.append(self._emit(t, t))
        self.cursor = until
        if self.event and until - 1 - self.event[-1] > self.h:
            out += self._close_event()
        return out

    def _emit(self, start: int, end: int) -> tuple[int, int]:
        self.boundaries.append((start, end))
        self.last = max(start, end)
        return (start, end)

    def _close_event(self) -> list[tuple[int, int]]:
        """The open gradual event as one span, or nothing.

        Black frames (a fade's middle) extend the span over the frames that darken before them
        and brighten after them. Other windows contribute the frames of ``[t0 - h, t1]``
        whose per-frame change rises above the shot's own level before the window (a steady
        pan has none: not a transition). A fade from or to black at either end of the video
        is no boundary.
        """
        if not self.event:
            return []
        event, self.event = self.event, []
        mu, d1 = self.mu, self.d1
        spans = []
        dark = [t for t in event if mu[t] < FADE_LEVEL]
        if dark:
            s, e = dark[0], dark[-1] + 1
            while s - 2 >= self.last and mu[s - 1] < FADE_STEP * mu[s - 2]:
                s -= 1
            while e + 1 < self.n and mu[e] < FADE_STEP * mu[e + 1]:
                e += 1
            if s <= max(self.last, 1) or e >= self.n - 1:
                return []  # from or to black at the start or the end: no second shot
            spans.append((s, e))
        windows = [t for t in event if mu[t] >= FADE_LEVEL]
        if windows:
            t0, t1 = windows[0], windows[-1]
            lo = max(self.last, t0 - self.h)
            # the shot's own change: a low quantile of the frames before (a dissolve may
            # already have started at lo: its first windows are not yet linear)
            before = d1[max(self.last + 1, lo - 12) : lo + 1]
            base = float(np.quantile(before, 0.25)) if len(before) else 0.0
            hot = np.flatnonzero(d1[lo + 1 : t1 + 1] > max(HOT_RATIO * base, 1.0)) + lo + 1
            if len(hot) >= 3:
                # d1[s] compares frames s - 1 and s: the mixed frames are [first hot, last hot)
                spans.append((int(hot[0]), int(hot[-1])))
        if not spans:
            return []
        start = max(min(s for s, _ in spans), self.last + 1)
        end = max(max(e for _, e in spans), start + 1)
        if (start + end) // 2 - self.last < self.min_gap:
            return []
        return [self._emit(start, end)]
