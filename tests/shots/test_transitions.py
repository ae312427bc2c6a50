"""The hybrid detector on short hard clips: every transition type within tolerance, no cut at
a white flash or a whip pan, gradual frames in no shot, chunking invariance."""

from __future__ import annotations

import numpy as np
import pytest

from mmx.config import ShotsConfig
from mmx.shots import ShotDetector
from mmx.shots.transitions import TransitionDetector, downscale
from mmx.synth_shots import score_boundaries, write_shot_clip
from mmx.video import iter_frames

KINDS = ["cut", "same_set_cut", "dissolve", "fade", "same_set_cut", "dissolve", "cut", "fade"]


@pytest.fixture(scope="module")
def flash_clip(tmp_path_factory):
    """Every kind of transition; a white flash in (almost) every shot."""
    path = tmp_path_factory.mktemp("shots") / "flashes.mp4"
    return write_shot_clip(path, 3, width=256, height=144, kinds=KINDS, min_len=30,
                           max_len=44, p_flash=1.0, p_whip=0.0)


@pytest.fixture(scope="module")
def whip_clip(tmp_path_factory):
    """Every kind of transition; a whip pan in (almost) every shot."""
    path = tmp_path_factory.mktemp("shots") / "whips.mp4"
    return write_shot_clip(path, 4, width=256, height=144, kinds=KINDS, min_len=30,
                           max_len=44, p_flash=0.0, p_whip=1.0)


def detect(clip, cfg: ShotsConfig | None = None, chunk: int = 64):
    detector = ShotDetector(cfg or ShotsConfig(), clip.fps)
    for first, frames in iter_frames(clip.path, width=256, height=144, chunk_frames=chunk,
                                     backend="pyav"):
        detector.push(first, frames)
    return detector, detector.finish()


@pytest.mark.parametrize("which", ["flash_clip", "whip_clip"])
def test_every_transition_type_found(which, request):
    clip = request.getfixturevalue(which)
    detector, _ = detect(clip)
    score = score_boundaries(clip, detector.cuts, tol=2)
    for kind in set(KINDS):
        found, total = score["per_kind"][kind]
        assert total >= 2 and found == total, (kind, score, detector.boundaries)
    assert score["fp"] == 0, (score, detector.boundaries, clip.transitions)


def test_flashes_and_whip_pans_are_not_cuts(flash_clip, whip_clip):
    flashes = whip_pans = 0
    for clip in (flash_clip, whip_clip):
        detector, _ = detect(clip)
        score = score_boundaries(clip, detector.cuts, tol=2)
        assert score["per_trap"]["flash"][0] == 0 and score["per_trap"]["whip_pan"][0] == 0
        flashes += score["per_trap"]["flash"][1]
        whip_pans += score["per_trap"]["whip_pan"][1]
    assert flashes >= 4 and whip_pans >= 4


def test_pyscenedetect_cuts_at_flashes(flash_clip):
    """Why the hybrid exists: the previous default cuts at white flashes (PITFALLS)."""
    detector, _ = detect(flash_clip, ShotsConfig(detector="adaptive"))
    score = score_boundaries(flash_clip, detector.cuts, tol=2)
    assert score["per_trap"]["flash"][0] >= 1


def test_gradual_frames_belong_to_no_shot(flash_clip):
    detector, shots = detect(flash_clip)
    gradual = [(a, b) for a, b in detector.boundaries if b > a]
    assert len(gradual) == sum(k in ("dissolve", "fade") for k in KINDS)
    assert shots[0][0] == 0 and shots[-1][1] == flash_clip.n_frames
    for (_, end), (start, _), (a, b) in zip(shots, shots[1:], detector.boundaries):
        assert (end, start) == (a, b)  # a shot ends where a boundary starts, the next begins
    for tr in flash_clip.transitions:  # no frame of a true gradual span's middle in a shot
        if tr.end > tr.start:
            inner = range(tr.start + 1, tr.end - 1)
            assert not any(s <= i < e for s, e in shots for i in inner), (tr, shots)


def test_chunking_does_not_change_boundaries(whip_clip):
    small, _ = detect(whip_clip, chunk=7)
    large, _ = detect(whip_clip, chunk=256)
    assert small.boundaries == large.boundaries


def _texture(seed: int, h: int = 144, w: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (9, 16, 3)).astype(np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("length", [1, 2])
def test_flash_on_a_static_shot_is_not_a_cut(length):
    a = _texture(0)
    frames = np.repeat(a[None], 40, axis=0)
    frames[20 : 20 + length] = 250
    det = TransitionDetector()
    det.push(0, frames)
    assert det.finish() == [] and det.boundaries == []


def test_cut_and_dissolve_exact_on_static_shots():
    a, b, c = _texture(0).astype(np.float32), _texture(1).astype(np.float32), _texture(2)
    frames = [a] * 30 + [b] * 30  # cut at 30
    frames += [b * (1 - w) + c * w for w in np.arange(1, 11) / 11] + [c] * 30  # dissolve 60..70
    video = np.stack(frames).astype(np.uint8)
    det = TransitionDetector()
    out = det.push(0, video[:45]) + det.push(45, video[45:]) + det.finish()
    assert out == det.boundaries
    assert out[0] == (30, 30)
    assert len(out) == 2 and 59 <= out[1][0] <= 61 and 69 <= out[1][1] <= 71


def test_downscale_matches_per_frame_area():
    import cv2

    frames = np.random.default_rng(0).integers(0, 255, (5, 144, 256, 3), np.uint8)
    small = downscale(frames, 32)
    assert small.shape == (5, 18, 32, 3) and small.dtype == np.uint8
    ref = np.stack([cv2.resize(f, (32, 18), interpolation=cv2.INTER_AREA) for f in frames])
    assert np.abs(small.astype(int) - ref).max() <= 2  # 2:1 halvings round at each step
    odd = downscale(frames[:, :, :250], 32)  # not a power-of-two factor: frame by frame
    assert odd.shape == (5, 18, 32, 3)
