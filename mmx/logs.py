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
    # third-party deprecations are noise for an operator; mmx's own are shown (they are ours
    # to fix), once per place
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"mmx(\.|$)")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` (:func:`mmx.stages.session.connect`): mmx's INFO logs
    in every worker process (decode tasks, actors, training workers) reach the driver's output
    (``log_to_driver``), one line each, in the driver's format; other loggers stay at WARNING."""
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("mmx").setLevel(logging.INFO)
