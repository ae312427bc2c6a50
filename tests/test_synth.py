"""The synthetic archive (mmx.synth): real H.264/AAC files with the declared frame count and
fps, deterministic, labels and truth in the contract's format, generated once (idempotent),
and hard cuts that PySceneDetect's AdaptiveDetector really finds."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from scenedetect import AdaptiveDetector, FrameTimecode

from mmx import synth
from mmx.synth import GENRES, SynthTrailer, generate_archive, load_archive, write_trailer

N_ARCHIVE = 3
SEED = 1


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthTrailer]]:
    root = tmp_path_factory.mktemp("synth_archive")
    return root, generate_archive(str(root), n=N_ARCHIVE, seed=SEED)


def _frames(path: str, n: int | None = None) -> np.ndarray:
    """Decoded frames, uint8 RGB (n, h, w, 3)."""
    out = []
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            if n is not None and i >= n:
                break
            out.append(f.to_ndarray(format="rgb24"))
    return np.stack(out)


def _detect_cuts(path: str, fps: float) -> list[int]:
    """AdaptiveDetector (default settings) on PyAV-decoded BGR frames downscaled to 96 px."""
    detector = AdaptiveDetector()
    cuts: list[FrameTimecode] = []
    i = -1
    with av.open(path) as c:
        for i, frame in enumerate(c.decode(video=0)):
            bgr = frame.to_ndarray(format="bgr24")
            h, w = bgr.shape[:2]
            small = cv2.resize(bgr, (96, round(96 * h / w)), interpolation=cv2.INTER_AREA)
            cuts += detector.process_frame(FrameTimecode(i, fps), small)
    cuts += detector.post_process(FrameTimecode(i, fps))
    return [c.frame_num for c in cuts]


def _match(pred: list[int], t: SynthTrailer, tol: int = 2) -> tuple[int, int, int]:
    """(tp, fp, fn) of predicted cuts vs hard cuts within +-tol frames; predictions inside a
    dissolve span (+-tol) are ignored."""
    pred = [p for p in pred if not any(a - tol <= p < b + tol for a, b in t.dissolves)]
    used: set[int] = set()
    for cut in t.cut_frames:
        hits = [p for p in pred if abs(p - cut) <= tol and p not in used]
        if hits:
            used.add(min(hits, key=lambda p: abs(p - cut)))
    tp = len(used)
    return tp, len(pred) - tp, len(t.cut_frames) - tp


# --- files -----------------------------------------------------------------------------------


def test_archive_videos_decode_as_declared(archive: tuple[Path, list[SynthTrailer]]) -> None:
    root, trailers = archive
    ids = [t.trailer_id for t in trailers]
    assert ids == [f"trailer_{i:04d}" for i in range(N_ARCHIVE)] + [
        "teaser_0000",
        "noaudio_0000",
        "unlabelled_0000",
    ]
    for t in trailers:
        assert Path(t.path).is_file() and Path(t.path).parent == root / "videos"
        with av.open(t.path) as c:
            v = c.streams.video[0]
            assert v.codec_context.name == "h264"
            assert v.codec_context.pix_fmt == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == (320, 180)
            assert float(v.average_rate) == pytest.approx(t.fps) and t.fps == 24
            if t.has_audio:
                a = c.streams.audio[0]
                assert a.codec_context.name == "aac" and a.codec_context.layout.nb_channels == 1
                assert a.codec_context.sample_rate == synth.AUDIO_SAMPLE_RATE
                assert float(a.duration * a.time_base) == pytest.approx(t.n_frames / t.fps, abs=0.2)
            else:
                assert not c.streams.audio
            n = sum(1 for _ in c.decode(video=0))
        assert n == t.n_frames
        assert list(t.cut_frames) == sorted(t.cut_frames)
        assert all(0 < c < t.n_frames for c in t.cut_frames)
        assert all(6 <= b - a <= 10 and 0 < a < b <= t.n_frames for a, b in t.dissolves)
    has_audio = {t.trailer_id: t.has_audio for t in trailers}
    assert not has_audio["noaudio_0000"] and has_audio["trailer_0000"]


def test_shot_structure(archive: tuple[Path, list[SynthTrailer]]) -> None:
    _, trailers = archive
    by_id = {t.trailer_id: t for t in trailers}
    assert len(by_id["teaser_0000"].cut_frames) + len(by_id["teaser_0000"].dissolves) == 4
    for t in trailers:
        if t.trailer_id.startswith("trailer_"):
            n_shots = len(t.cut_frames) + len(t.dissolves) + 1
            assert 12 <= n_shots <= 24
        boundaries = sorted([*t.cut_frames, *(a for a, _ in t.dissolves)])
        gaps = np.diff([0, *boundaries, t.n_frames])
        assert gaps.min() >= synth.MIN_SHOT_FRAMES


def test_labels_csv_and_truth(archive: tuple[Path, list[SynthTrailer]]) -> None:
    root, trailers = archive
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["trailer_id", "genres"]
    labels = {r["trailer_id"]: r["genres"] for r in rows}
    assert set(labels) == {t.trailer_id for t in trailers} | {"broken_0000"}
    for tid, value in labels.items():
        genres = value.split("|") if value else []
        assert all(g in GENRES for g in genres)
        assert genres == [g for g in GENRES if g in genres]  # canonical order, no duplicates
        if tid != "unlabelled_0000":
            assert 1 <= len(genres) <= 3
    assert labels["unlabelled_0000"] == ""
    for t in trailers:
        assert labels[t.trailer_id] == "|".join(t.genres)

    truth = json.loads((root / "truth.json").read_text())
    assert truth["params"]["n"] == N_ARCHIVE and truth["params"]["seed"] == SEED
    assert list(truth["trailers"]) == [f"trailer_{i:04d}" for i in range(N_ARCHIVE)]
    rec = truth["trailers"]["trailer_0000"]
    assert set(rec) >= {"genres", "cut_frames", "dissolves", "n_frames", "fps", "has_audio"}
    status = {tid: x["expected_status"] for tid, x in truth["extras"].items()}
    assert status == {
        "teaser_0000": "excluded",
        "noaudio_0000": "ok",
        "unlabelled_0000": "ok",
        "broken_0000": "failed",
    }
    assert truth["extras"]["unlabelled_0000"]["genres"] == []
    assert truth["extras"]["unlabelled_0000"]["true_genres"]
    broken = root / truth["extras"]["broken_0000"]["path"]
    assert broken.is_file() and broken.stat().st_size > 0
    with pytest.raises(av.error.FFmpegError), av.open(str(broken)) as c:
        for _ in c.decode(video=0):
            pass
    assert load_archive(root) == trailers


def test_idempotent(
    archive: tuple[Path, list[SynthTrailer]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root, trailers = archive
    mtime = (root / "videos" / "trailer_0000.mp4").stat().st_mtime_ns

    def _no_regeneration(*args: object, **kwargs: object) -> None:
        raise AssertionError("archive was regenerated")

    monkeypatch.setattr(synth, "write_trailer", _no_regeneration)
    again = generate_archive(str(root), n=N_ARCHIVE, seed=SEED)
    assert again == trailers
    assert (root / "videos" / "trailer_0000.mp4").stat().st_mtime_ns == mtime
    # Different parameters are not the same archive (checked on a copy).
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert generate_archive(str(copy), n=N_ARCHIVE, seed=SEED) == load_archive(copy)
    with pytest.raises(AssertionError, match="regenerated"):
        generate_archive(str(copy), n=N_ARCHIVE, seed=SEED + 1)


# --- determinism ------------------------------------------------------------------------------


def test_deterministic_trailer(tmp_path: Path) -> None:
    a = write_trailer(str(tmp_path / "a.mp4"), ("Action",), seed=5, n_shots=4)
    b = write_trailer(str(tmp_path / "b.mp4"), ["Action"], seed=5, n_shots=4)
    c = write_trailer(str(tmp_path / "c.mp4"), ("Action",), seed=6, n_shots=4)
    assert (a.cut_frames, a.dissolves, a.n_frames) == (b.cut_frames, b.dissolves, b.n_frames)
    np.testing.assert_array_equal(_frames(a.path), _frames(b.path))
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    assert a.cut_frames != c.cut_frames or not np.array_equal(
        _frames(a.path, 30), _frames(c.path, 30)
    )
    # The decoded video is the in-memory rendering, up to H.264 loss.
    rendered, info = synth.render_frames(("Action",), seed=5, n_shots=4)
    assert info["cut_frames"] == a.cut_frames and len(rendered) == a.n_frames
    diff = np.abs(rendered[:30].astype(np.int16) - _frames(a.path, 30).astype(np.int16))
    assert diff.mean() < 6.0


def test_archive_labels_deterministic(
    archive: tuple[Path, list[SynthTrailer]], tmp_path: Path
) -> None:
    _, trailers = archive
    # Trailer i depends only on (seed, i): a smaller archive is a prefix of a larger one.
    same = generate_archive(str(tmp_path / "same"), n=1, seed=SEED, extras=False)
    assert [(t.genres, t.cut_frames, t.n_frames) for t in same] == [
        (t.genres, t.cut_frames, t.n_frames) for t in trailers[:1]
    ]
    np.testing.assert_array_equal(_frames(same[0].path, 24), _frames(trailers[0].path, 24))
    other = generate_archive(str(tmp_path / "other"), n=1, seed=SEED + 1, extras=False)
    assert (other[0].genres, other[0].cut_frames) != (trailers[0].genres, trailers[0].cut_frames)


def test_rejects_unknown_genre(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown genres"):
        write_trailer(str(tmp_path / "x.mp4"), ("Western",), seed=0)


# --- shot detection ---------------------------------------------------------------------------


def test_adaptive_detector_recovers_hard_cuts(archive: tuple[Path, list[SynthTrailer]]) -> None:
    _, trailers = archive
    tp = fp = fn = 0
    for t in trailers:
        a, b, c = _match(_detect_cuts(t.path, t.fps), t)
        tp, fp, fn = tp + a, fp + b, fn + c
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert tp > 30
    assert f1 >= 0.95, f"F1={f1:.3f} (tp={tp}, fp={fp}, fn={fn})"
