"""The progress line of long stages: counts, rate, ETA, and how often it is logged."""

from __future__ import annotations

import logging

import pytest

from mmx.progress import Progress


def test_progress_line_has_rate_and_eta_and_is_rate_limited(caplog) -> None:
    now = [0.0]
    p = Progress("ingest", 240, every_s=30, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="mmx")
    now[0] = 10.0
    p.update(20)  # 10 s after the start: too soon for a line
    assert not caplog.records
    now[0] = 60.0
    p.update(100)  # 120 done in 60 s: 2/s, 120 left → 1 minute
    assert caplog.records[-1].getMessage() == (
        "ingest: 120/240 trailers (50%), 2.00/s over 1m00s, ETA 1m00s")
    now[0] = 61.0
    p.update(1)
    assert len(caplog.records) == 1  # at most one line per every_s
    now[0] = 7300.0
    p.update(119)
    p.done()
    assert caplog.records[-1].getMessage().startswith("ingest: 240/240 trailers (100%)")
    assert "ETA" not in caplog.records[-1].getMessage()
    assert "over 2h01m" in caplog.records[-1].getMessage()


def test_progress_interval_must_be_positive() -> None:
    from mmx.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="progress_every_s"):
        build_config("tiny", None, {"resources": {"progress_every_s": 0}})
