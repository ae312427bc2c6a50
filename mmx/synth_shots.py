"""Hard synthetic shot-test clips with exact per-transition truth.

Owns :func:`write_shot_clip` / :func:`generate_shot_archive`: videos built to break shot
detectors, with the truth of every transition and every trap written beside them. Each shot
looks at a *set*: a large canvas (a smooth colour field in a 2–3 colour palette, a mid-scale
texture and a few dozen shapes in palette colours) seen through a moving viewport (pan, tilt,
slow zoom, a little shake), with a foreground object crossing it and sensor noise. Between
shots:

* ``cut``: a hard cut to another set;
* ``same_set_cut``: a hard cut to another framing of the *same* set (same palette and texture;
  the viewport moves by ≥ 0.8 of its width or changes scale by ≥ 1.5x), which a colour-based
  content score barely sees;
* ``dissolve``: a cross-fade of 8–12 frames, both shots moving under it;
* ``fade``: fade to black (4–10 frames), 1–4 black frames, fade in (4–10 frames).

Inside shots, as traps (no boundary): 1–2-frame white ``flash`` es, ``whip_pan`` s (the
viewport slides 0.7–1.3 of its width across the same set in 4–7 motion-blurred frames), and,
untracked because they span most of a shot, lighting ramps (gain 0.5–1.5x over 12–36 frames)
and camera motion. A gradual transition's span ``[start, end)`` holds its mixed frames: the
last frame of the old shot is ``start - 1`` and the first clean frame of the new one is
``end``; a cut has ``start == end`` = the new shot's first frame.

Pure numpy/OpenCV plus PyAV for encoding (H.264, like real trailers); no Ray.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SHOTS_SYNTH_VERSION = 2
TRANSITION_KINDS = ("cut", "same_set_cut", "dissolve", "fade")
GRADUAL_KINDS = ("dissolve", "fade")
TRAP_KINDS = ("flash", "whip_pan")
# Share of each transition kind (the archive had 86% hard cuts, ~10% of them same-set,
# 10% dissolves, 4% fades; same-set cuts and fades are over-sampled here so that their recall
# rests on more than a handful of examples).
DEFAULT_MIX = {"cut": 0.62, "same_set_cut": 0.16, "dissolve": 0.13, "fade": 0.09}
CANVAS_SCALE = 3.2  # the set canvas is this many viewport widths at the widest framing


@dataclass(frozen=True)
class Transition:
    """One true shot boundary: ``kind`` in :data:`TRANSITION_KINDS`; frames ``[start, end)``
    are mixed (gradual) or ``start == end`` is the first frame of the new shot (cut)."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Trap:
    """Something inside a shot that is not a boundary: ``kind`` in :data:`TRAP_KINDS`,
    affected frames ``[start, end)``."""

    kind: str
    start: int
    end: int


@dataclass
class ShotClip:
    """A generated clip and its truth."""

    path: Path
    fps: float
    n_frames: int
    width: int
    height: int
    transitions: list[Transition] = field(default_factory=list)
    traps: list[Trap] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = self.path.name
        return d

    @classmethod
    def from_json(cls, d: dict, root: Path) -> ShotClip:
        return cls(path=root / d["path"], fps=d["fps"], n_frames=d["n_frames"],
                   width=d["width"], height=d["height"],
                   transitions=[Transition(**t) for t in d["transitions"]],
                   traps=[Trap(**t) for t in d["traps"]])


