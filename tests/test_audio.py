"""Audio: decoding to 16 kHz mono and the VGGish log-mel front end."""

from __future__ import annotations

import numpy as np
import pytest

from mmx.audio import load_audio, log_mel_frames, mel_matrix


def test_three_seconds_give_three_examples():
    wave = np.random.default_rng(0).normal(0, 0.1, 3 * 16000).astype(np.float32)
    frames = log_mel_frames(wave)
    assert frames.shape == (3, 96, 64) and frames.dtype == np.float32
    assert log_mel_frames(wave[:15000]).shape == (0, 96, 64)  # under 0.96 s
    assert log_mel_frames(np.zeros(0, np.float32)).shape == (0, 96, 64)


def test_silence_is_log_offset_and_tone_lands_in_its_band():
    assert np.allclose(log_mel_frames(np.zeros(16000, np.float32)), np.log(0.01))
    t = np.arange(2 * 16000) / 16000
    for hz in (440.0, 2000.0):
        frames = log_mel_frames(np.sin(2 * np.pi * hz * t).astype(np.float32))
        band = int(frames.mean(axis=(0, 1)).argmax())
        mel = 1127 * np.log1p(np.array([125.0, hz, 7500.0]) / 700)
        expected = (mel[1] - mel[0]) / ((mel[2] - mel[0]) / 65) - 1  # centre of band i: i + 1
        assert abs(band - expected) <= 1


def test_blocks_do_not_change_the_result():
    wave = np.random.default_rng(1).normal(0, 0.1, 10 * 16000).astype(np.float32)
    np.testing.assert_allclose(log_mel_frames(wave, block_examples=3),
                               log_mel_frames(wave, block_examples=64), rtol=1e-5, atol=1e-5)


def test_mel_matrix_shape():
    weights = mel_matrix()
    assert weights.shape == (257, 64)
    assert (weights[0] == 0).all() and (weights.max(axis=0) > 0.5).all()
    freqs = np.linspace(0, 8000, 257)
    assert freqs[weights.sum(axis=1) > 0].min() >= 125 and freqs[weights.sum(1) > 0].max() <= 7500


def test_load_audio(synth_trailer, silent_trailer):
    wave = load_audio(synth_trailer.path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.size / 16000 == pytest.approx(synth_trailer.n_frames / synth_trailer.fps,
                                              abs=0.15)
    assert 0.2 < np.abs(wave).max() < 1.0  # the 0.3 tone survives AAC and downmixing
    assert load_audio(silent_trailer.path) is None
    # cut at max_s (the job passes the video's duration): decoding stops there
    short = load_audio(synth_trailer.path, max_s=1.5)
    assert short.size == 24000
    np.testing.assert_array_equal(short, wave[:24000])
