"""One writer per output root (issue 13) through the real job, on a local disk and on the local
S3 (moto's server on 127.0.0.1): a run started while another holds the lease writes nothing
and exits 3, or waits for it with ``--lease-wait``; the lease of a dead run is taken over once
it has expired; a run during which LATEST moved publishes nothing and exits 5, leaving LATEST
where the other run put it; a snapshot with ``_COMPLETE`` is never written again, even when
``work/PENDING`` names it.

The other run is played by the test: it holds the lease (:func:`mmx.lease.acquire`) or moves
LATEST (:func:`mmx.storage.publish`) from a hook on a stage function, so the timing is exact.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mmx import lease, pipeline, storage
from mmx.cli import EXIT_LATEST_MOVED, EXIT_LEASE_HELD, run_job
from mmx.layout import OutputLayout
from mmx.synth import write_trailer

ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1"]
PROG = "index_archive.py: "


def _files(uri: str) -> dict[str, tuple]:
    """Every file under ``uri`` with its size and version (local mtime, S3 ETag and time),
    and every folder by name: equal listings mean nothing was written."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        return {}
    found = fs.find(path, withdirs=True, detail=True)
    return {
        name[len(path):]: (("dir",) if info["type"] == "directory" else
                           (info["size"], info.get("mtime"), info.get("ETag"),
                            str(info.get("LastModified"))))
        for name, info in found.items()
    }


def _stopped_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(PROG)]


def test_pending_naming_a_complete_snapshot_gets_a_new_name(out: str) -> None:
    layout = OutputLayout(out)
    assert pipeline._snapshot_name(layout)  # nothing pending: a new name
    storage.write_text(storage.join(layout.snapshot("20260101T000000Z-aaaaaa"), "x.json"), "{}")
    storage.write_text(layout.pending, "20260101T000000Z-aaaaaa\n")
    assert pipeline._snapshot_name(layout) == "20260101T000000Z-aaaaaa"  # unpublished: resumed
    storage.publish(out, "20260101T000000Z-aaaaaa", expected=None)
    fresh = pipeline._snapshot_name(layout)
    assert fresh != "20260101T000000Z-aaaaaa"  # published: never written again
    with pytest.raises(storage.SnapshotSealed):
        storage.assert_writable(layout.snapshot("20260101T000000Z-aaaaaa"))
    storage.assert_writable(layout.snapshot(fresh))


def test_one_writer_at_a_time(
    out: str, request: pytest.FixtureRequest, ray_session, small_archive, tmp_path: Path,
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if out.startswith("s3://"):
        request.getfixturevalue("s3_ray")  # workers that see the local S3
    arch = small_archive(tmp_path / "arch", n=10)
    videos = arch / "videos"
    # a short TTL, so that a waiting run polls every 3 s (a tenth of it)
    config = tmp_path / "lease.yaml"
    config.write_text("lease_ttl_s: 30\n")
    base = ["--archive", str(arch), "--out", out, "--config", str(config), *ARGS]
    layout = OutputLayout(out)

    # A run that died holding the lease: once the lease has expired, the next run takes it over.
    lease.acquire(out, "dead-run", ttl_s=0.5, host="gone")  # never heartbeats, never released
    time.sleep(0.6)
    assert run_job(base) == 0
    first = storage.latest_name(out)
    assert first and storage.snapshot_complete(out, first)
    assert lease.read(out) is None  # released at the end
    assert not storage.exists(layout.pending)

    # Another run holds the lease: this one writes nothing and says who holds it since when.
    write_trailer(str(videos / "night_0.mp4"), ("Horror",), seed=901)
    storage.write_text(layout.pending, first + "\n")  # names a complete snapshot (see below)
    holder = lease.acquire(out, "other-run", ttl_s=60, host="elsewhere")
    before = _files(out)
    capsys.readouterr()
    assert run_job([*base, "--mode", "incremental"]) == EXIT_LEASE_HELD
    (line,) = _stopped_lines(capsys.readouterr().err)
    assert line.startswith(f"{PROG}another run other-run on elsewhere (pid ")
    assert f" holds {out} since " in line and "expires at" in line
    assert _files(out) == before  # no snapshot, LATEST and PENDING as they were

    # With --lease-wait it waits, and runs once the holder has released the lease. PENDING
    # names the complete snapshot `first`: the run starts a new snapshot and leaves `first` be.
    # While it runs, another run publishes (LATEST moves): this run publishes nothing and exits
    # 5; LATEST stays where the other run put it. (One run for both: each costs minutes.)
    sealed = _files(layout.snapshot(first))
    other = "20260101T000000Z-other0"
    from mmx.stages import publish as publish_stage

    write_trailers = publish_stage.write_trailers

    def another_run_publishes(*args, **kwargs):
        storage.write_json(storage.join(layout.snapshot(other), "metrics.json"), {})
        storage.publish(out, other, expected=first)  # LATEST → other, a complete snapshot
        return write_trailers(*args, **kwargs)

    monkeypatch.setattr(publish_stage, "write_trailers", another_run_publishes)
    release = threading.Timer(2.0, holder.release)
    release.start()
    capsys.readouterr()
    try:
        t0 = time.monotonic()
        code = run_job([*base, "--mode", "incremental", "--lease-wait", "120"])
    finally:
        release.join()
    assert time.monotonic() - t0 >= 2.0  # it waited for the holder
    assert code == EXIT_LATEST_MOVED
    (line,) = _stopped_lines(capsys.readouterr().err)
    assert f"names {other}, not {first} as when this run started" in line
    assert storage.latest_name(out) == other
    second = storage.read_text(layout.pending).strip()
    assert second not in (first, other)  # a new snapshot, not the sealed one PENDING named
    assert storage.exists(storage.join(layout.snapshot(second), "metrics.json"))  # written...
    assert not storage.snapshot_complete(out, second)  # ... but not sealed, not published
    assert _files(layout.snapshot(first)) == sealed  # never written again
    assert storage.snapshot_complete(out, first)
    assert lease.read(out) is None