# --------------------------------------------------------------------------------- sets
def _palette(rng: np.random.Generator) -> np.ndarray:
    """2–3 RGB colours of neighbouring hues, float32 ``(K, 3)`` in 0..255."""
    k = int(rng.integers(2, 4))
    hue = rng.uniform(0, 180)
    hues = (hue + rng.uniform(-25, 25, k)) % 180
    sats = rng.uniform(60, 230, k)
    vals = rng.uniform(50, 235, k)
    hsv = np.stack([hues, sats, vals], axis=1).astype(np.uint8)[None]  # (1, K, 3)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in ~[-1, 1], float32 ``(h, w)``, about ``cells`` blobs across."""
    ch, cw = max(2, round(cells * h / w)), max(2, cells)
    small = rng.uniform(-1, 1, (ch, cw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_set(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A set canvas, uint8 RGB ``(h, w, 3)``: palette field, texture and shapes."""
    pal = _palette(rng)
    field_ = (_noise(rng, h, w, 4) + 1) / 2 * (len(pal) - 1)  # (h, w) in [0, K-1]
    lo = np.clip(np.floor(field_).astype(np.int64), 0, len(pal) - 2)
    frac = np.clip(field_ - lo, 0, 1)[..., None]
    img = pal[lo] * (1 - frac) + pal[lo + 1] * frac  # (h, w, 3)
    img += 22 * _noise(rng, h, w, int(rng.integers(20, 60)))[..., None]  # mid-scale texture
    for _ in range(int(rng.integers(25, 60))):  # shapes in shades of the palette
        colour = pal[rng.integers(len(pal))] * rng.uniform(0.45, 1.35)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.uniform(0.01, 0.06) * w)
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(img, (x, y), size, colour.tolist(), -1)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + size * 2, y + int(size * rng.uniform(0.5, 3))),
                          colour.tolist(), -1)
        else:
            cv2.line(img, (x, y), (x + int(rng.integers(-3, 4) * size),
                                   y + int(rng.integers(-3, 4) * size)),
                     colour.tolist(), max(1, size // 4))
    return np.clip(img, 0, 255).astype(np.uint8)  # uint8: warping it is ~10x cheaper


# ------------------------------------------------------------------------------- shots
@dataclass
class _Shot:
    """One shot's camera path over a set, rendered frame by frame."""

    canvas: np.ndarray  # (Hc, Wc, 3) uint8
    set_id: int
    n: int  # frames
    cx: np.ndarray  # (n,) viewport centre x on the canvas, px
    cy: np.ndarray  # (n,)
    vw: np.ndarray  # (n,) viewport width on the canvas, px
    blur: np.ndarray  # (n,) horizontal motion blur length, output px
    gain: np.ndarray  # (n,) lighting gain
    obj: tuple | None  # (colour, radius, x0, y0, vx, vy) foreground object, output px
    shake: float


def _framing(rng: np.random.Generator, canvas: np.ndarray, width: int) -> tuple:
    """A random viewport (cx, cy, vw) that fits the canvas, with room to move."""
    hc, wc = canvas.shape[:2]
    vw = rng.uniform(0.17, 0.31) * wc  # about 1:1 with the output at 0.24
    vh = vw * 9 / 16
    cx = rng.uniform(vw / 2, wc - vw / 2)
    cy = rng.uniform(vh / 2, hc - vh / 2)
    return cx, cy, vw


def _new_framing(rng: np.random.Generator, canvas: np.ndarray, width: int,
                 old: tuple) -> tuple:
    """A framing of the same set clearly unlike ``old``: moved by ≥ 0.8 of the viewport width
    or scaled by ≥ 1.5x."""
    for _ in range(200):
        cx, cy, vw = _framing(rng, canvas, width)
        moved = np.hypot(cx - old[0], cy - old[1]) >= 0.8 * max(vw, old[2])
        scaled = abs(np.log(vw / old[2])) >= np.log(1.5)
        if moved or scaled:
            return cx, cy, vw
    return cx, cy, vw


def _plan_shot(rng: np.random.Generator, canvas: np.ndarray, set_id: int, n: int,
               framing: tuple, width: int, height: int, head: int,
               tail: int, p_flash: float = 0.3,
               p_whip: float = 0.22) -> tuple[_Shot, list[Trap]]:
    """Camera path, lighting and traps of one shot of ``n`` frames (trap frames are local).

    The first ``head`` and last ``tail`` frames are mixed into transitions: traps stay at
    least 3 frames away from them."""
    lo, hi = head + 3, n - tail - 3  # traps go inside [lo, hi)
    hc, wc = canvas.shape[:2]
    cx0, cy0, vw0 = framing
    t = np.arange(n, dtype=np.float64)
    moving = rng.uniform() < 0.75
    speed = rng.uniform(0.002, 0.02) * vw0 if moving else 0.0  # canvas px per frame
    angle = rng.uniform(0, 2 * np.pi)
    zoom = rng.uniform(-0.006, 0.006) if rng.uniform() < 0.35 else 0.0
    cx = cx0 + speed * np.cos(angle) * t
    cy = cy0 + speed * np.sin(angle) * t
    vw = vw0 * np.exp(zoom * t)
    blur = np.zeros(n)
    traps: list[Trap] = []
    length = int(rng.integers(4, 8))
    if hi - lo >= length + 6 and rng.uniform() < p_whip:  # whip pan to another part of the set
        k = int(rng.integers(lo + 3, hi - length - 2))
        dist = rng.uniform(0.7, 1.3) * vw0
        room_right = wc - cx[k] - vw0 / 2
        sign = 1.0 if room_right > cx[k] - vw0 / 2 else -1.0
        ease = 0.5 - 0.5 * np.cos(np.pi * (np.arange(1, length + 1) / length))  # (length,)
        offset = np.concatenate([np.zeros(k), sign * dist * ease,
                                 np.full(n - k - length, sign * dist)])
        step = np.abs(np.diff(np.concatenate([[0.0], offset])))  # canvas px per frame
        cx = cx + offset
        blur = step * width / vw  # output px
        traps.append(Trap("whip_pan", k, k + length))
    gain = np.ones(n)
    if n >= 20 and rng.uniform() < 0.25:  # lighting ramp
        length = int(rng.integers(12, min(36, n - 2) + 1))
        k = int(rng.integers(0, n - length + 1))
        g1 = rng.uniform(0.5, 1.5)
        gain[k : k + length] = np.linspace(1, g1, length)
        gain[k + length :] = g1
    flashes = []
    length = int(rng.integers(1, 3))
    if hi - lo >= length + 1 and rng.uniform() < p_flash:
        k = int(rng.integers(lo, hi - length + 1))
        if not any(tr.start - 3 <= k + length and k <= tr.end + 3 for tr in traps):
            flashes.append((k, length, rng.uniform(0.7, 1.0)))
            traps.append(Trap("flash", k, k + length))
    obj = None
    if rng.uniform() < 0.5:
        colour = rng.uniform(0, 255, 3)
        radius = rng.uniform(0.04, 0.12) * height
        obj = (colour, radius, rng.uniform(0, width), rng.uniform(0, height),
               rng.uniform(-0.02, 0.02) * width, rng.uniform(-0.015, 0.015) * height)
    # keep the viewport on the canvas (a pan that would leave it slides along its border)
    vw = np.clip(vw, 0.05 * wc, 0.95 * wc)
    vh = vw * height / width
    cx = np.clip(cx, vw / 2, wc - vw / 2)
    cy = np.clip(cy, vh / 2, hc - vh / 2)
    shot = _Shot(canvas, set_id, n, cx, cy, vw, blur, gain, obj,
                 shake=rng.uniform(0.0, 0.004) if rng.uniform() < 0.25 else 0.0)
    shot.flashes = flashes  # type: ignore[attr-defined]
    return shot, traps


def _render(shot: _Shot, i: int, width: int, height: int,
            rng: np.random.Generator) -> np.ndarray:
    """Frame ``i`` of a shot, float32 RGB ``(height, width, 3)`` (before noise and encoding)."""
    s = width / shot.vw[i]  # canvas px -> output px
    jx, jy = rng.normal(0, shot.shake * shot.vw[i], 2) if shot.shake else (0.0, 0.0)
    tx = width / 2 - s * (shot.cx[i] + jx)
    ty = height / 2 - s * (shot.cy[i] + jy)
    m = np.array([[s, 0, tx], [0, s, ty]], np.float32)
    img = cv2.warpAffine(shot.canvas, m, (width, height), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    if shot.obj is not None:
        colour, radius, x0, y0, vx, vy = shot.obj
        x, y = (x0 + vx * i) % width, (y0 + vy * i) % height
        cv2.circle(img, (int(x), int(y)), int(radius), colour.tolist(), -1, cv2.LINE_AA)
    k = round(float(shot.blur[i]))
    if k >= 2:
        img = cv2.blur(img, (k, 1))
    img *= shot.gain[i]
    for start, length, alpha in shot.flashes:  # type: ignore[attr-defined]
        if start <= i < start + length:
            img = img * (1 - alpha) + np.array([255, 250, 240], np.float32) * alpha
    return img


# ----------------------------------------------------------------------------- clips
def _pick_kind(rng: np.random.Generator, mix: dict[str, float]) -> str:
    kinds = list(mix)
    p = np.asarray([mix[k] for k in kinds], np.float64)
    return kinds[int(rng.choice(len(kinds), p=p / p.sum()))]


def render_shot_clip(seed: int, *, n_shots: int = 24, width: int = 320, height: int = 180,
                     fps: float = 24.0, mix: dict[str, float] | None = None,
                     min_len: int = 10, max_len: int = 72, kinds: list[str] | None = None,
                     p_flash: float = 0.3, p_whip: float = 0.22):
    """Frames and truth of one clip.

    Args:
        seed: everything random derives from it.
        n_shots: shots in the clip (``len(kinds) + 1`` when ``kinds`` is given).
        mix: share of each transition kind (default :data:`DEFAULT_MIX`).
        min_len, max_len: shot lengths in frames (half the shots are shorter than 30).
        kinds: the transitions in order, instead of drawing them from ``mix``.
        p_flash, p_whip: chance that a shot holds a white flash / a whip pan.

    Returns:
        ``(frames, transitions, traps)``: a list of uint8 RGB frames ``(height, width, 3)``,
        the true boundaries and the traps, frame indices global.
    """
    rng = np.random.default_rng(seed)
    mix = mix or DEFAULT_MIX
    hc = int(height * CANVAS_SCALE * 1.3)
    wc = int(width * CANVAS_SCALE * 1.3)
    sets: list[np.ndarray] = []

    def new_set() -> int:
        sets.append(make_set(rng, hc, wc))
        return len(sets) - 1

    if kinds is not None:
        kinds = list(kinds)
        n_shots = len(kinds) + 1
    else:
        kinds = [_pick_kind(rng, mix) for _ in range(n_shots - 1)]
    # frames of the outgoing (tail) and incoming (head) shot mixed by each transition
    mixing: list[tuple[int, int, int]] = []  # (tail of shot i, black frames, head of shot i+1)
    for kind in kinds:
        if kind == "dissolve":
            k = int(rng.integers(8, 13))
            mixing.append((k, 0, k))
        elif kind == "fade":
            mixing.append((int(rng.integers(4, 11)), int(rng.integers(1, 5)),
                           int(rng.integers(4, 11))))
        else:
            mixing.append((0, 0, 0))
    # trailers have many short shots and a few long ones
    lengths = np.where(rng.uniform(size=n_shots) < 0.5,
                       rng.integers(min_len, max(30, min_len + 1), n_shots),
                       rng.integers(min_len, max_len + 1, n_shots))
    plans: list[tuple[_Shot, list[Trap]]] = []
    set_id = new_set()
    framing = _framing(rng, sets[set_id], width)
    for i in range(n_shots):
        if i > 0:
            if kinds[i - 1] == "same_set_cut":
                framing = _new_framing(rng, sets[set_id], width, framing)
            else:
                set_id = new_set()
                framing = _framing(rng, sets[set_id], width)
        head = mixing[i - 1][2] if i > 0 else 0
        tail = mixing[i][0] if i < n_shots - 1 else 0
        n = max(int(lengths[i]), head + tail + min_len)
        plans.append(_plan_shot(rng, sets[set_id], set_id, n, framing, width, height,
                                head, tail, p_flash, p_whip))

    frames: list[np.ndarray] = []
    transitions: list[Transition] = []
    traps: list[Trap] = []
    renders = [[_render(shot, j, width, height, rng) for j in range(shot.n)]
               for shot, _ in plans]
    for i, (shot, shot_traps) in enumerate(plans):
        own = renders[i]
        head = mixing[i - 1][2] if i > 0 else 0
        tail = mixing[i][0] if i < n_shots - 1 else 0
        base = len(frames) - head  # global index of this shot's frame 0 (head already out)
        traps.extend(Trap(t.kind, base + t.start, base + t.end) for t in shot_traps)
        frames.extend(own[head : shot.n - tail])
        if i == n_shots - 1:
            break
        kind = kinds[i]
        start = len(frames)
        nxt = renders[i + 1]
        out_n, black, in_n = mixing[i]
        if kind == "dissolve":
            for j in range(out_n):
                a = (j + 1) / (out_n + 1)
                frames.append(own[shot.n - out_n + j] * (1 - a) + nxt[j] * a)
        elif kind == "fade":
            for j in range(out_n):
                frames.append(own[shot.n - out_n + j] * (1 - (j + 1) / (out_n + 1)))
            frames.extend(np.zeros_like(own[0]) for _ in range(black))
            for j in range(in_n):
                frames.append(nxt[j] * ((j + 1) / (in_n + 1)))
        transitions.append(Transition(kind, start, len(frames)))
    # sensor noise: a bank of noise images, one drawn per frame (cheap, and never static)
    bank = rng.normal(0, rng.uniform(1.0, 3.0), (8, height, width, 3)).astype(np.float32)
    picks = rng.integers(0, len(bank), len(frames))
    out = [np.clip(f + bank[k], 0, 255).astype(np.uint8) for f, k in zip(frames, picks)]
    return out, transitions, traps


def encode_frames(path: Path, frames: list[np.ndarray], fps: float, crf: int = 23) -> None:
    """H.264 (x264 veryfast, B-frames) MP4 of uint8 RGB frames, written atomically."""
    h, w = frames[0].shape[:2]
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                            options={"preset": "veryfast", "crf": str(crf),
                                     "x264-params": "keyint=48"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.thread_count = 1
        for n, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = n
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
    os.replace(tmp, path)


def write_shot_clip(path: str | os.PathLike[str], seed: int, **kwargs) -> ShotClip:
    """Render, encode and describe one clip (see :func:`render_shot_clip` for ``kwargs``)."""
    path = Path(path)
    fps = float(kwargs.get("fps", 24.0))
    frames, transitions, traps = render_shot_clip(seed, **kwargs)
    encode_frames(path, frames, fps)
    h, w = frames[0].shape[:2]
    return ShotClip(path, fps, len(frames), w, h, transitions, traps)


def generate_shot_archive(out_dir: str | os.PathLike[str], n: int, *, seed: int = 0,
                          **kwargs) -> list[ShotClip]:
    """``n`` clips under ``out_dir`` plus ``truth.json``; reused when already complete."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    truth_path = root / "truth.json"
    params = {"version": SHOTS_SYNTH_VERSION, "n": n, "seed": seed,
              **{k: v for k, v in kwargs.items()}}
    if truth_path.exists():
        saved = json.loads(truth_path.read_text())
        if saved.get("params") == params and all((root / c["path"]).exists()
                                                  for c in saved["clips"]):
            return [ShotClip.from_json(c, root) for c in saved["clips"]]
    clips = [write_shot_clip(root / f"shots_{i:03d}.mp4", seed * 100_003 + i, **kwargs)
             for i in range(n)]
    tmp = truth_path.with_name("truth.json.part")
    tmp.write_text(json.dumps({"params": params, "clips": [c.to_json() for c in clips]}))
    os.replace(tmp, truth_path)
    return clips


# ----------------------------------------------------------------------------- scoring
def score_boundaries(clip: ShotClip, found: list[int], tol: int = 2) -> dict:
    """Match detected boundaries (frame where each new shot starts; for a gradual transition
    any frame of its span) against the clip's truth.

    A cut matches a detection within ``tol`` frames; a gradual transition ``[start, end)``
    matches one anywhere in ``[start, end]`` (``end`` = its first clean frame). Each truth
    and each detection is matched at most once (nearest first). Unmatched detections are
    false boundaries; those within ``tol`` frames of a trap are counted against that trap.

    Returns:
        counts: ``tp``, ``fp``, ``fn``, per kind ``{kind: [found, total]}``, per trap kind
        ``{kind: [traps with a false boundary, total]}``.
    """
    found = sorted(int(f) for f in found)
    used = [False] * len(found)
    per_kind = {k: [0, 0] for k in TRANSITION_KINDS}
    for tr in clip.transitions:
        lo, hi = (tr.start - tol, tr.start + tol) if tr.start == tr.end else (tr.start, tr.end)
        centre = (tr.start + tr.end) / 2
        best = None
        for i, f in enumerate(found):
            if not used[i] and lo <= f <= hi and (best is None or
                                                  abs(f - centre) < abs(found[best] - centre)):
                best = i
        per_kind[tr.kind][1] += 1
        if best is not None:
            used[best] = True
            per_kind[tr.kind][0] += 1
    false = [f for f, u in zip(found, used) if not u]
    per_trap = {k: [0, 0] for k in TRAP_KINDS}
    for trap in clip.traps:
        per_trap[trap.kind][1] += 1
        per_trap[trap.kind][0] += any(trap.start - tol <= f <= trap.end + tol for f in false)
    tp = sum(v[0] for v in per_kind.values())
    return {"tp": tp, "fp": len(false), "fn": len(clip.transitions) - tp,
            "per_kind": per_kind, "per_trap": per_trap}


def summarise_scores(scores: list[dict]) -> dict:
    """Add up :func:`score_boundaries` results: F1, precision, recall per kind, trap rates."""
    tp = sum(s["tp"] for s in scores)
    fp = sum(s["fp"] for s in scores)
    fn = sum(s["fn"] for s in scores)
    out: dict = {"n_clips": len(scores), "n_transitions": tp + fn, "tp": tp, "fp": fp, "fn": fn,
                 "precision": round(tp / max(tp + fp, 1), 4),
                 "recall": round(tp / max(tp + fn, 1), 4),
                 "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4), "recall_by_kind": {},
                 "false_at_traps": {}}
    for kind in TRANSITION_KINDS:
        hit = sum(s["per_kind"][kind][0] for s in scores)
        n = sum(s["per_kind"][kind][1] for s in scores)
        out["recall_by_kind"][kind] = {"recall": round(hit / max(n, 1), 4), "found": hit, "n": n}
    for kind in TRAP_KINDS:
        bad = sum(s["per_trap"][kind][0] for s in scores)
        n = sum(s["per_trap"][kind][1] for s in scores)
        out["false_at_traps"][kind] = {"rate": round(bad / max(n, 1), 4), "false": bad, "n": n}
    return out
