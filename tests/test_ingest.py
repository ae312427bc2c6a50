"""analyse_trailer end to end: shapes, clip frames, audio, failures and exclusions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mmx.config import ExpertsConfig, ShotsConfig, VideoConfig
from mmx.errors import TrailerError
from mmx.ingest import analyse_trailer
from mmx.video import read_frames_pyav

VIDEO = VideoConfig(width=256, height=144, chunk_frames=64)
SHOTS = ShotsConfig(min_shots=10)
EXPERTS = ExpertsConfig(appearance_frames=2, max_audio_frames=4)


@pytest.fixture(scope="module")
def result(synth_trailer):
    return analyse_trailer(synth_trailer.path, VIDEO, SHOTS, EXPERTS)


def test_shapes_are_consistent(result, synth_trailer):
    c = len(result.clips)
    assert c >= SHOTS.min_shots
    assert result.clips.shape == (c, 2) and result.clips.dtype == np.int64
    assert result.features["scene"].shape == (c, 180)
    assert result.features["motion"].shape == (c, 30)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in result.features.values())
    assert result.audio.shape == (c, 4, 128) and result.audio.dtype == np.float32
    assert result.audio_frames.shape == (c,) and result.audio_frames.dtype == np.int32
    assert result.frames.shape == (c, 2, 144, 256, 3) and result.frames.dtype == np.uint8
    assert result.has_audio and (result.audio_frames >= 1).all()
    assert result.n_frames == synth_trailer.n_frames == result.info.n_frames


def test_shots_and_clips_follow_the_cuts(result, synth_trailer):
    found = [start for start, _ in result.shots[1:]]
    assert len(found) == len(synth_trailer.cuts)
    assert max(abs(a - b) for a, b in zip(found, synth_trailer.cuts, strict=True)) <= 2
    for (start, end), shot in zip(result.clips, result.shots, strict=True):
        assert (start, end) == (shot[0] + 1, shot[1] - 1)  # edge frames dropped
    seconds = result.clip_seconds()
    np.testing.assert_allclose(seconds[:, 0], result.clips[:, 0] / synth_trailer.fps)


def test_appearance_frames_come_from_their_clip(result, synth_trailer):
    """Each kept frame is a decoded frame inside its clip (not a neighbouring shot's)."""
    for c in (0, len(result.clips) // 2, len(result.clips) - 1):
        start, end = result.clips[c]
        reference = read_frames_pyav(synth_trailer.path, range(start, end), 256, 144)
        for frame in result.frames[c]:
            diff = np.abs(reference.astype(np.int16) - frame).mean(axis=(1, 2, 3))
            assert diff.min() < 1.5


def test_audio_rows_are_zero_padded(result):
    for c, n in enumerate(result.audio_frames):
        assert np.abs(result.audio[c, :n]).sum() > 0
        assert not result.audio[c, n:].any()


def test_chunk_size_does_not_change_results(result, synth_trailer):
    other = analyse_trailer(synth_trailer.path, VideoConfig(width=256, height=144,
                                                            chunk_frames=23), SHOTS, EXPERTS)
    assert other.shots == result.shots
    for name in ("scene", "motion"):
        np.testing.assert_allclose(other.features[name], result.features[name], rtol=1e-5,
                                   atol=1e-6)
    # the CNN's frames may differ by a few positions (cuts are reported a few frames late)
    assert other.frames.shape == result.frames.shape




def test_pyav_backend_agrees(result, synth_trailer):
    other = analyse_trailer(synth_trailer.path,
                            VideoConfig(width=256, height=144, chunk_frames=64, backend="pyav"),
                            SHOTS, EXPERTS)
    assert other.shots == result.shots
    np.testing.assert_array_equal(other.clips, result.clips)
    for name in ("scene", "motion"):  # scalers differ by rounding: features nearly equal
        a, b = other.features[name], result.features[name]
        assert np.linalg.norm(a - b) < 0.05 * np.linalg.norm(b)
    np.testing.assert_array_equal(other.audio, result.audio)


def test_no_audio_stream(silent_trailer):
    out = analyse_trailer(silent_trailer.path, VIDEO, SHOTS, EXPERTS)
    assert not out.has_audio and not out.info.has_audio
    assert not out.audio.any() and not out.audio_frames.any()
    assert out.audio.shape == (len(out.clips), 4, 128)


def test_experts_can_be_switched_off(silent_trailer):
    cfg = ExpertsConfig(names=("scene",))
    out = analyse_trailer(silent_trailer.path, VIDEO, SHOTS, cfg)
    assert set(out.features) == {"scene"} and out.frames.shape[1] == 0
    assert out.thumbnail is not None  # a thumbnail without the appearance CNN too


def test_thumbnail_is_a_frame_of_the_longest_clip(result):
    import cv2

    img = cv2.imdecode(np.frombuffer(result.thumbnail, np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert img.shape == (90, 160, 3)
    c = int(np.argmax(result.clips[:, 1] - result.clips[:, 0]))
    small = cv2.resize(result.frames[c, 1], (160, 90), interpolation=cv2.INTER_AREA)
    assert np.abs(img[..., ::-1].astype(int) - small.astype(int)).mean() < 6  # JPEG noise


@pytest.mark.parametrize("name", ["empty", "random", "truncated", "text", "audio_only"])
def test_unreadable_inputs_fail_with_reason(bad_files, name):
    with pytest.raises(TrailerError) as info:
        analyse_trailer(bad_files[name], VIDEO, SHOTS, EXPERTS)
    assert info.value.status == "failed" and len(info.value.reason) > len("failed: ")


def test_name_with_spaces_and_unicode(synth_trailer, tmp_path):
    path = tmp_path / "Ça tourne — 映画 trailer (2024).mp4"
    shutil.copy(synth_trailer.path, path)
    out = analyse_trailer(path, VIDEO, SHOTS, EXPERTS)
    assert len(out.clips) >= SHOTS.min_shots


def test_too_few_shots_is_excluded(short_video):
    with pytest.raises(TrailerError) as info:
        analyse_trailer(short_video.path, VIDEO, SHOTS, EXPERTS)
    assert info.value.status == "excluded"
    assert info.value.reason == "excluded: 4 shots < 10"


def test_implausible_frame_rate_fails(synth_trailer):
    video = VideoConfig(width=256, height=144, min_fps=synth_trailer.fps + 1,
                        max_fps=synth_trailer.fps + 100)
    with pytest.raises(TrailerError) as info:
        analyse_trailer(synth_trailer.path, video, SHOTS, EXPERTS)
    assert info.value.status == "failed" and "declared frame rate" in info.value.reason


def test_too_many_shots_is_excluded_while_decoding(synth_trailer):
    n_cuts = len(synth_trailer.cuts)
    shots = ShotsConfig(min_shots=2, max_clips=n_cuts // 2)
    with pytest.raises(TrailerError) as info:
        analyse_trailer(synth_trailer.path, VIDEO, shots, EXPERTS)
    assert info.value.status == "excluded" and "shots.max_clips" in info.value.reason


def test_decode_timeout_is_a_transient_failure(synth_trailer):
    from mmx.errors import is_transient

    video = VideoConfig(width=256, height=144, chunk_frames=16, decode_timeout_s=1e-6)
    with pytest.raises(TimeoutError) as info:
        analyse_trailer(synth_trailer.path, video, SHOTS, EXPERTS)
    assert is_transient(info.value)  # the machine may have been busy: retried next run


def test_bounds_do_not_change_the_cache_key():
    from mmx.config import build_config
    from mmx.pipeline import ingest_key

    base = build_config("tiny")
    bounded = build_config("tiny", overrides={"video": {"max_bytes": 1 << 20, "max_fps": 60.0,
                                                        "decode_timeout_s": 60.0},
                                              "shots": {"max_clips": 100}})
    assert ingest_key(base) == ingest_key(bounded)
    assert ingest_key(base) != ingest_key(build_config("tiny", overrides={"video": {
        "width": 320}}))


def test_too_long_is_excluded(silent_trailer):
    video = VideoConfig(max_duration_s=5.0)
    with pytest.raises(TrailerError) as info:
        analyse_trailer(silent_trailer.path, video, SHOTS, EXPERTS)
    assert info.value.status == "excluded" and "> 5 s" in info.value.reason


def _faststart_cut(src, dst, fraction: float, at_packet: bool) -> None:
    """``src`` remuxed with its index first, then cut after ``fraction`` of the bytes: exactly
    at a packet boundary (the decoder sees a clean end) or in the middle of a packet."""
    import av

    full = dst.with_name("full-" + dst.name)
    with av.open(str(src)) as inp, av.open(str(full), "w",
                                           options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    data = full.read_bytes()
    cut = int(len(data) * fraction)
    if at_packet:
        with av.open(str(full)) as inp:
            cut = max(p.pos for p in inp.demux() if p.pos is not None and 0 < p.pos <= cut)
    dst.write_bytes(data[:cut])


@pytest.mark.parametrize("at_packet", [True, False])
def test_truncated_stream_fails_as_truncated(synth_trailer, tmp_path, at_packet):
    """A file cut short after its index must not pass as a shorter trailer (or be excluded
    for too few shots): failed, and the reason says truncated."""
    path = tmp_path / "cut short.mp4"
    _faststart_cut(synth_trailer.path, path, 0.6, at_packet)
    with pytest.raises(TrailerError) as info:
        analyse_trailer(path, VIDEO, SHOTS, EXPERTS)
    assert info.value.status == "failed" and "truncated" in info.value.reason
    assert f"of {synth_trailer.n_frames}" in info.value.reason


@pytest.mark.parametrize("unit", ["a long trailer title with spaces ", "Ça tourne — 映画 "])
def test_absurdly_long_names(synth_trailer, tmp_path, unit):
    """Names near the 255-byte limit of one path component, ASCII or multi-byte UTF-8."""
    stem = (unit * 100)[:250]
    while len((stem + ".mp4").encode()) > 250:
        stem = stem[:-1]
    path = tmp_path / (stem + ".mp4")
    assert len(path.name.encode()) > 240
    shutil.copy(synth_trailer.path, path)
    out = analyse_trailer(path, VIDEO, SHOTS, EXPERTS)
    assert len(out.clips) >= SHOTS.min_shots and out.has_audio


def test_still_image_named_like_a_video(tmp_path):
    import cv2

    _, png = cv2.imencode(".png", np.full((90, 160, 3), 120, np.uint8))
    path = tmp_path / "poster.mp4"
    path.write_bytes(png.tobytes())
    with pytest.raises(TrailerError) as info:
        analyse_trailer(path, VIDEO, SHOTS, EXPERTS)
    assert info.value.status == "failed" and "still image" in info.value.reason


def test_gradual_transitions_are_in_no_clip(tmp_path):
    """A dissolve or fade ends as one boundary; its mixed frames feed no clip (issue 11)."""
    from mmx.synth_shots import write_shot_clip

    kinds = ["dissolve", "cut", "fade", "same_set_cut", "dissolve", "cut", "fade", "cut",
             "dissolve", "cut", "same_set_cut"]
    clip = write_shot_clip(tmp_path / "gradual.mp4", 11, width=256, height=144, kinds=kinds,
                           min_len=24, max_len=36, p_flash=0.5, p_whip=0.3)
    tf = analyse_trailer(clip.path, VIDEO, ShotsConfig(min_shots=10),
                         ExpertsConfig(names=("appearance", "scene")))
    assert len(tf.clips) == len(kinds) + 1
    for tr in clip.transitions:
        if tr.end > tr.start:
            assert not any(a < tr.end - 1 and tr.start + 1 < b for a, b in tf.clips), (tr, tf.clips)
    assert all(tf.frames[c, 0].any() for c in range(len(tf.clips)))  # every clip got a frame
