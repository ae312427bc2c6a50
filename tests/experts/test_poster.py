"""The poster expert: encoded images → EfficientNet-Lite0 1280-d, unreadable images masked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mmx.experts.poster import PosterExpert, decode_image, fit_square


def _poster(seed: int, h: int = 300, w: int = 200) -> np.ndarray:
    """A portrait RGB image: a coloured title band at the top over a noisy body."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    image[: h // 8] = (220, 30, 30) if seed % 2 else (30, 30, 220)
    return image


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def expert() -> PosterExpert:
    return PosterExpert()


def test_same_image_same_vector_and_shape(expert: PosterExpert) -> None:
    jpeg, png = _encode(_poster(0), ".jpg"), _encode(_poster(1), ".png")
    v = expert([jpeg, png, jpeg])
    assert v.shape == (3, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(v[0], v[2], atol=1e-6)  # in one batch
    np.testing.assert_allclose(expert([jpeg])[0], v[0], atol=1e-5)  # alone, another call
    assert not np.allclose(v[0], v[1], atol=1e-3) and np.abs(v).sum(axis=1).min() > 0


def test_corrupt_missing_and_empty_images_are_masked(expert: PosterExpert) -> None:
    good = _encode(_poster(2), ".jpg")
    truncated = good[: len(good) // 3]
    garbage = b"this is not an image at all"
    vectors, has = expert.embed([good, garbage, None, b"", good, truncated])
    assert vectors.shape == (6, 1280)
    assert has[0] and has[4] and not has[1] and not has[2] and not has[3]
    assert not vectors[~has].any()
    np.testing.assert_allclose(vectors[0], expert([good])[0], atol=1e-5)
    none, mask = expert.embed([None, garbage])
    assert none.shape == (2, 1280) and not mask.any()
    assert expert([]).shape == (0, 1280)


def test_decode_formats_to_rgb() -> None:
    rgb = _poster(3, 40, 30)
    png = decode_image(_encode(rgb, ".png"))
    np.testing.assert_array_equal(png, rgb)  # lossless and in RGB order
    grey = decode_image(cv2.imencode(".png", rgb[..., 0])[1].tobytes())
    assert grey.shape == (40, 30, 3)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert decode_image(cv2.imencode(".png", rgba)[1].tobytes()).shape == (40, 30, 3)
    assert decode_image(memoryview(_encode(rgb, ".jpg"))).shape == (40, 30, 3)


def test_pad_keeps_the_whole_poster_crop_the_centre() -> None:
    poster = _poster(5, 300, 200)  # red band over the top eighth
    padded = fit_square(poster, 224, "pad")
    cropped = fit_square(poster, 224, "crop")
    assert padded.shape == cropped.shape == (224, 224, 3)
    np.testing.assert_array_equal(padded[:, :10], 127)  # grey letterbox at the sides
    assert (padded[5:25, 112] == (220, 30, 30)).all()  # the title band is in
    assert not (cropped[:, 112] == (220, 30, 30)).all(axis=1).any()  # the crop loses it


def test_poster_vector_is_the_appearance_vector_of_the_fitted_image(
    expert: PosterExpert,
) -> None:
    image = _poster(6)
    got = expert([_encode(image, ".png")])
    want = expert.cnn(fit_square(image, 224, "pad")[None])
    np.testing.assert_allclose(got, want, atol=1e-6)
