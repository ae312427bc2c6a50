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
    logging.getLogger(_PG_CLEANER).addFilter(OnceFilter(_PG_CLEANER_NOISE))


# Ray Train's placement-group cleaner asks the state API (the dashboard) every second whether
# the training controller is alive; a local Ray without a dashboard (mmx's own) answers with an
# error, and the cleaner warned once per second of every training (350 lines on the benchmark).
_PG_CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_PG_CLEANER_NOISE = "Failed to query Ray Train Controller actor state"


class OnceFilter(logging.Filter):
    """Let the first record whose message starts with ``prefix`` through, drop the repeats."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        first, self.seen = not self.seen, True
        return first
