"""Per-trailer outcomes that are not ``ok``: the one exception type the ingest raises.

Owns :class:`TrailerError`. Every input file ends in exactly one status (DESIGN §3): ``ok``,
``excluded`` (a rule, e.g. too few shots) or ``failed`` (unreadable, corrupt, no video stream).
The pure cores raise a :class:`TrailerError`; the Ray stage catches it and writes the status and
the human-readable reason into the ``trailers`` table, so one bad file never stops the run.
"""

from __future__ import annotations

import errno
from typing import Literal

Status = Literal["excluded", "failed"]


class TrailerError(Exception):
    """A trailer that cannot be indexed.

    Attributes:
        status: ``"excluded"`` (a rule rejected it) or ``"failed"`` (it could not be read).
        reason: human-readable, prefixed with the status, e.g. ``"failed: no video stream"`` or
            ``"excluded: 6 shots < 10"``.
    """

    def __init__(self, status: Status, reason: str) -> None:
        if status not in ("excluded", "failed"):
            raise ValueError(f"status must be 'excluded' or 'failed', got {status!r}")
        prefix = f"{status}: "
        reason = reason.strip()
        if not reason.startswith(prefix):
            reason = prefix + reason
        super().__init__(reason)
        self.status: Status = status
        self.reason: str = reason

    def __reduce__(self) -> tuple[type[TrailerError], tuple[str, str]]:
        # Exceptions pickle through ``self.args``; keep both fields when Ray ships this error.
        return (type(self), (self.status, self.reason))

    def __str__(self) -> str:
        return self.reason


def excluded(reason: str) -> TrailerError:
    """A trailer rejected by a rule, e.g. ``excluded("6 shots < 10")``."""
    return TrailerError("excluded", reason)


def failed(reason: str) -> TrailerError:
    """A trailer that could not be read, e.g. ``failed("no video stream")``."""
    return TrailerError("failed", reason)


# Transient failures: the trailer's bytes may be fine, its storage or the worker was not (an S3
# 503, expired credentials, a full disk, out of memory). Such a ``failed`` row is published with
# this reason prefix but never cached, so the next run decodes the trailer again.
TRANSIENT = "transient: "

# errno values of storage and resource trouble (not a property of the file's bytes)
_TRANSIENT_ERRNO = frozenset(
    getattr(errno, name) for name in (
        "EIO", "ENOSPC", "EDQUOT", "ENOMEM", "EAGAIN", "EBUSY", "EMFILE", "ENFILE", "ESTALE",
        "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "EHOSTUNREACH",
        "ENETUNREACH", "ENETDOWN", "EACCES", "EPERM", "ENOENT", "EREMOTEIO",
    ) if hasattr(errno, name)
)
# libraries whose exceptions are about storage or the network, never about a video
_TRANSIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "urllib3", "requests",
                      "fsspec", "gcsfs", "adlfs", "google.auth", "google.api_core")


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) is a transient failure: storage,
    network, credentials, memory or disk space, not the content of the file being read."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TrailerError):
            return False
        if isinstance(e, (MemoryError, TimeoutError, ConnectionError, PermissionError,
                          FileNotFoundError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO:
            return True
        if type(e).__module__.startswith(_TRANSIENT_MODULES):
            return True
        e = e.__cause__ or e.__context__
    return False


def transient_reason(err: BaseException, where: str = "") -> str:
    """The published reason of a transient failure (``transient: …; retried on the next run``)."""
    what = f"{type(err).__name__}: {err}"[:400]
    return f"{TRANSIENT}{where + ': ' if where else ''}{what} (not cached: retried on the next run)"


def is_transient_reason(reason: str | None) -> bool:
    """Whether a published/cached ``reason`` marks a transient failure."""
    return bool(reason) and reason.startswith(TRANSIENT)
