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
