"""Publishing and retention (mmx.storage), on a local disk and on S3 (moto's server on
127.0.0.1): LATEST moves by compare-and-swap, sealed snapshots refuse writes, and prune keeps
superseded snapshots for a grace period and deletes ``_COMPLETE`` first."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from mmx import storage
from mmx.storage import LatestMoved, SnapshotSealed

BUCKET = "mmx-test"  # created by conftest's s3_endpoint fixture


def _write_snapshot(out: str, name: str) -> str:
    snap = storage.snapshot_uri(out, name)
    storage.assert_writable(snap)
    storage.write_table(pa.table({"x": [1, 2, 3]}), storage.join(snap, "trailers.parquet"))
    storage.write_table(pa.table({"x": [1]}), storage.join(snap, "faiss", "ids_00000.parquet"))
    storage.write_json(storage.join(snap, "metrics.json"), {"name": name})
    return snap


def _files(out: str, name: str) -> list[str]:
    fs, path = storage.filesystem(storage.snapshot_uri(out, name))
    return sorted(p.rsplit("/", 1)[-1] for p in fs.find(path)) if fs.exists(path) else []


def test_publish_moves_latest_and_records_what_it_superseded(out: str) -> None:
    assert storage.latest_name(out) is None
    _write_snapshot(out, "s1")
    storage.publish(out, "s1", expected=None)
    assert storage.latest_name(out) == "s1"
    assert storage.latest(out) == storage.snapshot_uri(out, "s1")
    assert storage.snapshot_complete(out, "s1")
    _write_snapshot(out, "s2")
    storage.publish(out, "s2", expected=storage.latest(out))  # a URI works too
    body = storage.read_json(storage.join(storage.snapshot_uri(out, "s2"), storage.COMPLETE))
    assert body["name"] == "s2" and body["previous"] == "s1"
    assert abs(body["published"] - time.time()) < 60
    assert storage.list_complete_snapshots(out) == ["s1", "s2"] == storage.snapshots(out)


def test_publish_without_expected_still_works(out: str) -> None:
    """The call the pipeline makes today: ``publish(out, name)``."""
    for name in ("s1", "s2"):
        _write_snapshot(out, name)
        storage.publish(out, name)
    assert storage.latest_name(out) == "s2"


def test_publish_refuses_when_latest_moved_since_the_run_started(out: str) -> None:
    _write_snapshot(out, "s1")
    storage.publish(out, "s1", expected=None)
    seen_by_a = storage.latest_name(out)  # run A starts from s1 …
    _write_snapshot(out, "s2b")
    storage.publish(out, "s2b", expected=seen_by_a)  # … run B publishes meanwhile
    _write_snapshot(out, "s2a")
    with pytest.raises(LatestMoved, match=r"LATEST names s2b, not s1 as when this run started.*"
                                          r"snapshot s2a is left unpublished") as refused:
        storage.publish(out, "s2a", expected=seen_by_a)
    assert (refused.value.expected, refused.value.current) == ("s1", "s2b")
    assert storage.latest_name(out) == "s2b"
    assert not storage.snapshot_complete(out, "s2a")
    storage.assert_writable(storage.snapshot_uri(out, "s2a"))  # still unsealed: resumable
    # the first publish of a root expects no LATEST
    with pytest.raises(LatestMoved, match="names s2b, not nothing"):
        storage.publish(out, "s2a", expected=None)


def test_concurrent_publishes_from_the_same_latest_one_wins(out: str) -> None:
    _write_snapshot(out, "s0")
    storage.publish(out, "s0", expected=None)
    names = [f"s1-{i}" for i in range(4)]
    for name in names:
        _write_snapshot(out, name)
    barrier = threading.Barrier(len(names))
    errors: dict[str, Exception] = {}

    def go(name: str) -> None:
        barrier.wait()
        try:
            storage.publish(out, name, expected="s0")
        except LatestMoved as err:
            errors[name] = err

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == len(names) - 1, errors
    (winner,) = set(names) - set(errors)
    assert storage.latest_name(out) == winner
    assert storage.list_complete_snapshots(out) == ["s0", winner]


def test_the_first_publishes_race_on_a_missing_latest(out: str) -> None:
    names = ["a", "b", "c"]
    for name in names:
        _write_snapshot(out, name)
    barrier = threading.Barrier(len(names))
    lost: list[str] = []

    def go(name: str) -> None:
        barrier.wait()
        try:
            storage.publish(out, name, expected=None)
        except LatestMoved:
            lost.append(name)

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lost) == 2
    assert storage.latest_name(out) in names and storage.latest_name(out) not in lost


def test_a_sealed_snapshot_refuses_writes(out: str) -> None:
    snap = _write_snapshot(out, "s1")
    storage.publish(out, "s1")
    with pytest.raises(SnapshotSealed, match="is complete"):
        storage.assert_writable(snap)
    with pytest.raises(SnapshotSealed, match="is complete"):
        _write_snapshot(out, "s1")
    storage.assert_writable(storage.snapshot_uri(out, "s2"))  # a new one is fine


def test_prune_keeps_superseded_snapshots_for_the_grace_period(out: str) -> None:
    t0 = time.time()
    for i, name in enumerate(["s1", "s2", "s3", "s4"]):
        _write_snapshot(out, name)
        # s3 and s4 say they were published 1000 s and 2000 s from now
        storage.publish(out, name, now=t0 + max(0, i - 1) * 1000)
    # s1 was superseded (by s2) at ~t0, s2 (by s3) at t0+1000, s3 (by s4) at t0+2000
    assert storage.prune(out, keep=1, grace_s=500, now=t0 + 100) == []
    assert storage.prune(out, keep=1, grace_s=500, now=t0 + 600) == ["s1"]
    assert storage.list_complete_snapshots(out) == ["s2", "s3", "s4"]
    assert _files(out, "s1") == []
    # keep counts too: s3 is among the newest two
    assert storage.prune(out, keep=2, grace_s=500, now=t0 + 10_000) == ["s2"]
    assert storage.prune(out, keep=0, grace_s=500, now=t0 + 10_000) == ["s3"]
    assert storage.list_complete_snapshots(out) == ["s4"]  # LATEST is never pruned
    assert storage.latest(out) == storage.snapshot_uri(out, "s4")


def test_prune_default_grace_is_a_week(out: str) -> None:
    for name in ("s1", "s2"):
        _write_snapshot(out, name)
        storage.publish(out, name)
    assert storage.prune(out, keep=1) == []  # superseded seconds ago
    assert storage.prune(out, keep=1, now=time.time() + 6 * 86400) == []
    assert storage.prune(out, keep=1, now=time.time() + 7 * 86400 + 60) == ["s1"]


def test_prune_understands_snapshots_published_before_complete_carried_json(out: str) -> None:
    for name in ("old1", "old2", "s3"):
        snap = _write_snapshot(out, name)
        storage.write_text(storage.join(snap, storage.COMPLETE), name + "\n")  # the old format
        storage.write_text(storage.join(out, storage.LATEST), name + "\n")
        time.sleep(1.1)  # S3 modification times are whole seconds
    assert storage.prune(out, keep=1, grace_s=3600) == []
    assert storage.prune(out, keep=1, grace_s=3600, now=time.time() + 3700) == ["old1", "old2"]
    # a LATEST written the old way is swapped like any other
    _write_snapshot(out, "s4")
    storage.publish(out, "s4", expected="s3")


def test_an_interrupted_prune_never_leaves_a_complete_looking_snapshot(
    out: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("s1", "s2"):
        _write_snapshot(out, name)
        storage.publish(out, name)
    deleted_first: list[list[str]] = []

    def crash(fs: object, path: str, marker: str) -> None:
        deleted_first.append(_files(out, "s1"))
        raise OSError("the network went away")

    monkeypatch.setattr(storage, "_delete_rest", crash)
    assert storage.prune(out, keep=1, grace_s=0, now=time.time() + 10) == []  # logged
    # _COMPLETE went first: everything else was still there when the crash came
    assert deleted_first == [["_DELETING", "ids_00000.parquet", "metrics.json",
                              "trailers.parquet"]]
    assert storage.list_complete_snapshots(out) == ["s2"]
    assert not storage.snapshot_complete(out, "s1")
    with pytest.raises(SnapshotSealed, match="being deleted"):
        storage.assert_writable(storage.snapshot_uri(out, "s1"))
    monkeypatch.undo()
    assert storage.prune(out, keep=1, grace_s=0, now=time.time() + 10) == []
    assert _files(out, "s1") == []  # the next prune finished the delete
    assert storage.list_complete_snapshots(out) == ["s2"]


def test_prune_leaves_unsealed_snapshots_alone(out: str) -> None:
    """A snapshot being written (no _COMPLETE, no _DELETING) is not prune's business."""
    for name in ("s1", "s2"):
        _write_snapshot(out, name)
        storage.publish(out, name)
    _write_snapshot(out, "s0-in-progress")
    storage.prune(out, keep=1, grace_s=0, now=time.time() + 10)
    assert "trailers.parquet" in _files(out, "s0-in-progress")

