"""The synthetic archive: real H.264/AAC files, deterministic, labels in the contract's
format, generated once (idempotent)."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np

from mmx.synth import GENRES, generate_archive, write_trailer


def _frames(path: str, n: int = 30) -> np.ndarray:
    with av.open(path) as c:
        out = [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0))]
    return np.stack(out)


def test_trailer_is_real_video_with_audio(tmp_path: Path) -> None:
    t = write_trailer(str(tmp_path / "a.mp4"), ("Horror",), seed=3)
    with av.open(t.path) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and c.streams.audio
        assert c.streams.audio[0].codec_context.name == "aac"
        n = sum(1 for _ in c.decode(video=0))
    assert n == t.n_frames and t.fps == 24
    assert list(t.cut_frames) == sorted(t.cut_frames) and t.cut_frames[-1] < t.n_frames
    silent = write_trailer(str(tmp_path / "b.mp4"), ("Drama",), seed=3, with_audio=False)
    with av.open(silent.path) as c:
        assert not c.streams.audio and not silent.has_audio


def test_deterministic(tmp_path: Path) -> None:
    a = write_trailer(str(tmp_path / "a.mp4"), ("Action",), seed=5)
    b = write_trailer(str(tmp_path / "b.mp4"), ("Action",), seed=5)
    c = write_trailer(str(tmp_path / "c.mp4"), ("Action",), seed=6)
    assert a.cut_frames == b.cut_frames
    np.testing.assert_array_equal(_frames(a.path), _frames(b.path))
    assert a.cut_frames != c.cut_frames or not np.array_equal(_frames(a.path), _frames(c.path))


def test_archive_labels_and_idempotence(tmp_path: Path) -> None:
    trailers = generate_archive(str(tmp_path), n=3, seed=1)
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert set(rows[0].keys()) == {"trailer_id", "genres"}
    for r in rows:
        assert all(g in GENRES for g in r["genres"].split("|") if g)
    assert any(r["genres"] == "" for r in rows)  # the unlabelled extra
    ids = {t.trailer_id for t in trailers}
    assert {f"trailer_000{i}" for i in range(3)} <= ids
    mtime = (tmp_path / "videos" / "trailer_0000.mp4").stat().st_mtime_ns
    again = generate_archive(str(tmp_path), n=3, seed=1)
    assert [t.trailer_id for t in again] == [t.trailer_id for t in trailers]
    assert (tmp_path / "videos" / "trailer_0000.mp4").stat().st_mtime_ns == mtime
