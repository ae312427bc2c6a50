"""Failure safety (issue 6): a trailer that kills its decode worker is retried a bounded number
of times through the attempt ledger (mmx/stages/ingest.py), then recorded ``failed`` with its
reason; every other trailer is unaffected and the run publishes.

The crash is real: ``resources.debug_crash_decode`` makes the decode task of matching files
kill its own Ray worker with SIGSEGV, where the decoder would run. Node loss is in
test_node_failure.py (its own two-node cluster).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmx import storage
from mmx.cli import run_job
from mmx.config import ConfigError, build_config
from mmx.stages import ingest

ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1"]


def _statuses(out: Path) -> dict[str, dict]:
    trailers = pq.read_table(Path(storage.latest(str(out))) / "trailers.parquet")
    return {r["trailer_id"]: r for r in trailers.select(["trailer_id", "status", "reason"])
            .to_pylist()}


def test_crashing_decoder_fails_its_trailer_only(
    ray_session, small_archive, tmp_path: Path
) -> None:
    # 10 trailers, a teaser (excluded) and a broken file
    arch = small_archive(tmp_path / "arch", n=10, extra=("teaser_0000", "broken_0000"))
    out = tmp_path / "out"
    base = ["--archive", str(arch), "--out", str(out), *ARGS]
    crash = ["--resources.debug_crash_decode=trailer_0002.*", "--resources.decode_attempts=2"]
    assert run_job([*base, *crash]) == 0

    rows = _statuses(out)
    assert len(rows) == 12  # one row per input file
    crashed = rows.pop("trailer_0002")
    assert crashed["status"] == "failed"
    assert crashed["reason"].startswith("worker crashed 2 times while decoding"), crashed
    assert rows.pop("broken_0000")["status"] == "failed"
    assert rows.pop("teaser_0000")["status"] == "excluded"
    assert {r["status"] for r in rows.values()} == {"ok"}  # the other 9 trailers
    assert all(r["reason"] == "" for r in rows.values())

    cache = next((out / "cache").iterdir())
    assert not list((cache / "_attempts").rglob("*.json"))  # the failure is recorded: no ledger
    report = json.loads(max((out / "runs").glob("*.json")).read_text())
    assert report["counts"] == {"ok": 9, "excluded": 1, "failed": 2}

    # the recorded failure is cached like any other result: the next night does not crash again
    assert run_job([*base, *crash, "--mode", "incremental"]) == 0
    again = json.loads(max((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
                       .read_text())
    assert again["n_decoded"] == 0 and not again["published"]


def _row(tmp_path: Path, name: str = "clip.mp4") -> dict:
    path = tmp_path / name
    path.write_bytes(b"not a video")
    return {"trailer_id": path.stem, "uri": str(path), "fingerprint": "f" * 16, "size_bytes": 11}


def test_ledger_bounds_attempts_without_decoding(tmp_path: Path) -> None:
    """Markers left by decodes whose process died: at the bound the trailer is failed, not
    decoded; below it, it is decoded and its own marker is removed whatever the result."""
    cfg = build_config("tiny", overrides={"resources": {"decode_attempts": 2}})
    cache = str(tmp_path / "cache")
    row = _row(tmp_path)
    ledger = ingest.AttemptLedger(cache, row["fingerprint"], "run-1")

    ledger.begin()  # one earlier attempt died: decode again (this input fails normally)
    out = ingest._analyse(row, cfg, cache, "run-1")
    assert out["status"] == "failed" and not out["reason"].startswith(ingest.CRASHED)
    assert len(ledger.lost()) == 1  # this attempt returned: only the dead one is left

    ledger.begin()  # a second one died: the bound is reached
    out = ingest._analyse(row, cfg, cache, "run-1")
    assert out["status"] == "failed"
    assert out["reason"].startswith("worker crashed 2 times while decoding"), out["reason"]
    assert "pid" in out["reason"]

    # the next run does not count attempts lost in another run (killed, aborted, node lost):
    # it forgets them and decodes
    out = ingest._analyse(row, cfg, cache, "run-2")
    assert out["status"] == "failed" and not out["reason"].startswith(ingest.CRASHED)
    assert ingest.AttemptLedger(cache, row["fingerprint"]).lost() == []

    ledger.begin()
    ledger.clear()
    assert ledger.lost() == []


def test_decode_attempts_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        build_config("tiny", overrides={"resources": {"decode_attempts": 0}})


def test_ray_data_retries_system_failures_without_limit() -> None:
    """The ledger is the bound because Ray Data's own retries are unbounded (Ray 2.60): tasks
    and actor-pool tasks are retried, actors restarted, after a worker or node dies. If an
    upgrade changes these defaults, lost nodes would fail the run: revisit the stages."""
    from ray.data import DataContext
    from ray.data._internal.execution.operators.actor_pool_map_operator import (
        ActorPoolMapOperator,
    )
    from ray.data._internal.remote_fn import cached_remote_fn

    actor = ActorPoolMapOperator._apply_default_remote_args({}, DataContext.get_current())
    assert actor["max_restarts"] == -1 and actor["max_task_retries"] == -1

    def probe() -> None: ...

    assert cached_remote_fn(probe)._default_options["max_retries"] == -1
