"""Fixture: one real run of the whole job (tiny profile) over the synthetic archive."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _job():
    spec = importlib.util.spec_from_file_location("index_archive", ROOT / "jobs/index_archive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def run(ray_session, synth_archive: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    code = _job().main(
        ["--archive", str(synth_archive), "--out", str(out), "--profile", "tiny",
         "--train.coarse_epochs=4"]
    )
    assert code == 0
    return out
