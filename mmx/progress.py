"""A progress line per stage: done / total, rate and ETA, logged every few seconds."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts work items of one stage; ``update`` logs ``ingest: 57/240 trailers (24%),
    1.9/s, ETA 1m36s`` at most every ``every_s`` seconds, and ``done`` logs the last line."""

    def __init__(self, stage: str, total: int, unit: str = "trailers", every_s: float = 30.0,
                 clock=time.monotonic) -> None:
        self.stage, self.total, self.unit, self.every_s = stage, total, unit, every_s
        self._clock = clock
        self.started = self._last = clock()
        self.count = 0

    def line(self) -> str:
        elapsed = max(self._clock() - self.started, 1e-9)
        rate = self.count / elapsed
        share = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        left = self.total - self.count
        eta = (f", ETA {_duration(left / rate)}" if rate > 0 and left > 0 else "")
        return (f"{self.stage}: {self.count}/{self.total} {self.unit}{share}, "
                f"{rate:.2f}/s over {_duration(elapsed)}{eta}")

    def update(self, n: int) -> None:
        self.count += n
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("%s", self.line())

    def done(self) -> None:
        log.info("%s", self.line())
