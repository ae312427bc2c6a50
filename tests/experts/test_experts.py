"""Experts: registry, shapes, dtypes, determinism, and that the CNN really has ImageNet weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mmx.config import ExpertsConfig
from mmx.experts import EXPERTS, get_expert, load_state_dict, register_expert
from mmx.experts.appearance import AppearanceExpert
from mmx.experts.audio import AudioExpert
from mmx.experts.motion import MotionExpert, to_grey
from mmx.experts.registry import Expert, expert_class
from mmx.experts.scene import SceneExpert

DIMS = {"appearance": 1280, "scene": 180, "motion": 30, "audio": 128}


def textured(seed: int, size: tuple[int, int] = (400, 240)) -> np.ndarray:
    """A smooth random RGB texture, uint8 ``(H, W, 3)``."""
    img = np.random.default_rng(seed).uniform(0, 255, (size[1], size[0], 3)).astype(np.uint8)
    return cv2.GaussianBlur(img, (9, 9), 3)


def checkerboard(h: int = 144, w: int = 256, cell: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def appearance() -> AppearanceExpert:
    return get_expert("appearance", ExpertsConfig())


def test_registry_declares_every_expert():
    # (test modules may register experts of their own in the same registry)
    assert {name: EXPERTS[name].dim for name in DIMS} == DIMS
    assert {name: (EXPERTS[name].kind, EXPERTS[name].runs) for name in DIMS} == {
        "appearance": ("image", "pool"), "scene": ("frames", "inline"),
        "motion": ("frames", "inline"), "audio": ("audio", "inline")}
    # the per-title experts of the default experts.names, found by name
    title = {n: expert_class(n) for n in ("text", "poster", "metadata")}
    assert {n: (c.kind, c.dim, c.needs) for n, c in title.items()} == {
        "text": ("title", 384, ("plot",)), "poster": ("title", 1280, ("poster",)),
        "metadata": ("title", 4, ("year", "runtime_min"))}
    with pytest.raises(KeyError):
        get_expert("nope", ExpertsConfig())


def test_register_expert_rejects_duplicates():
    with pytest.raises(ValueError):
        @register_expert
        class Other(Expert):
            name, dim = "scene", 3


def test_computed_experts_refuse_weights():
    with pytest.raises(ValueError, match="no weights"):
        get_expert("scene", ExpertsConfig(weights={"scene": "/nowhere.pt"}))


def test_appearance_shape_dtype_determinism(appearance):
    frames = np.stack([textured(0, (256, 144)), checkerboard()])
    a, b = appearance(frames), appearance(frames)
    assert a.shape == (2, 1280) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    odd = appearance(np.stack([textured(1, (300, 300))]))  # any input size
    assert odd.shape == (1, 1280) and np.isfinite(odd).all()
    assert appearance(np.zeros((0, 144, 256, 3), np.uint8)).shape == (0, 1280)


def test_appearance_separates_different_images(appearance):
    feats = appearance(np.stack([checkerboard(), textured(2, (256, 144)),
                                 np.full((144, 256, 3), (30, 90, 200), np.uint8)]))
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert cosine[0, 1] < 0.95 and cosine[0, 2] < 0.95 and cosine[1, 2] < 0.95


def test_appearance_has_imagenet_weights(appearance):
    """Trained weights give peaked, confident logits; a random init would not."""
    logits = appearance.logits(np.stack([checkerboard()]))
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    assert logits.shape == (1, 1000)
    assert probs.max() > 20 / 1000  # far from uniform
    assert logits.std() > 1.0
    # the stem's BatchNorm statistics are the ones of the bundled checkpoint, not defaults
    bn = appearance.model._bn0
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_appearance_folded_batchnorm_gives_the_same_features(appearance):
    """Inference runs on a BN-folded copy; it must match the checkpoint's own network."""
    frames = np.stack([textured(5, (256, 144)), checkerboard()])
    with torch.inference_mode():
        x = appearance.preprocess(frames)
        reference = appearance.model.extract_features(x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(appearance(frames), reference, rtol=1e-3, atol=1e-4)


def test_appearance_loads_user_weights(appearance, tmp_path):
    state = {k: v.clone() for k, v in appearance.model.state_dict().items()}
    state["_fc.bias"] += 1.0
    path = tmp_path / "lite0 custom.pt"
    torch.save(state, path)
    frame = np.stack([checkerboard()])
    before = appearance.logits(frame)
    other = get_expert("appearance", ExpertsConfig(weights={"appearance": str(path)}))
    np.testing.assert_allclose(other.logits(frame), before + 1.0, rtol=1e-4, atol=1e-4)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert set(load_state_dict(str(tmp_path / "w.safetensors"))) == set(state)
    import fsspec  # any fsspec URI works the same way (s3:// on a cluster)

    with fsspec.open("memory://weights/lite0.pt", "wb") as f:
        torch.save({"state_dict": state}, f)
    assert set(load_state_dict("memory://weights/lite0.pt")) == set(state)
    with pytest.raises(ValueError):
        torch.save({"bogus": torch.zeros(1)}, tmp_path / "bogus.pt")
        other.load_weights(str(tmp_path / "bogus.pt"))


def test_scene_shape_dtype_determinism():
    expert = SceneExpert()
    frames = np.stack([textured(3, (256, 144)), checkerboard(),
                       np.full((144, 256, 3), (200, 40, 40), np.uint8)])
    rows = expert.frame_features(frames)
    assert rows.shape == (3, 180) and rows.dtype == np.float32 and np.isfinite(rows).all()
    np.testing.assert_array_equal(rows, expert.frame_features(frames))
    assert np.linalg.norm(rows[0] - rows[2]) > 0.5  # texture vs flat red differ
    shots = expert([frames[:2], frames[2:]])  # two shots → mean of their frames
    np.testing.assert_allclose(shots[0], rows[:2].mean(0), rtol=1e-6)
    assert shots.shape == (2, 180)


def test_scene_edge_energy_matches_direct_formula():
    """The pooled orientation energies equal the plain per-pixel formula (arctan2, one-hot,
    cell means), up to OpenCV's ~0.3 degree angles near bin edges."""
    from mmx.experts.scene import GRID, ORIENTATIONS, _edge_energy

    grey = np.stack([textured(6, (128, 72))[..., 1], checkerboard(72, 128, 8)[..., 0]])
    grey = grey.astype(np.float32) / 255.0  # (2, 72, 128)
    gx = np.stack([cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) for g in grey])
    gy = np.stack([cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) for g in grey])
    mag = np.sqrt(gx**2 + gy**2) / 4.0
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.floor(theta / (np.pi / ORIENTATIONS) + 0.5).astype(int) % ORIENTATIONS
    onehot = np.eye(ORIENTATIONS)[bins] * mag[..., None]  # (2, 72, 128, O)
    cells = onehot.reshape(2, GRID, 72 // GRID, GRID, 128 // GRID, ORIENTATIONS).mean((2, 4))
    reference = np.sqrt(cells.transpose(0, 3, 1, 2).reshape(2, -1))
    np.testing.assert_allclose(_edge_energy(grey), reference, atol=0.01)


def test_motion_zoom_sign():
    """Zooming in (a shrinking centred crop, scaled up) gives zoom > 0 and no pan."""
    texture = textured(7, (512, 288))
    frames = []
    for i in range(6):
        m = 4 * i  # crop margin grows: the view zooms in
        crop = texture[m * 9 // 16 : 288 - m * 9 // 16, m : 512 - m]
        frames.append(cv2.resize(crop, (256, 144), interpolation=cv2.INTER_AREA))
    out = MotionExpert()([np.stack(frames)], fps=24.0)[0]
    pan, tilt, zoom = out[16], out[17], out[18]
    assert zoom > 0.05 and abs(pan) < 0.2 * zoom and abs(tilt) < 0.2 * zoom


def test_motion_shape_and_camera_pan():
    expert = MotionExpert()
    texture = textured(4, (400, 200))
    pan = np.stack([texture[20:164, 10 + 4 * i : 266 + 4 * i] for i in range(8)])  # moves left
    still = np.repeat(texture[None, 20:164, 10:266], 8, axis=0)
    out = expert([pan, still], fps=24.0)
    assert out.shape == (2, 30) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expert([pan, still], fps=24.0))
    pan_col = 16  # first camera column
    expected = -4 * (128 / 256) / 128 * 24  # px/frame at 256 wide → widths per second
    assert out[0, pan_col] == pytest.approx(expected, rel=0.15)
    assert abs(out[1, pan_col]) < 0.01 and out[1, 20] < 0.01  # no motion
    assert out[0, -1] == pytest.approx(np.log(8 / 24.0))  # tempo: log shot seconds
    grey = to_grey(pan)
    assert grey.shape == (8, 72, 128) and grey.dtype == np.uint8


def test_audio_expert_shape():
    examples = np.random.default_rng(0).normal(size=(5, 96, 64)).astype(np.float32)
    out = AudioExpert()(examples)
    assert out.shape == (5, 128) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :64], examples.mean(1), rtol=1e-5)
    np.testing.assert_allclose(out[:, 64:], examples.std(1), rtol=1e-4)
