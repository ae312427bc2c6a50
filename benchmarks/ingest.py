"""Ingest benchmark: decode floor, shot detection, experts and end to end, per core.

    python benchmarks/ingest.py                 # everything, ~6–10 min on 2 busy CPU cores
    python benchmarks/ingest.py --skip-long     # without the 10-minute 1080p memory run
    python benchmarks/ingest.py --repeats 1     # one round of the side-by-side modes

Writes ``benchmarks/results/ingest.json`` (``--out``). Inputs are generated once and cached in
``--work`` (default ``.mmx/bench/ingest``):

* ``trailer_720p_75s.mp4`` (the headline, ``clean``): :func:`mmx.synth.write_trailer` at
  1280x720, 24 fps, ≥ 75 s (H.264 superfast crf 29 + AAC), with its true cuts and dissolves.
  Its flat synthetic shapes make a ~0.6 Mbit/s stream that decodes at ~950 frames/s per core;
* ``trailer_720p_75s_grain.mp4`` (``grain``): the same frames with film-like grain, ~3.5
  Mbit/s, decoding at ~380 frames/s (closer to real trailers; issue 3 measured ~200). Decoding
  dominates there: end to end looks better, but the CLI comparison is bounded by the decoder
  both tools share (the CLI's own cost above decoding is ~0.85 ms/frame here, so even free
  detection could not reach 1.4x). Reported beside the headline, measured in the same rounds;
* ``archive_720p/``: a small archive of clean 720p synthetic trailers (:func:`make_archive`);
* ``long_1080p_10min.mp4``: 10 minutes of 1920x1080 at 24 fps, mostly static shots (one image
  per 10 s shot plus a small moving square; x264 ultrafast), for peak memory.

Every mode runs in its own subprocess (``--worker MODE``), so each reports its own peak RSS
(``ru_maxrss``) and pays its own imports, model loading and a warm-up pass over the shortest
archive trailer outside the timed region (a Ray worker is long-lived; the CLI's start-up is
subtracted likewise, see below). Modes run side by side, interleaved ``--repeats`` times, in
one run, on one core each (1 decoder thread, 1 torch thread, 1 OpenCV thread):

* ``decode``: :func:`mmx.video.iter_frames` into numpy at the ingest's output size
  (``video.width x video.height``) with the configured backend: the physical floor;
* ``shots``: the same reader plus :class:`mmx.shots.ShotDetector` on every frame;
* ``experts``: the experts alone on frames already in memory (decoded untimed first): scene
  and motion at their strides, audio (decode + log-mel), and the appearance CNN on
  ``experts.appearance_frames`` frames per shot;
* ``e2e``: :func:`mmx.ingest.analyse_trailer` (decode once, shots, scene, motion, audio, frame
  picking) plus the appearance CNN on the frames it kept: what one worker does per trailer;
* ``cli``: the ``scenedetect`` console script's default run, ``scenedetect -i FILE
  detect-adaptive`` (plus ``list-scenes`` to get its cuts as CSV).

Rates are frames per CPU-second of the process (all its threads: user + system), which on a
shared machine is far steadier than wall time; wall-clock rates are recorded too. The JSON
keeps each mode's best and median rate over the rounds; the headline ratios are between the
best rates (noise from other work on the machine only ever adds time), and the median of the
ratios taken within each round is given beside them (``paired_median``).

``f1_vs_cli`` compares the cuts of our chunked ``adaptive`` scorer (PySceneDetect's
``AdaptiveDetector`` fed our content scores) with the CLI's at the same downscale (the CLI
detects on frames scaled to 256 px wide; ours then runs on the 256x144 decoded frames), cuts
matching within ``--tolerance`` frames; ``adaptive`` at its default ``shots.detect_width`` is
reported too. The default detector (``hybrid`` since issue 11, which also finds the dissolves
the CLI misses) is timed in the ``shots`` mode and compared with the CLI in
``default_detector_vs_cli``; its accuracy is ``benchmarks/shots.py``'s subject.
Also reported: cuts F1 of both against the synthetic truth, an archive pass (decode, shots and
end to end over every file), and peak RSS of the end-to-end worker on the 10-minute 1080p
input with each decoder backend.

The CNN sees ``experts.appearance_frames`` = 1 frame per clip (the default): one
EfficientNet-Lite0 image costs ~25 ms of one core, a clip here is ~48 frames, so that alone is
~0.5 ms per decoded frame, about half the clean trailer's decode cost; a second frame per clip
would take the clean trailer below 0.5x decode-only
(``end_to_end_vs_decode_estimated_2_frames_per_clip``). On GPU actors, raise it.

Targets (issue 3): ``shots_overhead_vs_decode`` ≤ 0.10, ``shots_vs_cli_speed`` ≥ 1.4,
``f1_vs_cli`` ≥ 0.98, ``end_to_end_vs_decode`` ≥ 0.5, ``peak_rss_mb`` < 2048 (long input).
"""

