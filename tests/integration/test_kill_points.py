"""SIGKILL of the whole job at each commit step (issue 13), then a rerun: LATEST is always
readable, nothing is lost and nothing duplicated.

The job runs as its own process (its own session and local Ray); ``MMX_DEBUG_KILL_AT``
(:mod:`mmx.killpoints`) makes it kill every process of its session with SIGKILL at a named
point: between two snapshot tables, between ``_COMPLETE`` and LATEST, right after LATEST moved,
in the middle of a training checkpoint (weights written, ``meta.json`` not) and in the middle of
an index shard (its FAISS file written, its id map not). The killed run's lease lapses after
5 s; the rerun waits for it and resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmx import storage
from mmx.cli import run_job
from mmx.killpoints import ENV
from mmx.synth import write_trailer

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1"]
NIGHT = ["--mode", "incremental", "--train.retrain_every_days=30", "--train.retrain_growth=0.5"]
LATE = ("late_0", "late_1")

# Each chain is a night killed at its first point, rerun and killed at the next, … then a rerun
# that publishes. Points are in pipeline order, so every killed run resumes the one before it and
# still reaches its own point (repeated crashes of one night, and one final rerun per chain
# instead of one per point: the kills are what cost, each a fresh local Ray).
CHAINS = {
    "publish": [
        "shard",  # a FAISS shard written, its id map not
        "publish:scenes",  # trailers.parquet written, scenes.parquet not
        "publish:complete",  # _COMPLETE written, LATEST not moved
        "publish:latest",  # LATEST moved, PENDING not cleared, nothing pruned
    ],
    "checkpoint": ["checkpoint"],  # a checkpoint's weights written, its meta.json not
}
EXTRA = {"checkpoint": ["--retrain"]}  # a checkpoint needs a training


@pytest.fixture(scope="module")
def baseline(ray_session, small_archive, tmp_path_factory) -> dict:
    """A published full run over 10 trailers and a broken file, and the same archive with two
    trailers more (the night every killed run processes)."""
    root = tmp_path_factory.mktemp("kill")
    arch = small_archive(root / "arch", n=10)
    out = root / "out"
    assert run_job(["--archive", str(arch), "--out", str(out), *ARGS]) == 0
    night = root / "night"
    shutil.copytree(arch, night)
    for i, name in enumerate(LATE):
        write_trailer(str(night / "videos" / f"{name}.mp4"), ("Horror",), seed=900 + i)
    ok = _table(storage.latest(str(out)), "trailers.parquet", ["trailer_id", "status"])
    return {"out": out, "night": night, "latest": storage.latest(str(out)),
            "ok": set(ok.filter(pc.equal(ok["status"], "ok"))["trailer_id"].to_pylist())}


def _table(snap: str, name: str, columns: list[str] | None = None):
    return pq.read_table(Path(snap) / name, columns=columns)


def _kill_session(sid: int) -> None:
    """Make sure nothing of the killed job's session survives (its local Ray included)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _check_readable(out: Path, n_inputs: int, must_be_ok: set[str]) -> str:
    """LATEST names a complete snapshot whose tables are whole and consistent; its URI."""
    snap = storage.latest(str(out))
    assert snap is not None and storage.exists(f"{snap}/_COMPLETE")
    trailers = _table(snap, "trailers.parquet", ["trailer_id", "status"])
    ids = trailers["trailer_id"].to_pylist()
    assert len(ids) == len(set(ids)) == n_inputs  # one row per input file, none twice
    ok = set(trailers.filter(pc.equal(trailers["status"], "ok"))["trailer_id"].to_pylist())
    assert must_be_ok <= ok  # nothing lost
    pairs = _table(snap, "neighbours.parquet", ["trailer_id", "neighbour_id"])
    keys = list(zip(pairs["trailer_id"].to_pylist(), pairs["neighbour_id"].to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) and set(pairs["trailer_id"].to_pylist()) == ok
    manifest = json.loads((Path(snap) / "faiss" / "manifest.json").read_text())
    assert manifest["ntotal"] == len(ok)
    scenes = _table(snap, "scenes.parquet", ["trailer_id"])
    assert set(scenes["trailer_id"].to_pylist()) == ok
    return snap


def _run_killed(night: list[str], point: str, tmp_path: Path) -> None:
    """The night as its own process in its own session, killed at ``point`` (asserted)."""
    log = tmp_path / f"killed-{point.replace(':', '-')}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "jobs/index_archive.py"), *night,
             "--config", str(tmp_path / "short_lease.yaml")],
            cwd=ROOT, start_new_session=True, stdout=fh, stderr=subprocess.STDOUT,
            env={**os.environ, ENV: point},
        )
        try:
            code = proc.wait(timeout=900)
        finally:
            _kill_session(proc.pid)
    assert code == -signal.SIGKILL, (point, code, log.read_text()[-3000:])  # killed there


@pytest.mark.parametrize("chain", list(CHAINS))
def test_kill_at_commit_steps_then_rerun(baseline: dict, chain: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(baseline["out"], out)
    before = storage.latest(str(out))
    n_before = len(_table(before, "trailers.parquet", ["trailer_id"]))
    night = ["--archive", str(baseline["night"]), "--out", str(out), *ARGS, *NIGHT,
             *EXTRA.get(chain, [])]
    (tmp_path / "short_lease.yaml").write_text("lease_ttl_s: 5\n")

    for point in CHAINS[chain]:
        _run_killed(night, point, tmp_path)
        # right after the kill: LATEST readable, the old snapshot or (killed after LATEST
        # moved) the new one, whole
        if point == "publish:latest":
            assert storage.latest(str(out)) != before
            _check_readable(out, n_before + len(LATE), baseline["ok"] | set(LATE))
        else:
            assert storage.latest(str(out)) == before, point
            _check_readable(out, n_before, baseline["ok"])
        assert (out / "work" / "PENDING").exists()  # the next run resumes this one

    # the rerun waits for the killed run's lease to lapse, resumes and publishes the night
    time.sleep(1)
    assert run_job([*night, "--lease-wait", "120"]) == 0
    final = _check_readable(out, n_before + len(LATE), baseline["ok"] | set(LATE))
    assert final != before
    assert not (out / "work" / "PENDING").exists()
    if chain == "checkpoint":  # the model the rerun published is whole
        model = json.loads((Path(final) / "model.json").read_text())
        assert model["trained_run"] != json.loads(
            (Path(before) / "model.json").read_text())["trained_run"]
