"""mmx.logs: third-party deprecation warnings are hidden, mmx's own are not."""

from __future__ import annotations

import warnings

from mmx import logs


def test_own_deprecations_are_shown_others_hidden() -> None:
    with warnings.catch_warnings(record=True) as seen:
        logs.setup()
        for module in ("mmx.stages.embed", "ray.data.context"):
            warnings.warn_explicit(f"deprecated in {module}", DeprecationWarning,
                                   filename="x.py", lineno=1, module=module, registry={})
    assert [str(w.message) for w in seen] == ["deprecated in mmx.stages.embed"]


def test_repeated_placement_group_cleaner_warnings_are_dropped() -> None:
    """Ray Train's cleaner warns every second without a dashboard: one line, not hundreds."""
    import logging

    class Keep(logging.Handler):  # on the logger itself: Ray's loggers do not propagate
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger(logs._PG_CLEANER)
    logger.addFilter(flt := logs.OnceFilter(logs._PG_CLEANER_NOISE))
    logger.addHandler(keep := Keep())
    level, logger.level = logger.level, logging.WARNING  # whatever Ray configured
    try:
        for _ in range(5):
            logger.warning(logs._PG_CLEANER_NOISE + ". State API may be unavailable.")
        logger.warning("something else")
    finally:
        logger.removeFilter(flt)
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert len(keep.messages) == 2 and keep.messages[1] == "something else"
    assert keep.messages[0].startswith(logs._PG_CLEANER_NOISE)