from __future__ import annotations

import argparse
import csv
import fractions
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ingest.json"
DEFAULT_WORK = ROOT / ".mmx" / "bench" / "ingest"
CLI_WIDTH = 256  # PySceneDetect 0.7 scales every input to 256 px wide (compute_downscale_factor)
ONE_CORE_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OPENCV_FOR_THREADS_NUM": "1",
}


# ----------------------------------------------------------------------------------- inputs
def make_trailer(path: Path, *, seconds: float, width: int, height: int, seed: int) -> dict:
    """A synthetic trailer (mmx.synth) of at least ``seconds``; returns its truth as a dict."""
    from mmx.synth import write_trailer

    n_shots = max(12, round(seconds / 1.45))
    while True:
        t = write_trailer(path, [], seed=seed, n_shots=n_shots, width=width, height=height)
        if t.n_frames >= seconds * t.fps:
            break
        n_shots += max(2, round((seconds * t.fps - t.n_frames) / (1.4 * t.fps)))
    truth = {"n_frames": t.n_frames, "fps": t.fps, "cuts": list(t.cut_frames),
             "dissolves": [list(d) for d in t.dissolves]}
    path.with_suffix(".json").write_text(json.dumps(truth))
    return truth


def add_grain(src: Path, dst: Path, *, sigma: float = 4.0, crf: int = 23) -> None:
    """Re-encode ``src`` with film-like grain (temporal luma noise), audio copied.

    mmx.synth's flat shapes compress to ~0.6 Mbit/s at 720p and decode at ~900 frames/s per
    core; real 720p trailers run at 3-8 Mbit/s and decode at ~200-400/s (issue 3 measured
    ~200). With grain (sigma 4, x264 veryfast, crf 23) the file is ~3.5 Mbit/s and decodes at
    ~380/s here: still cheaper than real footage, so the fixed per-frame costs of detection and
    experts weigh at least as much as in production. Frames and cuts are unchanged.
    """
    import av

    rng = np.random.default_rng(0)
    tmp = dst.with_name(dst.name + ".part")
    with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vs = out.add_stream("libx264", rate=vin.average_rate, options={
            "preset": "veryfast", "crf": str(crf), "x264-params": "keyint=48"})
        vs.width, vs.height, vs.pix_fmt = vin.width, vin.height, "yuv420p"
        vs.codec_context.thread_count = 1
        audio = {s.index: out.add_stream_from_template(s) for s in inp.streams.audio}
        grain = [rng.normal(0, sigma, (vin.height, vin.width, 1)).astype(np.int16)
                 for _ in range(8)]
        n = 0
        for packet in inp.demux():
            if packet.stream.index in audio:
                if packet.dts is not None:
                    packet.stream = audio[packet.stream.index]
                    out.mux(packet)
                continue
            for frame in packet.decode():
                img = frame.to_ndarray(format="rgb24").astype(np.int16) + grain[rng.integers(8)]
                noisy = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8),
                                                   format="rgb24")
                noisy.pts = n
                n += 1
                out.mux(vs.encode(noisy))
        out.mux(vs.encode(None))
    os.replace(tmp, dst)


def make_archive(root: Path, n: int, *, width: int, height: int) -> list[Path]:
    """``n`` synthetic trailers of 12–24 shots (mmx.synth) under ``root``."""
    from mmx.synth import write_trailer

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"trailer_{i:03d}.mp4"
        if not path.exists():
            write_trailer(path, [], seed=100 + i, width=width, height=height)
        paths.append(path)
    return paths


