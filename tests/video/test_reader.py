"""Reader: probe, forward-only chunked decoding, decord against PyAV, failure reasons."""

from __future__ import annotations

import pickle

import av
import numpy as np
import pytest

from mmx.errors import TrailerError, excluded, failed
from mmx.video import (
    evenly_spaced,
    frame_to_rgb,
    iter_frames,
    mean_in_ranges,
    nearest,
    probe,
    read_frames_pyav,
)

W, H = 256, 144


def test_probe_reads_metadata(synth_trailer):
    info = probe(synth_trailer.path)
    assert info.fps == pytest.approx(synth_trailer.fps)
    assert info.n_frames == synth_trailer.n_frames
    assert (info.width, info.height) == (synth_trailer.width, synth_trailer.height)
    assert info.duration_s == pytest.approx(synth_trailer.n_frames / synth_trailer.fps, rel=0.02)
    assert info.has_audio and info.codec == "h264"


@pytest.mark.parametrize(
    ("name", "words"),
    [("empty", "empty"), ("random", "unreadable"), ("truncated", "unreadable"),
     ("text", "text file"), ("audio_only", "no video stream")],
)
def test_probe_fails_with_reason(bad_files, name, words):
    with pytest.raises(TrailerError) as info:
        probe(bad_files[name])
    assert info.value.status == "failed"
    assert info.value.reason.startswith("failed: ") and words in info.value.reason


def test_trailer_error_reason_and_pickle():
    err = excluded("6 shots < 10")
    assert (err.status, err.reason, str(err)) == ("excluded", "excluded: 6 shots < 10",
                                                  "excluded: 6 shots < 10")
    back = pickle.loads(pickle.dumps(failed("no video stream")))
    assert (back.status, back.reason) == ("failed", "failed: no video stream")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_iter_frames_covers_video_in_order(synth_trailer, backend):
    starts, total = [], 0
    for first, frames in iter_frames(synth_trailer.path, width=W, height=H, chunk_frames=100,
                                     backend=backend):
        assert frames.dtype == np.uint8 and frames.shape[1:] == (H, W, 3)
        assert len(frames) <= 100 and first == total
        starts.append(first)
        total += len(frames)
    assert total == synth_trailer.n_frames
    assert starts == list(range(0, total, 100))


def test_decord_frames_match_pyav(synth_trailer):
    """Forward-only decord batches give the frames PyAV decodes at the same indices."""
    indices = [0, 1, 57, 99, 100, 101, 250, synth_trailer.n_frames - 1]
    indices += [c + d for c in synth_trailer.cuts[:4] for d in (-1, 0)]
    reference = read_frames_pyav(synth_trailer.path, indices, W, H).astype(np.int16)
    seen = {}
    for first, frames in iter_frames(synth_trailer.path, width=W, height=H, chunk_frames=64,
                                     backend="decord"):
        for i in indices:
            if first <= i < first + len(frames):
                seen[i] = frames[i - first].astype(np.int16)
    got = np.stack([seen[i] for i in indices])
    diff = np.abs(got - reference)
    # Same decoder; decord scales with swscale, whose integer YUV→RGB reads about one level
    # dark, the PyAV path with OpenCV (frame_to_rgb): they differ by that bias and rounding.
    assert diff.mean() < 2.0
    assert np.percentile(diff, 99) <= 8
    # and the right frames: each matches its own index far better than its neighbour's
    for k, i in enumerate(indices):
        if i + 1 < synth_trailer.n_frames and i + 1 in seen and i + 1 in synth_trailer.cuts:
            assert np.abs(got[k] - seen[i + 1]).mean() > 5 * max(diff[k].mean(), 0.1)


