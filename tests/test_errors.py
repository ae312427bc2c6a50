"""mmx.errors: which failures are transient (not cached, retried) and which are the file's."""

from __future__ import annotations

import errno

import pytest

from mmx.errors import (
    TrailerError,
    failed,
    is_transient,
    is_transient_reason,
    transient_reason,
)


class _BotoLike(Exception):
    """Stands for an exception class of botocore (matched by module)."""


_BotoLike.__module__ = "botocore.exceptions"


@pytest.mark.parametrize("err", [
    MemoryError(),
    TimeoutError("read timed out"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    PermissionError(errno.EACCES, "denied"),
    FileNotFoundError(errno.ENOENT, "gone"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EIO, "I/O error"),
    _BotoLike("SlowDown"),
])
def test_storage_and_resource_errors_are_transient(err: BaseException) -> None:
    assert is_transient(err)


@pytest.mark.parametrize("err", [
    ValueError("bad header"),
    RuntimeError("DECORDError: cannot find video stream"),
    OSError(1094995529, "Invalid data found when processing input"),  # PyAV's AVERROR
    failed("no video stream"),
])
def test_errors_about_the_bytes_are_not(err: BaseException) -> None:
    assert not is_transient(err)


def test_cause_chain_is_followed() -> None:
    try:
        try:
            raise _BotoLike("503 SlowDown")
        except _BotoLike as inner:
            raise OSError("could not read") from inner
    except OSError as err:
        assert is_transient(err)
    # but a TrailerError is the file's verdict, whatever caused it
    err = TrailerError("failed", "truncated video")
    err.__cause__ = TimeoutError()
    assert not is_transient(err)


def test_reason_round_trip() -> None:
    reason = transient_reason(OSError(errno.EIO, "I/O error"), "reading the file")
    assert reason.startswith("transient: reading the file: OSError")
    assert "retried on the next run" in reason
    assert is_transient_reason(reason) and not is_transient_reason("not a video")
    assert not is_transient_reason(None)