def make_long(path: Path, *, minutes: float, width: int, height: int, shot_s: float = 10.0,
              fps: int = 24) -> dict:
    """A long, cheap-to-encode video: one still image per shot plus a small moving square.

    Encoded with x264 ``ultrafast`` (static blocks are skipped, so this takes a minute or two
    on one core even at 1080p) with a mono 16 kHz AAC track; cuts every ``shot_s`` seconds.
    """
    import av

    rng = np.random.default_rng(0)
    n_frames = round(minutes * 60 * fps)
    shot = round(shot_s * fps)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28",
                                                          "x264-params": "keyint=240"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        aus = out.add_stream("aac", rate=16000, layout="mono")
        aus.bit_rate = 32_000
        base = None
        apos, arate = 0, 16000
        for i in range(n_frames):
            if i % shot == 0:  # a new shot: a new smooth two-colour image
                c0, c1 = rng.uniform(0, 255, (2, 3))
                angle = rng.uniform(0, 2 * np.pi)
                ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
                ramp = ((ramp - ramp.min()) / np.ptp(ramp))[..., None]
                base = (c0 * (1 - ramp) + c1 * ramp).astype(np.uint8)  # (H, W, 3)
                colour = rng.uniform(0, 255, 3).astype(np.uint8)
            img = base.copy()
            s = height // 8
            x = (i % shot) * 4 % (width - s)
            img[height // 2 : height // 2 + s, x : x + s] = colour
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
            while apos < (i + 1) / fps * arate:  # a quiet tone, in step with the video
                t = (apos + np.arange(1024)) / arate
                wave = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
                af.sample_rate, af.pts = arate, apos
                af.time_base = fractions.Fraction(1, arate)
                out.mux(aus.encode(af))
                apos += 1024
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    os.replace(tmp, path)
    truth = {"n_frames": n_frames, "fps": fps, "cuts": list(range(shot, n_frames, shot))}
    path.with_suffix(".json").write_text(json.dumps(truth))
    return truth


def ensure_inputs(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Generate the inputs that are missing; return their paths and truths."""
    work.mkdir(parents=True, exist_ok=True)
    t720 = work / f"trailer_720p_{args.seconds:g}s.mp4"
    if not t720.exists() or not t720.with_suffix(".json").exists():
        print(f"generating {t720.name} …", flush=True)
        make_trailer(t720, seconds=args.seconds, width=1280, height=720, seed=11)
    grain = t720.with_name(t720.stem + "_grain.mp4")
    if not grain.exists():
        print(f"adding grain: {grain.name} …", flush=True)
        add_grain(t720, grain)
    archive = make_archive(work / "archive_720p", args.archive, width=1280, height=720)
    truth = json.loads(t720.with_suffix(".json").read_text())
    inputs: dict[str, Any] = {
        "trailers": {"clean": (t720, truth), "grain": (grain, truth)},
        "archive": archive,
    }
    if not args.skip_long:
        long = work / f"long_1080p_{args.long_minutes:g}min.mp4"
        if not long.exists() or not long.with_suffix(".json").exists():
            print(f"generating {long.name} (one core, a few minutes) …", flush=True)
            make_long(long, minutes=args.long_minutes, width=1920, height=1080)
        inputs["long"] = long
    return inputs


# ---------------------------------------------------------------------------------- workers
def _one_core() -> None:
    """Pin the libraries' own thread pools to one thread (the per-core measurement), and import
    everything a mode uses, so that no timed region pays for an import."""
    import cv2
    import torch

    import mmx.ingest  # noqa: F401 - the video, shots, audio and expert modules
    from mmx.config import ShotsConfig
    from mmx.shots import ShotDetector

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    # Warm-up outside the timed region (a worker does this once for thousands of trailers):
    # imports inside the detectors and first-call set-up in OpenCV, numpy and PyAV.
    from mmx.audio import log_mel_frames
    from mmx.experts.motion import MotionExpert
    from mmx.experts.scene import SceneExpert

    frames = np.random.default_rng(0).integers(0, 255, (64, 144, 256, 3), np.uint8)
    detector = ShotDetector(ShotsConfig(), 24.0)
    detector.push(0, frames[:32])
    detector.push(32, frames[32:])
    detector.finish()
    SceneExpert().frame_features(frames[:8])
    MotionExpert().frame_features(frames[:8])
    log_mel_frames(np.zeros(16000 * 3, np.float32), 16000)


def _configs(overrides: dict[str, dict[str, Any]]):
    """(video, shots, experts) configs: code defaults plus ``overrides[section]``."""
    from mmx.config import ExpertsConfig, ShotsConfig, VideoConfig

    return (VideoConfig(**overrides.get("video", {})), ShotsConfig(**overrides.get("shots", {})),
            ExpertsConfig(**overrides.get("experts", {})))


def _chunks(path: str, video):
    """The ingest's reader, exactly as :func:`mmx.ingest.analyse_trailer` configures it."""
    from mmx.video import iter_frames

    return iter_frames(path, width=video.width, height=video.height,
                       chunk_frames=video.chunk_frames, backend=video.backend,
                       threads=video.decode_threads, prefetch=video.prefetch_chunks,
                       skip_loop_filter=video.skip_loop_filter)


def _decode_all(path: str, video) -> np.ndarray:
    return np.concatenate([f for _, f in _chunks(path, video)])


def work_decode(path: str, video, shots, experts, state: dict) -> dict:
    """Decode-only: every frame into numpy at the ingest's output size (the floor)."""
    n, checksum = 0, 0
    for _, frames in _chunks(path, video):
        n += len(frames)
        checksum += int(frames[:, ::37, ::37].sum())  # touch the pixels, cheaply
    return {"frames": n}


def work_shots(path: str, video, shots, experts, state: dict) -> dict:
    """The same reader plus the shot detector on every frame."""
    from mmx.shots import ShotDetector
    from mmx.video import probe

    detector = ShotDetector(shots, probe(path).fps)
    n = 0
    for first, frames in _chunks(path, video):
        detector.push(first, frames)
        n += len(frames)
    detector.finish()
    return {"frames": n, "cuts": detector.cuts}


def prepare_experts(path: str, video, shots, experts) -> dict:
    """Untimed set-up of the experts mode: all frames decoded, shots found, CNN loaded."""
    from mmx.experts.registry import get_expert
    from mmx.shots import ShotDetector, shots_to_clips
    from mmx.video import probe

    frames = _decode_all(path, video)
    fps = probe(path).fps
    detector = ShotDetector(shots, fps)
    detector.push(0, frames)
    clips = shots_to_clips(detector.finish(), shots.drop_edge_frames, 1)
    cnn = get_expert("appearance", experts)
    cnn(frames[:2])  # warm-up
    return {"frames": frames, "fps": fps, "clips": clips, "cnn": cnn}


def work_experts(path: str, video, shots, experts, state: dict) -> dict:
    """The experts alone on frames already in memory: scene and motion at their strides,
    audio (decode + log-mel), the CNN on ``appearance_frames`` frames per clip."""
    from mmx.audio import load_audio, log_mel_frames
    from mmx.experts.audio import AudioExpert
    from mmx.experts.motion import MotionExpert, to_grey
    from mmx.experts.scene import SceneExpert
    from mmx.video import evenly_spaced

    frames, fps, clips, cnn = state["frames"], state["fps"], state["clips"], state["cnn"]
    spent: dict[str, float] = {}
    t = time.process_time()
    scene = SceneExpert(experts)
    for i in range(0, len(frames), video.chunk_frames):  # chunk by chunk, as the ingest does
        scene.frame_features(frames[i : i + video.chunk_frames : experts.scene_stride])
    spent["scene"] = time.process_time() - t
    t = time.process_time()
    motion = MotionExpert(experts)
    for i in range(0, len(frames) - 1, video.chunk_frames):
        grey = to_grey(frames[i : i + video.chunk_frames + 1])
        starts = np.arange(0, len(grey) - 1, experts.motion_stride)
        motion.pair_rows(grey[starts], grey[starts + 1], fps)
    spent["motion"] = time.process_time() - t
    t = time.process_time()
    wave = load_audio(path, video.audio_rate)
    if wave is not None:
        AudioExpert(experts)(log_mel_frames(wave, video.audio_rate))
    spent["audio"] = time.process_time() - t
    t = time.process_time()
    picks = np.concatenate([evenly_spaced(a, b, experts.appearance_frames) for a, b in clips])
    cnn(frames[picks])
    spent["appearance"] = time.process_time() - t
    return {"frames": len(frames), "cpu_by_expert_s": spent, "cnn_images": len(picks)}


def prepare_e2e(path: str, video, shots, experts) -> dict:
    from mmx.experts.registry import get_expert

    cnn = get_expert("appearance", experts)
    cnn(np.zeros((2, video.height, video.width, 3), np.uint8))  # warm-up
    return {"cnn": cnn}


def work_e2e(path: str, video, shots, experts, state: dict) -> dict:
    """What one worker does per trailer: analyse_trailer, then the CNN on the frames it kept."""
    from mmx.ingest import analyse_trailer

    t = time.process_time()
    tf = analyse_trailer(path, video, shots, experts)
    analyse = time.process_time() - t
    frames = tf.frames.reshape(-1, *tf.frames.shape[2:])  # (C*F, h, w, 3)
    t = time.process_time()
    state["cnn"](frames)
    return {"frames": tf.n_frames, "clips": len(tf.clips), "cnn_images": len(frames),
            "cpu_analyse_s": analyse, "cpu_cnn_s": time.process_time() - t,
            "wall_steps_s": {k: round(v, 3) for k, v in tf.timings_s.items()}}


WORKERS = {
    "decode": (None, work_decode),
    "shots": (None, work_shots),
    "experts": (prepare_experts, work_experts),
    "e2e": (prepare_e2e, work_e2e),
}


def run_worker(mode: str, paths: list[str], overrides: dict, warm: str | None = None) -> dict:
    """Body of a ``--worker`` subprocess: set up untimed, then time the mode over ``paths``.

    ``warm``: a short video run through the mode once, untimed, first, so that the timed
    files see a worker in its steady state (a Ray worker handles thousands of trailers): the
    decoder, OpenCV and numpy's first calls and the heap at its working size are paid here.
    """
    _one_core()
    video, shots, experts = _configs(overrides)
    prepare, work = WORKERS[mode]
    if warm:
        work(warm, video, shots, experts, prepare(warm, video, shots, experts) if prepare else {})
    out: dict[str, Any] = {"frames": 0, "cpu_s": 0.0, "wall_s": 0.0, "files": []}
    for path in paths:
        state = prepare(path, video, shots, experts) if prepare else {}
        wall, cpu = time.perf_counter(), time.process_time()
        result = work(path, video, shots, experts, state)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        del state
        out["frames"] += result["frames"]
        out["cpu_s"] += cpu
        out["wall_s"] += wall
        out["files"].append({"file": Path(path).name, "cpu_s": round(cpu, 3),
                             "wall_s": round(wall, 3), **result})
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


WARM_UP: Path | None = None  # set by main(): the shortest archive trailer


def spawn(mode: str, paths: list[Path], overrides: dict | None = None,
          timeout: float = 900, warm: bool = True) -> dict:
    """Run one mode in a fresh interpreter (its own peak RSS, one thread per library)."""
    cmd = [sys.executable, __file__, "--worker", mode, "--overrides",
           json.dumps(overrides or {})]
    if warm and WARM_UP is not None:
        cmd += ["--warm", str(WARM_UP)]
    cmd += [str(p) for p in paths]
    env = {**os.environ, **ONE_CORE_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["fps_cpu"] = result["frames"] / result["cpu_s"]
    result["fps_wall"] = result["frames"] / result["wall_s"]
    return result


# ------------------------------------------------------------------------ the scenedetect CLI
def run_cli(path: Path, end_s: float | None = None) -> dict:
    """``scenedetect -i FILE detect-adaptive`` (+ ``list-scenes`` for its cuts), as a child
    process; CPU time and peak RSS of that child alone (``os.wait4``)."""
    exe = shutil.which("scenedetect", path=str(Path(sys.executable).parent)) or "scenedetect"
    with tempfile.TemporaryDirectory(prefix="mmx-cli-") as out:
        cmd = [exe, "-i", str(path), "-o", out]
        if end_s is not None:
            cmd += ["time", "--end", f"{end_s:g}s"]
        cmd += ["detect-adaptive", "list-scenes", "-q"]
        wall = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **ONE_CORE_ENV})
        text = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - wall
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"scenedetect failed ({proc.returncode}):\n{text[-2000:]}")
        table = next(Path(out).glob("*-Scenes.csv"))
        with table.open() as f:
            rows = list(csv.reader(f))
    header = next(i for i, r in enumerate(rows) if r and r[0] == "Scene Number")
    starts = [int(r[1]) - 1 for r in rows[header + 1 :] if r]  # "Start Frame" is 1-based
    ends = [int(r[4]) for r in rows[header + 1 :] if r]
    return {"cmd": " ".join(Path(c).name if c == exe else c for c in cmd),
            "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "frames": ends[-1] if ends else 0, "cuts": starts[1:]}


# ---------------------------------------------------------------------------------- metrics
def cut_f1(found: list[int], truth: list[int], tol: int) -> dict:
    """Precision, recall and F1 of cuts, each truth cut matched at most once within ``tol``."""
    unused = sorted(truth)
    hits = 0
    for cut in sorted(found):
        match = [t for t in unused if abs(t - cut) <= tol]
        if match:
            unused.remove(min(match, key=lambda t: abs(t - cut)))
            hits += 1
    p = hits / len(found) if found else float(not truth)
    r = hits / len(truth) if truth else float(not found)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "found": len(found), "reference": len(truth)}


