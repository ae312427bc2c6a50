"""The code's shape (DESIGN §5) as checked contracts: layers import only downwards, and the
pure cores (video, shots, experts, model, index, storage, training loop…) know nothing of
Ray. The contracts live in pyproject.toml ([tool.importlinter])."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    # import-linter's logging.config.dictConfig disables every logger that exists: give the
    # tests after this one their loggers back
    loggers = [lg for lg in logging.root.manager.loggerDict.values()
               if isinstance(lg, logging.Logger) and not lg.disabled]
    try:
        code = lint_imports(
            config_filename=os.fspath(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
        )
    finally:
        for lg in loggers:
            lg.disabled = False
    assert code == 0, "an import breaks the layers of DESIGN §5 (see the report above)"