@pytest.mark.parametrize(("matrix", "code"), [("ITU601", 5), ("ITU709", 1)])
@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "yuv444p"])
def test_frame_to_rgb_colours(matrix, code, fmt):
    """Known colours survive RGB → Y'CbCr (each matrix and range) → frame_to_rgb."""
    colours = [(200, 30, 40), (20, 180, 60), (30, 60, 220), (128, 128, 128), (250, 250, 10),
               (5, 5, 5)]
    rgb = np.zeros((64, 96, 3), np.uint8)
    for i, colour in enumerate(colours):
        rgb[:, 16 * i : 16 * (i + 1)] = colour
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt,
                                                                     dst_colorspace=matrix)
    frame.colorspace = code  # tag the matrix, as a decoder does from the stream
    back = frame_to_rgb(frame, 96, 64).astype(np.int16)
    centres = back[:, [16 * i + 8 for i in range(len(colours))]]  # (64, 6, 3) patch centres
    assert np.abs(centres - np.array(colours)).max() <= 3
    half = frame_to_rgb(frame, 48, 32)  # scaled too, into a given array
    out = np.empty((32, 48, 3), np.uint8)
    assert frame_to_rgb(frame, 48, 32, out=out) is out
    np.testing.assert_array_equal(out, half)


def test_skip_loop_filter_on_unreferenced_frames_is_nearly_exact(synth_trailer):
    """Skipping deblocking where no frame predicts from it changes pixels by a hair, never
    which frame is where."""
    exact, fast = (np.concatenate([f for _, f in iter_frames(
        synth_trailer.path, width=W, height=H, chunk_frames=100, backend="pyav",
        skip_loop_filter=mode)]).astype(np.int16) for mode in ("none", "noref"))
    assert exact.shape == fast.shape == (synth_trailer.n_frames, H, W, 3)
    diff = np.abs(exact - fast)
    assert diff.mean() < 0.05 and np.percentile(diff, 99.9) <= 4  # a few edge pixels differ


def test_odd_size_falls_back_to_pyav(synth_trailer):
    """decord rejects some odd output sizes; the reader continues with PyAV."""
    chunks = list(iter_frames(synth_trailer.path, width=48, height=27, chunk_frames=200))
    assert sum(len(f) for _, f in chunks) == synth_trailer.n_frames
    assert chunks[0][1].shape[1:] == (27, 48, 3)


def test_sampling_maths():
    assert evenly_spaced(10, 20, 1).tolist() == [15]
    assert evenly_spaced(0, 10, 2).tolist() == [2, 7]
    assert evenly_spaced(5, 7, 4).tolist() == [5, 5, 6, 6]
    assert nearest(np.array([0, 10, 20]), np.array([4, 6, 15, 100])).tolist() == [0, 1, 1, 2]
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)  # samples at 0, 4, 8, 12
    means = mean_in_ranges(np.array([0, 4, 8, 12]), rows, np.array([[0, 5], [5, 7], [8, 13]]))
    np.testing.assert_allclose(means, [[1, 2], [2, 3], [5, 6]])  # [5, 7) empty → nearest (4)


def test_prefetch_thread_stops_and_reports_errors(synth_trailer, bad_files):
    import threading

    chunks = iter_frames(synth_trailer.path, width=W, height=H, chunk_frames=32,
                         backend="pyav", prefetch=2)
    first, frames = next(chunks)
    assert first == 0 and len(frames) == 32
    chunks.close()  # the consumer stops early (e.g. an exclusion rule fired)
    assert not [t for t in threading.enumerate() if t.name == "mmx-decode"]
    with pytest.raises(TrailerError):
        list(iter_frames(bad_files["truncated"], width=W, height=H, chunk_frames=32,
                         backend="pyav", prefetch=1))
    same = [f for _, f in iter_frames(synth_trailer.path, width=W, height=H, chunk_frames=100,
                                      backend="pyav", prefetch=0)]
    ahead = [f for _, f in iter_frames(synth_trailer.path, width=W, height=H, chunk_frames=100,
                                       backend="pyav", prefetch=2)]
    np.testing.assert_array_equal(np.concatenate(same), np.concatenate(ahead))
