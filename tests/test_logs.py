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


def test_repeated_placement_group_cleaner_warnings_are_dropped(caplog) -> None:
    """Ray Train's cleaner warns every second without a dashboard: one line, not hundreds."""
    import logging

    logger = logging.getLogger(logs._PG_CLEANER)
    logger.addFilter(flt := logs.OnceFilter(logs._PG_CLEANER_NOISE))
    try:
        with caplog.at_level(logging.WARNING, logger=logs._PG_CLEANER):
            for _ in range(5):
                logger.warning(logs._PG_CLEANER_NOISE + ". State API may be unavailable.")
            logger.warning("something else")
    finally:
        logger.removeFilter(flt)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[1] == "something else"
    assert messages[0].startswith(logs._PG_CLEANER_NOISE)