def truth_cuts(truth: dict) -> list[int]:
    """Hard cuts plus the middle of each dissolve (what a detector should report)."""
    return sorted(truth["cuts"] + [(a + b) // 2 for a, b in truth.get("dissolves", [])])


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ------------------------------------------------------------------------------------- main
TARGETS = {
    "shots_overhead_vs_decode": ("<=", 0.10),
    "shots_vs_cli_speed": (">=", 1.4),
    "f1_vs_cli": (">=", 0.98),
    "end_to_end_vs_decode": (">=", 0.5),
    "peak_rss_mb": ("<", 2048.0),
}


def _paired(rounds: list[dict[str, float]], fn) -> float:
    """Median over rounds of a ratio computed within each round (modes ran back to back)."""
    return round(statistics.median(fn(r) for r in rounds), 4)


RATIOS = {
    "end_to_end_vs_decode": (("e2e", "decode"), lambda r: r["e2e"] / r["decode"]),
    "shots_overhead_vs_decode": (("shots", "decode"), lambda r: r["decode"] / r["shots"] - 1),
    "experts_vs_decode": (("experts", "decode"), lambda r: r["experts"] / r["decode"]),
    "shots_vs_cli_speed": (("shots", "cli"), lambda r: r["shots"] / r["cli"]),
    "shots_vs_cli_speed_gross": (("shots", "cli_gross"), lambda r: r["shots"] / r["cli_gross"]),
}


def ratios(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Each ratio between the modes' best rates over the rounds (noise on a shared machine
    only ever adds time), and the median of the per-round ratios beside it."""
    best = {k: max(r[k] for r in rounds) for k in rounds[0]}
    out: dict[str, Any] = {"paired_median": {}}
    for name, (keys, fn) in RATIOS.items():
        if all(k in best for k in keys):
            out[name] = round(fn(best), 4)
            out["paired_median"][name] = _paired(rounds, fn)
    return out


MODES = ["decode", "shots", "experts", "e2e"]


def run_round(label: str, path: Path, truth: dict, args: argparse.Namespace,
              runs: dict[str, list[dict]], r: int) -> dict[str, float]:
    """One round on one trailer: every mode back to back, then the CLI; frames/CPU-s each."""
    row = {}
    for mode in MODES:
        res = spawn(mode, [path])
        runs[mode].append(res)
        row[mode] = res["fps_cpu"]
        print(f"  round {r + 1} {label:6s} {mode:8s} {res['fps_cpu']:7.1f} frames/CPU-s "
              f"({res['fps_wall']:.1f}/s wall) peak {res['peak_rss_mb']:.0f} MB", flush=True)
    if not args.skip_cli:
        cli = run_cli(path)
        short = run_cli(path, end_s=args.cli_startup_s)  # start-up + a second of frames
        n_short = round(args.cli_startup_s * truth["fps"])
        cli["fps_cpu"] = cli["frames"] / cli["cpu_s"]
        cli["fps_cpu_net"] = (cli["frames"] - n_short) / max(cli["cpu_s"] - short["cpu_s"], 1e-6)
        cli["fps_wall"] = cli["frames"] / cli["wall_s"]
        runs["cli"].append(cli)
        runs["cli_startup"].append(short)
        row["cli"], row["cli_gross"] = cli["fps_cpu_net"], cli["fps_cpu"]
        print(f"  round {r + 1} {label:6s} cli      {cli['fps_cpu_net']:7.1f} frames/CPU-s net "
              f"of start-up ({cli['fps_cpu']:.1f} gross, {short['cpu_s']:.2f} CPU-s start-up)",
              flush=True)
    return row


def summarise(path: Path, truth: dict, runs: dict[str, list[dict]], rounds: list[dict],
              args: argparse.Namespace) -> dict[str, Any]:
    """Medians, paired ratios and cut agreement for one trailer."""
    e2e = runs["e2e"][-1]["files"][0]
    out: dict[str, Any] = {
        "file": path.name,
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "bitrate_mbps": round(path.stat().st_size * 8 / 1e6 / (truth["n_frames"] / truth["fps"]),
                              2),
        "frames": runs["decode"][0]["frames"],
        "fps_cpu_best": {m: round(max(x["fps_cpu"] for x in runs[m]), 1) for m in MODES},
        "fps_cpu_median": {m: round(median_of(runs[m], "fps_cpu"), 1) for m in MODES},
        "fps_wall_median": {m: round(median_of(runs[m], "fps_wall"), 1) for m in MODES},
        "peak_rss_mb": {m: max(x["peak_rss_mb"] for x in runs[m]) for m in MODES},
        "rounds_fps_cpu": [{k: round(v, 1) for k, v in r.items()} for r in rounds],
        "e2e_clips": e2e["clips"],
        "e2e_cnn_images": e2e["cnn_images"],
        "e2e_cpu_s": {"analyse_trailer": round(e2e["cpu_analyse_s"], 3),
                      "appearance_cnn": round(e2e["cpu_cnn_s"], 3)},
        "e2e_wall_steps_s": e2e["wall_steps_s"],
        "experts_cpu_s": {k: round(v, 3)
                          for k, v in runs["experts"][-1]["files"][0]["cpu_by_expert_s"].items()},
        **ratios(rounds),
        "experts_peak_rss_note": "the experts mode holds every decoded frame (set-up); "
                                 "not the ingest's memory",
    }
    # What a second CNN frame per clip would cost: the last e2e run plus its CNN time again.
    e2e_cpu = runs["e2e"][-1]["cpu_s"]
    per_image = e2e["cpu_cnn_s"] / max(e2e["cnn_images"], 1)
    out["cnn_cpu_s_per_image"] = round(per_image, 4)
    out["end_to_end_vs_decode_estimated_2_frames_per_clip"] = round(
        out["frames"] / (e2e_cpu + per_image * e2e["clips"]) / out["fps_cpu_best"]["decode"], 4)
    ours = runs["shots"][-1]["files"][0]["cuts"]
    out["cuts_f1_vs_truth"] = cut_f1(ours, truth_cuts(truth), args.tolerance)
    if not args.skip_cli:
        cli = runs["cli"][-1]
        out["cli"] = {
            "cmd": cli["cmd"],
            "fps_cpu_net_best": round(max(x["fps_cpu_net"] for x in runs["cli"]), 1),
            "fps_cpu_net_median": round(median_of(runs["cli"], "fps_cpu_net"), 1),
            "fps_cpu_gross_median": round(median_of(runs["cli"], "fps_cpu"), 1),
            "fps_wall_median": round(median_of(runs["cli"], "fps_wall"), 1),
            "startup_cpu_s": round(median_of(runs["cli_startup"], "cpu_s"), 3),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs["cli"]),
            "cuts": len(cli["cuts"]),
            "cuts_f1_vs_truth": cut_f1(cli["cuts"], truth_cuts(truth), args.tolerance),
        }
        # our chunked PySceneDetect scorer against the CLI running the same detector
        same = spawn("shots", [path], {"shots": {"detector": "adaptive",
                                                 "detect_width": CLI_WIDTH}})
        out["f1_vs_cli"] = cut_f1(same["files"][0]["cuts"], cli["cuts"], args.tolerance)
        out["f1_vs_cli_exact"] = cut_f1(same["files"][0]["cuts"], cli["cuts"], 0)
        adaptive = spawn("shots", [path], {"shots": {"detector": "adaptive"}})
        out["f1_vs_cli_default_detect_width"] = cut_f1(adaptive["files"][0]["cuts"], cli["cuts"],
                                                       args.tolerance)
        out["default_detector_vs_cli"] = cut_f1(ours, cli["cuts"], args.tolerance)
    return out


def measure_trailers(items: dict[str, tuple[Path, dict]],
                     args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The side-by-side modes on each trailer, all interleaved in ``args.repeats`` rounds."""
    runs = {label: {m: [] for m in [*MODES, "cli", "cli_startup"]} for label in items}
    rounds: dict[str, list[dict]] = {label: [] for label in items}
    for r in range(args.repeats):
        for label, (path, truth) in items.items():
            rounds[label].append(run_round(label, path, truth, args, runs[label], r))
    return {label: summarise(path, truth, runs[label], rounds[label], args)
            for label, (path, truth) in items.items()}


def measure_archive(paths: list[Path], repeats: int) -> dict[str, Any]:
    """Decode-only, shots-only and end to end over every file of the small archive, one worker
    per mode taking the files in turn (as a Ray decode task does), ``repeats`` rounds."""
    modes = ("decode", "shots", "e2e")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    rounds = []
    for _ in range(repeats):
        row = {}
        for mode in modes:
            res = spawn(mode, paths)
            runs[mode].append(res)
            row[mode] = res["fps_cpu"]
        rounds.append(row)
    return {
        "files": [p.name for p in paths],
        "frames": runs["decode"][0]["frames"],
        "fps_cpu_best": {m: round(max(r["fps_cpu"] for r in runs[m]), 1) for m in modes},
        "fps_cpu_median": {m: round(median_of(runs[m], "fps_cpu"), 1) for m in modes},
        "fps_wall_median": {m: round(median_of(runs[m], "fps_wall"), 1) for m in modes},
        "peak_rss_mb": {m: max(r["peak_rss_mb"] for r in runs[m]) for m in modes},
        "rounds_fps_cpu": [{k: round(v, 1) for k, v in r.items()} for r in rounds],
        **ratios(rounds),
    }


def measure_long(path: Path, backends: list[str]) -> dict[str, Any]:
    """Peak RSS of the end-to-end worker (analyse_trailer + CNN) on the long 1080p input."""
    out = {}
    for backend in backends:
        res = spawn("e2e", [path], {"video": {"backend": backend}}, timeout=1800, warm=False)
        f = res["files"][0]
        out[backend] = {"peak_rss_mb": res["peak_rss_mb"], "frames": res["frames"],
                        "clips": f["clips"], "fps_cpu": round(res["fps_cpu"], 1),
                        "wall_s": round(res["wall_s"], 1)}
        print(f"  long {backend:6s} peak {res['peak_rss_mb']:.0f} MB, "
              f"{res['fps_cpu']:.0f} frames/CPU-s", flush=True)
    return out


def _verdict(results: dict[str, Any]) -> dict[str, Any]:
    met = {}
    for key, (op, bound) in TARGETS.items():
        value = results.get(key)
        if value is None:
            continue
        met[key] = {"value": value, "target": f"{op} {bound:g}",
                    "met": bool(value <= bound if op == "<=" else
                                value >= bound if op == ">=" else value < bound)}
    return met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cached generated inputs")
    p.add_argument("--repeats", type=int, default=4, help="interleaved rounds of the modes")
    p.add_argument("--seconds", type=float, default=75.0, help="length of the 720p trailer")
    p.add_argument("--archive", type=int, default=3, help="trailers in the small archive")
    p.add_argument("--long-minutes", type=float, default=10.0)
    p.add_argument("--long-backends", default="pyav,decord",
                   help="decoder backends measured on the long input (first = headline)")
    p.add_argument("--tolerance", type=int, default=2, help="frames for a cut to match")
    p.add_argument("--cli-startup-s", type=float, default=1.0,
                   help="length of the short CLI run whose cost is taken as start-up")
    p.add_argument("--skip-long", action="store_true")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--skip-archive", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--warm", help=argparse.SUPPRESS)
    p.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = run_worker(args.worker, args.paths, json.loads(args.overrides), args.warm)
        print("RESULT " + json.dumps(result))
        return 0

    from mmx.config import ExpertsConfig, ShotsConfig, VideoConfig

    t0 = time.perf_counter()
    inputs = ensure_inputs(args.work, args)
    trailers = inputs["trailers"]
    global WARM_UP
    WARM_UP = min(inputs["archive"], key=lambda p: p.stat().st_size)
    for path in [*(p for p, _ in trailers.values()), *inputs["archive"], inputs.get("long")]:
        if path is not None:
            path.read_bytes()  # into the page cache: no mode pays the first read
    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.1f}", flush=True)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_avg_1min_before": round(load_before[0], 2)},
        "config": {"video": VideoConfig().__dict__, "shots": ShotsConfig().__dict__,
                   "experts": {k: v for k, v in ExpertsConfig().__dict__.items()
                               if k != "weights"}},
        "rate_unit": "frames per CPU-second of the worker process (all its threads) = per core",
        "headline_input": "trailer_720p_clean",
    }
    measured = measure_trailers(trailers, args)
    for label, summary in measured.items():
        results[f"trailer_720p_{label}"] = summary
    head = measured["clean"]
    for key in ("end_to_end_vs_decode", "shots_overhead_vs_decode", "shots_vs_cli_speed"):
        if key in head:
            results[key] = head[key]
    if "f1_vs_cli" in head:
        results["f1_vs_cli"] = head["f1_vs_cli"]["f1"]
    if not args.skip_archive:
        print("archive …", flush=True)
        results["archive_720p"] = measure_archive(inputs["archive"], args.repeats)
    if "long" in inputs:
        print("long input …", flush=True)
        long = measure_long(inputs["long"], args.long_backends.split(","))
        results["long_1080p_10min"] = long
        results["peak_rss_mb"] = long[args.long_backends.split(",")[0]]["peak_rss_mb"]
    else:
        results["peak_rss_mb"] = head["peak_rss_mb"]["e2e"]
        results["peak_rss_note"] = "720p trailer only (--skip-long)"
    results["targets"] = _verdict(results)
    results["machine"]["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({k: results[k] for k in ("end_to_end_vs_decode", "shots_overhead_vs_decode",
                                              "shots_vs_cli_speed", "f1_vs_cli", "peak_rss_mb")
                      if k in results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
