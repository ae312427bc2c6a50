"""The run lease ``<out>/work/LEASE`` (mmx.lease), on a local disk and on S3 (moto's server on
127.0.0.1): one winner among racing threads and processes, the holder named when refused,
wait mode, expiry takeover, heartbeats that keep it alive and detect a stolen lease, and a
release that deletes only its own lease."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from mmx import lease, storage
from mmx.lease import LeaseHeld, LeaseLost

BUCKET = "mmx-test"  # created by conftest's s3_endpoint fixture


HELD = re.compile(
    r"another run (?P<run>\S+) on (?P<host>\S+) \(pid \d+\) holds (?P<out>\S+) since "
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, last heartbeat \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ; it "
    r"expires at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(ttl (?P<ttl>[\d.]+) s\)"
)


def test_the_local_s3_honours_conditional_requests(s3_endpoint: str) -> None:
    """What the lease and LATEST rely on, checked against this moto (5.2.5) through s3fs."""
    import s3fs

    fs = s3fs.S3FileSystem(use_listings_cache=False)
    key = f"{uuid.uuid4().hex}/k"
    first = fs.call_s3("put_object", Bucket=BUCKET, Key=key, Body=b"1", IfNoneMatch="*")
    with pytest.raises(FileExistsError):
        fs.call_s3("put_object", Bucket=BUCKET, Key=key, Body=b"2", IfNoneMatch="*")
    with pytest.raises(FileExistsError):  # s3fs's own exclusive modes send the same header
        fs.pipe_file(f"{BUCKET}/{key}", b"3", mode="create")
    with pytest.raises(OSError) as refused:
        fs.call_s3("put_object", Bucket=BUCKET, Key=key, Body=b"4", IfMatch='"0000"')
    assert storage._s3_conflict(refused.value)
    second = fs.call_s3("put_object", Bucket=BUCKET, Key=key, Body=b"5", IfMatch=first["ETag"])
    with pytest.raises(OSError) as refused:
        fs.call_s3("delete_object", Bucket=BUCKET, Key=key, IfMatch=first["ETag"])
    assert storage._s3_conflict(refused.value)
    assert fs.cat_file(f"{BUCKET}/{key}") == b"5"
    fs.call_s3("delete_object", Bucket=BUCKET, Key=key, IfMatch=second["ETag"])
    assert not fs.exists(f"{BUCKET}/{key}")


def test_two_acquirers_at_once_one_wins(out: str) -> None:
    n = 4
    barrier = threading.Barrier(n)
    results: dict[int, object] = {}

    def take(i: int) -> None:
        barrier.wait()
        try:
            results[i] = lease.acquire(out, f"run-{i}", ttl_s=60, host=f"host{i}")
        except LeaseHeld as err:
            results[i] = err

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results.values() if isinstance(r, lease.Lease)]
    losers = [r for r in results.values() if isinstance(r, LeaseHeld)]
    assert len(winners) == 1 and len(losers) == n - 1
    won = winners[0]
    for err in losers:
        match = HELD.fullmatch(str(err))
        assert match, str(err)
        assert match["run"] == won.run and match["host"] == won.info.host
        assert match["out"] == out and match["ttl"] == "60"
        assert err.holder.run == won.run
    assert lease.read(out).token == won.info.token
    assert won.release()
    assert lease.read(out) is None


def _race(out: str, run: str, start_at: float) -> str:
    """One process of the race: acquire at ``start_at`` and keep the lease (never release)."""
    time.sleep(max(0.0, start_at - time.time()))
    try:
        lease.acquire(out, run, ttl_s=120)
    except LeaseHeld as err:
        return f"held: {err}"
    return "won"


def _warm(_: int) -> int:
    time.sleep(1.0)
    return os.getpid()


def test_processes_racing_one_wins(out: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 3
    with concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx) as pool:
        # start every worker first (spawn imports mmx), so that they really race
        list(pool.map(_warm, range(n)))
        start_at = time.time() + 1.0
        futures = [pool.submit(_race, out, f"proc-{i}", start_at) for i in range(n)]
        results = [f.result(timeout=120) for f in futures]
    assert results.count("won") == 1, results
    holder = lease.read(out)
    assert holder is not None and holder.run.startswith("proc-")
    for r in results:
        if r != "won":
            assert HELD.fullmatch(r.removeprefix("held: ")), r
            assert f"another run {holder.run} " in r


def test_wait_mode_gets_the_lease_once_it_is_released(out: str) -> None:
    first = lease.acquire(out, "first", ttl_s=60)
    threading.Timer(0.6, first.release).start()
    t0 = time.monotonic()
    second = lease.acquire(out, "second", ttl_s=60, wait_s=20, poll_s=0.1)
    assert 0.5 < time.monotonic() - t0 < 15
    assert lease.read(out).run == "second"
    with pytest.raises(LeaseHeld, match=r"another run second .*; waited \d+ s$"):
        lease.acquire(out, "third", ttl_s=60, wait_s=0.3, poll_s=0.1)
    second.release()


def test_expired_lease_is_taken_over_by_one_and_the_old_holder_finds_out(out: str) -> None:
    old = lease.acquire(out, "old", ttl_s=1)  # never heartbeats: as if its process hung
    with pytest.raises(LeaseHeld):
        lease.acquire(out, "early", ttl_s=60)
    time.sleep(1.3)
    n = 3
    barrier = threading.Barrier(n)
    results: list[object] = []

    def take(i: int) -> None:
        barrier.wait()
        try:
            results.append(lease.acquire(out, f"taker-{i}", ttl_s=60))
        except LeaseHeld as err:
            results.append(err)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, lease.Lease)]
    assert len(winners) == 1, results
    new = winners[0]
    assert lease.read(out).token == new.info.token
    with pytest.raises(LeaseLost, match=f"taken over by run {new.run}"):
        old.heartbeat()
    assert old.release() is False  # not ours any more: left alone
    assert lease.read(out).token == new.info.token
    assert new.release() is True
    assert lease.read(out) is None


def test_heartbeat_keeps_the_lease_alive(out: str) -> None:
    with lease.acquire(out, "beating", ttl_s=1.5) as held:
        held.start_heartbeat(0.2)
        time.sleep(2.5)  # well past the TTL of the first write
        with pytest.raises(LeaseHeld, match="another run beating "):
            lease.acquire(out, "other", ttl_s=60)
        assert held.lost is None
        assert lease.read(out).seq > 3
    assert lease.read(out) is None  # the context manager released it
    assert held._thread is None


def test_heartbeat_thread_detects_a_stolen_lease(out: str) -> None:
    held = lease.acquire(out, "victim", ttl_s=60)
    lost = threading.Event()
    held.start_heartbeat(0.1, on_lost=lambda err: lost.set())
    # someone overwrites the lease unconditionally (a buggy tool, an operator)
    thief = lease.LeaseInfo(run="thief", host="elsewhere", pid=1, acquired=time.time(),
                            heartbeat=time.time(), ttl_s=60, token="t")
    storage.write_bytes(lease.lease_uri(out), thief.to_bytes())
    assert lost.wait(10)
    assert isinstance(held.lost, LeaseLost)
    assert "taken over by run thief on elsewhere (pid 1)" in str(held.lost)
    with pytest.raises(LeaseLost):
        held.check()
    assert held.release() is False
    assert lease.read(out).run == "thief"  # release deleted only its own lease


def test_rename_names_the_run_in_the_lease(out: str) -> None:
    with lease.acquire(out, "provisional", ttl_s=60) as held:
        held.rename("20261203T000000Z-abcdef")
        assert lease.read(out).run == "20261203T000000Z-abcdef" == held.run
        with pytest.raises(LeaseHeld, match="another run 20261203T000000Z-abcdef "):
            lease.acquire(out, "other", ttl_s=60)


def test_heartbeat_detects_a_deleted_lease(out: str) -> None:
    held = lease.acquire(out, "victim", ttl_s=60)
    fs, path = storage.filesystem(lease.lease_uri(out))
    fs.rm_file(path)
    with pytest.raises(LeaseLost, match="removed by someone else"):
        held.heartbeat()
    assert held.release() is False


def test_release_then_reacquire_and_released_lease_cannot_heartbeat(out: str) -> None:
    first = lease.acquire(out, "a", ttl_s=60)
    assert first.release() is True
    assert first.release() is False  # idempotent
    with pytest.raises(LeaseLost):
        first.heartbeat()
    second = lease.acquire(out, "b", ttl_s=60)
    assert first.release() is False
    assert lease.read(out).run == "b"
    second.release()


def test_an_unreadable_lease_counts_as_held_until_it_is_old(out: str) -> None:
    storage.write_bytes(lease.lease_uri(out), b"{not json")
    with pytest.raises(LeaseHeld, match=r"another run \(unreadable lease\)"):
        lease.acquire(out, "next", ttl_s=60)
    time.sleep(1.2)
    took = lease.acquire(out, "next", ttl_s=1)  # its own TTL judges an unreadable lease
    assert lease.read(out).run == "next"
    took.release()


def test_local_stale_lock_is_broken(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    held = lease.acquire(out, "a", ttl_s=60)
    lock = Path(lease.lease_uri(out) + ".lock")
    lock.write_text("left by a dead process")
    old = time.time() - storage.LOCK_STALE_S - 5
    os.utime(lock, (old, old))
    held.heartbeat()  # breaks the stale lock instead of waiting for it
    assert not lock.exists()
    held.release()
    assert lease.read(out) is None


def test_only_local_and_s3_roots_have_a_lease() -> None:
    with pytest.raises(lease.LeaseError, match="only local paths and s3://"):
        lease.acquire(f"memory://mmx-{uuid.uuid4().hex}", "r")
