"""Per-trailer outcomes that are not ``ok``: the one exception type the ingest raises.

Owns :class:`TrailerError`. Every input file ends in exactly one status (DESIGN §3): ``ok``,
``excluded`` (a rule, e.g. too few shots) or ``failed`` (unreadable, corrupt, no video stream).
The pure cores raise a :class:`TrailerError`; the Ray stage catches it and writes the status and
the human-readable reason into the ``trailers`` table, so one bad file never stops the run.
"""

from __future__ import annotations

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
