"""Audio expert: a 128-d descriptor per 0.96 s VGGish-style log-mel example.

Owns the offline default for "music, speech, effects" (DESIGN §2): for each (96, 64) log-mel
example from :func:`mmx.audio.log_mel_frames`, the mean and the standard deviation of each of
the 64 mel bands over the example's 96 frames (timbre/loudness and its modulation), giving the
same 128-d width as VGGish embeddings. The model aggregates a shot's examples with NetVLAD, so
this returns one row per example, not per shot.
"""

from __future__ import annotations

import numpy as np

from mmx.audio import EXAMPLE_FRAMES, MEL_BANDS
from mmx.experts.registry import Expert, register_expert


@register_expert
class AudioExpert(Expert):
    """Log-mel examples float32 ``(N, 96, 64)`` → float32 ``(N, 128)`` (band means, stds)."""

    name = "audio"
    dim = 2 * MEL_BANDS  # 128, as VGGish
    kind = "audio"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 96, 64)`` log-mel examples → ``(N, 128)``: 64 band means then 64 band stds."""
        x = np.asarray(batch, np.float32).reshape(-1, EXAMPLE_FRAMES, MEL_BANDS)
        return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1).astype(np.float32)
