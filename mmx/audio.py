"""Audio decoding and the VGGish-style log-mel front end (numpy only, no librosa).

Owns :func:`load_audio` (first audio stream → 16 kHz mono float32 via PyAV's resampler) and
:func:`log_mel_frames` (25 ms Hann window, 10 ms hop, 512-point FFT magnitude, 64 HTK mel bands
125-7500 Hz, ``log(mel + 0.01)``, non-overlapping 0.96 s examples of 96 x 64), matching the
front end of VGGish (Hershey et al. 2017) so user-supplied VGGish weights see what they expect.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import av
import numpy as np

from mmx.errors import failed
from mmx.video.reader import PathLike, _open, _reason

log = logging.getLogger(__name__)

WINDOW_S = 0.025
HOP_S = 0.010
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms hops
EXAMPLE_S = EXAMPLE_FRAMES * HOP_S


def load_audio(path: PathLike, rate: int = 16000,
               max_s: float | None = None) -> np.ndarray | None:
    """Decode the first audio stream of ``path`` to mono at ``rate`` Hz, its first ``max_s``
    seconds at most (decoding stops there).

    Returns:
        float32 array ``(samples,)`` in [-1, 1], or None when the file has no audio stream.

    Raises:
        TrailerError: ``failed`` when the container cannot be opened or the audio is corrupt.
    """
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts: list[np.ndarray] = []
        budget = None if max_s is None else int(max_s * rate)
        n = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    n += parts[-1].size
                if budget is not None and n >= budget:
                    break
            else:
                for out in resampler.resample(None):  # flush the resampler's delay line
                    parts.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as err:
            raise failed(f"corrupt audio ({_reason(err)})") from err
    if not parts:
        return np.zeros(0, np.float32)
    wave = np.concatenate(parts).astype(np.float32, copy=False)
    return wave if budget is None else wave[:budget]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale, as in VGGish's ``mel_features.hertz_to_mel``."""
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@lru_cache(maxsize=4)
def mel_matrix(rate: int = 16000, n_fft: int = 512) -> np.ndarray:
    """Triangular mel filterbank, float32 ``(n_fft // 2 + 1, 64)``; the DC bin has no weight."""
    n_bins = n_fft // 2 + 1
    bins_mel = _hz_to_mel(np.linspace(0.0, rate / 2.0, n_bins))  # (n_bins,)
    edges = np.linspace(_hz_to_mel(MEL_LOW_HZ), _hz_to_mel(MEL_HIGH_HZ), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    rising = (bins_mel[:, None] - lower) / (center - lower)  # (n_bins, 64)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights.astype(np.float32)


def log_mel_frames(wave: np.ndarray, rate: int = 16000, block_examples: int = 64) -> np.ndarray:
    """VGGish log-mel examples of a mono waveform.

    Args:
        wave: float array ``(samples,)`` at ``rate`` Hz (16 kHz for VGGish).
        rate: sample rate of ``wave``.
        block_examples: examples computed per block, bounding memory on long inputs.

    Returns:
        float32 array ``(N, 96, 64)``: example ``i`` covers ``[0.96 i, 0.96 (i + 1))`` seconds;
        ``N = 0`` when the input is shorter than one example.
    """
    wave = np.asarray(wave, np.float32).reshape(-1)
    win = round(WINDOW_S * rate)
    hop = round(HOP_S * rate)
    n_fft = 1 << int(np.ceil(np.log2(win)))
    n_stft = 1 + (wave.size - win) // hop if wave.size >= win else 0
    n_examples = n_stft // EXAMPLE_FRAMES
    out = np.empty((n_examples, EXAMPLE_FRAMES, MEL_BANDS), np.float32)
    if n_examples == 0:
        return out
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)  # periodic
    mel = mel_matrix(rate, n_fft)  # (n_fft // 2 + 1, 64)
    for e0 in range(0, n_examples, block_examples):
        e1 = min(n_examples, e0 + block_examples)
        f0, f1 = e0 * EXAMPLE_FRAMES, e1 * EXAMPLE_FRAMES  # STFT frames of this block
        segment = wave[f0 * hop : (f1 - 1) * hop + win]
        frames = np.lib.stride_tricks.sliding_window_view(segment, win)[::hop]  # (F, win)
        spectrum = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1))  # (F, n_fft/2+1)
        log_mel = np.log(spectrum.astype(np.float32) @ mel + LOG_OFFSET)  # (F, 64)
        out[e0:e1] = log_mel.reshape(e1 - e0, EXAMPLE_FRAMES, MEL_BANDS)
    return out
