"""One writer per output root: a lease file ``<out>/work/LEASE`` held by the running job.

A run acquires the lease before it writes anything, heartbeats it while it works, and releases
it at the end. The lease is a small JSON object ``{run, host, pid, acquired, heartbeat, ttl_s,
token, seq}``; ``token`` is unique to one acquisition, so an owner recognises its own lease.

How it is made atomic (see the conditional writes of :mod:`mmx.storage`):

* create: S3 ``PUT`` with ``If-None-Match: *`` (the server refuses if the key exists); on a
  local disk an O_EXCL temp file, written and fsynced, then hard-linked to ``LEASE`` (the link
  fails if ``LEASE`` exists, and nobody ever sees a half-written lease).
* heartbeat and takeover: S3 ``PUT`` with ``If-Match: <ETag read>``; locally a
  read-compare-rename under the short-lived lock ``LEASE.lock`` (O_EXCL), which every
  replace and delete of ``LEASE`` takes.
* release: S3 ``DELETE`` with ``If-Match``; locally a compare-and-unlink under ``LEASE.lock``.
  A lease that is no longer ours (taken over) is left alone.

A lease expires ``ttl_s`` (the holder's) after its last heartbeat; the last heartbeat is the
later of the time in the body (the holder's clock) and the object's modification time (the
store's clock), so a holder whose clock lags is not robbed early. Anyone may then take it over.

Remaining races, honestly:

* A holder that stops heartbeating for longer than its TTL while still alive (a long GC or
  SIGSTOP, a network partition from the store) loses the lease to a taker, and until its next
  heartbeat (which raises :class:`LeaseLost`) it still believes it holds it. Storage fencing
  covers the commit point: LATEST moves by compare-and-swap (:func:`mmx.storage.publish`), so
  the two runs cannot both publish over the same LATEST; other writes (feature cache, work
  files) are content-keyed or per-run.
* Expiry compares clocks of different machines (the taker's against the holder's and the
  store's): keep ``ttl_s`` far above clock skew plus the heartbeat interval.
* Locally, the lock ``LEASE.lock`` is broken after 30 s (:data:`mmx.storage.LOCK_STALE_S`): a
  process paused longer than that inside its millisecond critical section may overlap with
  the next one.
* On S3, the guarantees are those of the store's conditional requests. ``acquire`` checks that
  the store refuses a second ``If-None-Match: *`` create and fails loudly if it does not
  (a store that ignores the header); ``If-Match`` on DELETE is not probed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Self

from mmx import storage

log = logging.getLogger(__name__)

LEASE_FILE = "LEASE"  # <out>/work/LEASE
DEFAULT_TTL_S = 600.0
DEFAULT_POLL_S = 10.0


class LeaseError(RuntimeError):
    """The lease cannot be used on this output root."""


class LeaseHeld(LeaseError):
    """Another live run holds the lease."""

    def __init__(self, message: str, holder: LeaseInfo) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(LeaseError):
    """Our lease was taken over (it expired) or removed: stop writing."""


def lease_uri(out: str) -> str:
    """Where the lease of output root ``out`` lives."""
    return storage.join(out, "work", LEASE_FILE)


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease says about its holder. Times are unix seconds."""

    run: str
    host: str
    pid: int
    acquired: float
    heartbeat: float
    ttl_s: float
    token: str = ""
    seq: int = 0
    modified: float = 0.0  # the store's modification time of the object (not in the body)

    @property
    def last_seen(self) -> float:
        """The last heartbeat: the later of the holder's and the store's clock."""
        return max(self.heartbeat, self.modified)

    @property
    def expires(self) -> float:
        return self.last_seen + self.ttl_s

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def to_bytes(self) -> bytes:
        body = asdict(self)
        body.pop("modified")
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, found: storage.Versioned, fallback_ttl_s: float) -> LeaseInfo:
        """The lease in ``found``; an unreadable body counts as held since its mtime."""
        try:
            body: dict[str, Any] = json.loads(found.data)
            return cls(
                run=str(body["run"]), host=str(body["host"]), pid=int(body["pid"]),
                acquired=float(body["acquired"]), heartbeat=float(body["heartbeat"]),
                ttl_s=float(body["ttl_s"]), token=str(body.get("token", "")),
                seq=int(body.get("seq", 0)), modified=found.mtime,
            )
        except (ValueError, KeyError, TypeError):
            return cls(run="(unreadable lease)", host="?", pid=-1, acquired=found.mtime,
                       heartbeat=found.mtime, ttl_s=fallback_ttl_s, modified=found.mtime)

    def describe(self, out: str) -> str:
        return (
            f"another run {self.run} on {self.host} (pid {self.pid}) holds {out} since "
            f"{_fmt(self.acquired)}, last heartbeat {_fmt(self.last_seen)}; it expires at "
            f"{_fmt(self.expires)} (ttl {self.ttl_s:g} s)"
        )


