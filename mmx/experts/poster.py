"""Poster expert: EfficientNet-Lite0 (the appearance expert's bundled weights) on a title's poster.

Owns turning encoded poster images (JPEG, PNG, WebP: whatever OpenCV's ``imdecode`` reads,
EXIF orientation applied) into one 1280-d vector per title. Decoding uses OpenCV (pinned in the
``job`` extra); the network, its normalisation and its batching are
:class:`mmx.experts.appearance.AppearanceExpert`'s, called as is. Posters are portrait (about
2:3) and their genre cues sit everywhere, the title lettering at the top or bottom included,
so by default the whole poster is kept: letterboxed onto a square of the EfficientNet-Lite mean
grey (127, i.e. 0 after normalisation) and resized to the CNN's input side (``fit="pad"``);
``fit="crop"`` gives the appearance expert's own short-side resize and centre crop instead.
An image that is missing, empty or cannot be decoded gets no vector: :meth:`PosterExpert.embed`
returns a mask beside the rows (zeros where the mask is False) and logs how many failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from mmx.config import ExpertsConfig
from mmx.experts.appearance import MEAN, AppearanceExpert
from mmx.experts.registry import Expert, register_expert

log = logging.getLogger(__name__)

ImageBytes = bytes | bytearray | memoryview


def decode_image(data: ImageBytes | None) -> np.ndarray | None:
    """Encoded image bytes → uint8 RGB ``(H, W, 3)``, or None when missing or unreadable."""
    if data is None or len(data) == 0:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    image = cv2.imdecode(buf, rgb_flag if rgb_flag is not None else cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 1:
        return None
    if rgb_flag is None:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def fit_square(image: np.ndarray, size: int, fit: Literal["pad", "crop"]) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` → uint8 ``(size, size, 3)``: the whole image letterboxed on grey
    (``pad``) or the short side resized and the centre cropped (``crop``)."""
    h, w = image.shape[:2]
    scale = size / (max(h, w) if fit == "pad" else min(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if fit == "crop":
        nh, nw = max(nh, size), max(nw, size)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)  # (nh, nw, 3)
    if fit == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(resized[top : top + size, left : left + size])
    out = np.full((size, size, 3), int(MEAN), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


@register_expert
class PosterExpert(Expert):
    """Encoded poster images → EfficientNet-Lite0 pooled features, float32 ``(N, 1280)``.

    Args:
        cfg: uses ``appearance_size`` (the CNN's input side, 224 for Lite0).
        device: torch device for the CNN (``"cuda"`` in a GPU actor).
        batch_size: images per forward pass (the appearance expert's default when None).
        fit: ``"pad"`` (whole poster, letterboxed) or ``"crop"`` (centre square); None takes
            ``cfg.poster_fit``.
    """

    name = "poster"
    dim = 1280
    kind = "title"
    needs = ("poster",)  # the sidecar field it reads (mmx.titles)

    def __init__(
        self,
        cfg: ExpertsConfig | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
        fit: Literal["pad", "crop"] | None = None,
    ) -> None:
        super().__init__(cfg)
        fit = self.cfg.poster_fit if fit is None else fit
        if fit not in ("pad", "crop"):
            raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
        self.fit = fit
        self.cnn = AppearanceExpert(self.cfg, device=device, batch_size=batch_size)
        self.size = self.cnn.size

    def load_weights(self, uri: str) -> None:
        """Load an EfficientNet-Lite0 state dict (as :meth:`AppearanceExpert.load_weights`)."""
        self.cnn.load_weights(uri)

    def embed(self, images: Sequence[ImageBytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """Encoded images → ``(vectors float32 (N, 1280), has_poster bool (N,))``.

        Missing, empty or undecodable images have ``has_poster`` False and a zero row.
        """
        decoded = [decode_image(data) for data in images]
        has = np.array([image is not None for image in decoded], dtype=bool)
        vectors = np.zeros((len(decoded), self.dim), np.float32)
        failed = [i for i, (data, ok) in enumerate(zip(images, has, strict=True))
                  if not ok and data is not None and len(data) > 0]
        if failed:
            log.warning("poster expert: %d of %d images could not be decoded (rows %s)",
                        len(failed), len(decoded), failed[:10])
        if has.any():
            squares = np.stack([fit_square(image, self.size, self.fit)
                                for image in decoded if image is not None])  # (M, S, S, 3)
            vectors[has] = self.cnn(squares)
        return vectors, has

    def __call__(self, batch: Sequence[ImageBytes | None]) -> np.ndarray:
        """Encoded images → float32 ``(N, 1280)``; unreadable ones are zero rows (see
        :meth:`embed` for the mask)."""
        return self.embed(batch)[0]
