"""The Ray Data ingest stage on bad and oddly named inputs: each file ends in one status with a
clear reason, and the good files beside them are featurised (shared local Ray)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from mmx import archive
from mmx.config import build_config
from mmx.stages import ingest
from mmx.synth import write_audio_only, write_trailer

NAME_MAX = 255  # bytes in one file name on Linux (ext4, xfs, tmpfs)


def long_name(unit: str, suffix: str, limit: int = 250) -> str:
    """``unit`` repeated into a file name of at most ``limit`` UTF-8 bytes (whole characters)."""
    stem = ""
    for ch in unit * limit:
        if len((stem + ch + suffix).encode()) > limit:
            break
        stem += ch
    return stem.rstrip() + suffix


def faststart_copy(src: Path, dst: Path) -> None:
    """Remux ``src`` with the index (moov) first, as streaming-ready MP4s are."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


@pytest.fixture(scope="module")
def odd_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """An archive of bad and oddly named inputs; returns it and {trailer_id: expected}.

    Expected is ``"ok"`` or ``"failed: <words the reason must contain>"``.
    """
    root = tmp_path_factory.mktemp("odd archive ü")
    expected: dict[str, str] = {}

    ascii_long = root / long_name("a very long trailer title with spaces ", ".mp4")
    unicode_long = root / long_name("Ça tourne — 映画 «trailer» ", ".mp4")
    assert 240 <= len(ascii_long.name.encode()) <= NAME_MAX
    assert 240 <= len(unicode_long.name.encode()) <= NAME_MAX
    for seed, path in enumerate([ascii_long, unicode_long]):
        write_trailer(path, [], seed=seed, n_shots=12)  # distinct bytes: distinct fingerprints
        expected[path.stem] = "ok"

    source = root.parent / "source.mp4"
    write_trailer(source, [], seed=5, n_shots=14)
    data = source.read_bytes()
    (root / "truncated index at end.mp4").write_bytes(data[: len(data) // 2])  # moov lost
    expected["truncated index at end"] = "failed: unreadable or corrupt"
    faststart_copy(source, root.parent / "fast.mp4")
    fast = (root.parent / "fast.mp4").read_bytes()
    (root / "truncated faststart.mp4").write_bytes(fast[: len(fast) * 6 // 10])  # stream cut
    expected["truncated faststart"] = "failed: truncated"

    (root / "zero bytes.mp4").write_bytes(b"")
    expected["zero bytes"] = "failed: empty file (0 bytes)"
    write_audio_only(root / "soundtrack only.m4a", seconds=2.0)
    expected["soundtrack only"] = "failed: no video stream"
    (root / "random bytes.mkv").write_bytes(np.random.default_rng(1).bytes(40_000))
    expected["random bytes"] = "failed: unreadable or corrupt"
    (root / "a poster.mp4").write_bytes(_png())
    expected["a poster"] = "failed: still image"
    (root / "subtitles.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n" * 50)
    expected["subtitles"] = "failed: no video stream"  # FFmpeg reads it: a subtitle stream
    (root / "release notes.mp4").write_text("not a video, whatever the extension says\n" * 40)
    expected["release notes"] = "failed: unreadable or corrupt"
    return root, expected


def _png() -> bytes:
    """A small PNG image (bytes)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.full((90, 160, 3), 120, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def statuses(ray_session, odd_archive, tmp_path_factory) -> dict[str, dict]:
    """Run fingerprinting and the ingest stage on the archive; rows by trailer_id."""
    root, _ = odd_archive
    cfg = build_config("tiny", overrides={"archive": str(root)})
    files = archive.list_inputs(str(root))
    inputs = ingest.fingerprint_inputs(files, cfg)
    cache = str(tmp_path_factory.mktemp("cache"))
    table = ingest.extract_features(inputs, cfg, cache)
    rows = {r["trailer_id"]: r for r in table.to_pylist()}
    for r in rows.values():
        r["cached"] = pq.read_table(ingest.cached_path(cache, r["fingerprint"])).to_pylist()[0]
    return rows


def test_every_odd_input_has_its_status_and_reason(statuses, odd_archive):
    _, expected = odd_archive
    assert set(statuses) == set(expected)  # one row per input, ids round-trip exactly
    for trailer_id, want in expected.items():
        row = statuses[trailer_id]
        status, _, words = want.partition(": ")
        assert row["status"] == status, (trailer_id, row["reason"])
        assert words in row["reason"], (trailer_id, row["reason"])
        assert (status == "ok") == (row["reason"] == "")


def test_long_and_unicode_names_are_featurised(statuses, odd_archive):
    _, expected = odd_archive
    for trailer_id in (t for t, want in expected.items() if want == "ok"):
        row = statuses[trailer_id]["cached"]
        assert row["trailer_id"] == trailer_id and row["uri"].endswith(trailer_id + ".mp4")
        assert row["n_clips"] >= 10 and len(row["appearance"]) == row["n_clips"] * 1280
        assert np.isfinite(row["appearance"]).all() and np.abs(row["appearance"]).sum() > 0


def test_unreadable_files_never_share_a_fingerprint(tmp_path):
    """Files that vanish (or cannot be read) between listing and hashing are keyed by their
    location: two of them are not each other's duplicate and do not share a cache entry."""
    from mmx.stages.ingest import _fingerprint_row

    a, b = (_fingerprint_row({"uri": str(tmp_path / n)})["fingerprint"] for n in ("a.mp4", "b.mp4"))
    assert a.startswith("unreadable-FileNotFoundError-") and b.startswith("unreadable-")
    assert a != b


def test_driver_and_ray_hashing_agree(ray_session, odd_archive):
    """A handful of small files is hashed by the driver, an archive's worth by Ray tasks
    (``resources.hash_in_driver_bytes``): the same fingerprints either way."""
    root, _ = odd_archive
    files = archive.list_inputs(str(root))
    assert sum(f.size_bytes for f in files) > 0
    driver = build_config("tiny", overrides={"archive": str(root)})
    tasks = build_config("tiny", overrides={"archive": str(root),
                                            "resources": {"hash_in_driver_bytes": 0}})
    by_driver, by_tasks = (ingest.fingerprint_inputs(files, c).sort_by("trailer_id")
                           for c in (driver, tasks))
    assert by_driver.equals(by_tasks)
    assert by_driver.num_rows == len(files)
    fingerprints = [f for f in by_driver["fingerprint"].to_pylist() if f]
    assert len(fingerprints) == len(files)
