"""Logging set-up shared by the entry points."""

from __future__ import annotations

import logging
import os
import warnings


def setup(verbose: bool = False) -> None:
    """Timestamped INFO logs for mmx on stderr; quieter third-party loggers."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("mmx").setLevel(level)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