def _fmt(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def read(out: str) -> LeaseInfo | None:
    """The current lease of ``out`` (None when free), for status reports."""
    found = storage.read_versioned(lease_uri(out))
    return None if found is None else LeaseInfo.parse(found, DEFAULT_TTL_S)


def acquire(
    out: str,
    run_id: str,
    ttl_s: float = DEFAULT_TTL_S,
    wait_s: float = 0.0,
    poll_s: float = DEFAULT_POLL_S,
    *,
    host: str | None = None,
) -> Lease:
    """Take the lease of output root ``out`` for run ``run_id``.

    If another run holds it and its lease has not expired, wait up to ``wait_s`` seconds
    (polling every ``poll_s``), then raise :class:`LeaseHeld` naming the holder. An expired
    lease is taken over atomically (only one taker wins). Start the heartbeat
    (:meth:`Lease.start_heartbeat`) right away: the lease lapses ``ttl_s`` after the last one.
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    uri = lease_uri(out)
    kind = storage.store_kind(uri)
    if kind == "other":
        raise LeaseError(f"no lease for {out}: only local paths and s3:// support the "
                         "conditional writes it needs")
    started = time.monotonic()
    me = LeaseInfo(run=run_id, host=host or socket.gethostname(), pid=os.getpid(),
                   acquired=0.0, heartbeat=0.0, ttl_s=float(ttl_s), token=uuid.uuid4().hex)
    while True:
        now = time.time()
        mine = replace(me, acquired=now, heartbeat=now)
        try:
            tag = storage.create_exclusive(uri, mine.to_bytes())
        except FileExistsError:
            pass
        else:
            if kind == "s3":
                _check_store_refuses_second_create(uri, mine)
            log.info("lease %s acquired by run %s", uri, run_id)
            return Lease(out, uri, mine, tag)
        found = storage.read_versioned(uri)
        if found is None:  # released between our create and read (or a write in flight)
            time.sleep(0.01 + random.random() * 0.05)
            continue
        holder = LeaseInfo.parse(found, ttl_s)
        if holder.token == me.token:  # our create landed; its reply was lost and retried
            return Lease(out, uri, holder, found.tag)
        if holder.expired():
            try:
                tag = storage.replace_if(uri, mine.to_bytes(), found.tag)
            except storage.PreconditionFailed:
                continue  # it heartbeated, was released or taken meanwhile: look again
            log.warning("lease %s taken over from run %s on %s (pid %d): expired at %s",
                        uri, holder.run, holder.host, holder.pid, _fmt(holder.expires))
            return Lease(out, uri, mine, tag)
        waited = time.monotonic() - started
        if waited >= wait_s:
            message = holder.describe(out)
            if wait_s > 0:
                message += f"; waited {waited:.0f} s"
            raise LeaseHeld(message, holder)
        time.sleep(max(0.01, min(poll_s, wait_s - waited, holder.expires - time.time() + 0.05)))


def _check_store_refuses_second_create(uri: str, mine: LeaseInfo) -> None:
    """Fail loudly on an S3-compatible store that ignores ``If-None-Match`` (it would let two
    runs both "create" the lease). The probe writes the same bytes again, so on such a store
    it changes nothing (same body, same ETag)."""
    try:
        storage.create_exclusive(uri, mine.to_bytes())
    except FileExistsError:
        return
    raise LeaseError(
        f"the store of {uri} accepted a second PUT with If-None-Match: * on an existing key: it "
        "does not support conditional writes, so no run lease (nor a safe LATEST) is possible"
    )


class Lease:
    """A held lease. Use as a context manager, or call :meth:`release`."""

    def __init__(self, out: str, uri: str, info: LeaseInfo, tag: str) -> None:
        self.out = out
        self.uri = uri
        self.info = info
        self._tag = tag
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False
        self.lost: LeaseLost | None = None  # set when the heartbeat found the lease gone
        self._last_ok = time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def run(self) -> str:
        return self.info.run

    def heartbeat(self) -> None:
        """Rewrite the lease with a fresh heartbeat, only if it is still ours
        (:class:`LeaseLost` otherwise)."""
        with self._lock:
            if self._released:
                raise LeaseLost(f"lease {self.uri} was released")
            if self.lost is not None:
                raise self.lost
            info = replace(self.info, heartbeat=time.time(), seq=self.info.seq + 1)
            try:
                self._tag = storage.replace_if(self.uri, info.to_bytes(), self._tag)
            except storage.PreconditionFailed:
                found = storage.read_versioned(self.uri)
                theirs = None if found is None else LeaseInfo.parse(found, self.info.ttl_s)
                if theirs is not None and theirs.token == info.token and theirs.seq == info.seq:
                    self._tag = found.tag  # our write landed; its reply was lost and retried
                else:
                    self.lost = LeaseLost(_lost_message(self, theirs))
                    raise self.lost from None
            self.info = info
            self._last_ok = time.monotonic()

    def rename(self, run: str) -> None:
        """Name the run in the lease anew (e.g. once the run knows its snapshot name: a resumed
        run takes the name of the run it resumes). Heartbeats; :class:`LeaseLost` if not ours."""
        with self._lock:
            self.info = replace(self.info, run=run)
        self.heartbeat()

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still ours (call before publishing)."""
        self.heartbeat()

    def start_heartbeat(
        self, interval_s: float | None = None,
        on_lost: Callable[[LeaseLost], None] | None = None,
    ) -> None:
        """Heartbeat every ``interval_s`` (default a third of the TTL) in a daemon thread until
        :meth:`release`. When the lease is found lost (or heartbeats failed for a whole TTL),
        the thread stops, sets :attr:`lost` and calls ``on_lost``."""
        if self._thread is not None:
            return
        interval = interval_s if interval_s is not None else self.info.ttl_s / 3

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.heartbeat()
                except LeaseLost as err:
                    if self._stop.is_set():
                        return
                    log.error("%s", err)
                    if on_lost is not None:
                        on_lost(err)
                    return
                except Exception as err:  # noqa: BLE001 - a flaky store: try again next beat
                    silent = time.monotonic() - self._last_ok
                    log.warning("lease heartbeat failed (%.0f s since the last): %s", silent, err)
                    if silent >= self.info.ttl_s:
                        self.lost = LeaseLost(
                            f"lease {self.uri} could not be renewed for {silent:.0f} s (ttl "
                            f"{self.info.ttl_s:g} s): another run may have taken it over"
                        )
                        log.error("%s", self.lost)
                        if on_lost is not None:
                            on_lost(self.lost)
                        return

        self._thread = threading.Thread(target=beat, name=f"lease-heartbeat-{self.run}",
                                        daemon=True)
        self._thread.start()

    def release(self) -> bool:
        """Stop the heartbeat and delete the lease if it is still ours. Returns whether it
        deleted it; idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._released:
                return False
            self._released = True
            try:
                storage.delete_if(self.uri, self._tag)
            except storage.PreconditionFailed:
                log.warning("lease %s was no longer ours at release: left alone", self.uri)
                return False
        log.info("lease %s released by run %s", self.uri, self.run)
        return True


def _lost_message(lease: Lease, theirs: LeaseInfo | None) -> str:
    if theirs is None:
        return f"lease {lease.uri} of run {lease.run} was removed by someone else"
    return (f"lease {lease.uri} of run {lease.run} was taken over by run {theirs.run} on "
            f"{theirs.host} (pid {theirs.pid}) at {_fmt(theirs.acquired)}: stop writing")
