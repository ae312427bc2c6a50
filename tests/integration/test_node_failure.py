"""Node failure mid-ingest (issue 6): on a two-node ``ray.cluster_utils.Cluster`` on this
machine (head + one worker node, both on 127.0.0.1) the job runs as a separate driver; once the
first trailer's features are cached the worker node is removed (all its processes killed, as a
lost machine would be). Ray re-runs the lost decode tasks and restarts lost actors on the head;
the attempt ledger counts each lost in-flight decode once, below its bound. The run completes
with every input accounted for: one status each, every good trailer ok."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmx import storage

ROOT = Path(__file__).resolve().parents[2]
N_TRAILERS = 10


def _small_archive(src: Path, dst: Path) -> Path:
    import shutil

    (dst / "videos").mkdir(parents=True)
    keep = sorted((src / "videos").glob("trailer_*.mp4"))[:N_TRAILERS]
    for p in [*keep, src / "videos/teaser_0000.mp4", src / "videos/broken_0000.mp4"]:
        shutil.copy(p, dst / "videos" / p.name)
    shutil.copy(src / "labels.csv", dst / "labels.csv")
    return dst


def _cached(out: Path) -> list[Path]:
    return [p for p in out.glob("cache/features-*/*.parquet")]


def _parent(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def _decode_on_node(out: Path, raylet_pid: int) -> tuple[int, Path] | None:
    """(pid, attempt marker) of a decode in progress in a worker process of the node whose
    raylet is ``raylet_pid`` (the attempt ledger names the decoding process)."""
    for marker in out.glob("cache/features-*/_attempts/*/*.json"):
        try:
            pid = int(json.loads(marker.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue  # being written or just removed
        ancestor = pid
        while ancestor > 1:
            ancestor = _parent(ancestor)
            if ancestor == raylet_pid:
                return pid, marker
    return None


@pytest.mark.own_ray
def test_run_survives_losing_a_worker_node(synth_archive: Path, tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared local Ray (own_ray tests run last)
    node_args = {
        "node_ip_address": "127.0.0.1",
        "num_cpus": 2,
        "object_store_memory": 300 * 1024**2,
        "include_dashboard": False,
    }
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=node_args)
    try:
        worker = cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        arch = _small_archive(synth_archive, tmp_path / "arch")
        out = tmp_path / "out"
        # The driver must join as 127.0.0.1 too: Ray resolves a loopback address to this
        # machine's external IP unless it treats the host as a single-machine one.
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        log = (tmp_path / "job.log").open("w")
        # 4 decode tasks over 4 CPUs (the CNN actor takes one): some decode on the worker node.
        job = subprocess.Popen(
            [sys.executable, "jobs/index_archive.py", "--archive", str(arch), "--out", str(out),
             "--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1",
             "--resources.decode_concurrency=4"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        raylet_pid = worker.all_processes["raylet"][0].process.pid
        try:
            deadline = time.monotonic() + 600
            found = None
            while found is None and job.poll() is None and time.monotonic() < deadline:
                found = _decode_on_node(out, raylet_pid)
                if found is not None:
                    os.kill(found[0], signal.SIGSTOP)  # frozen: in flight until the node is gone
                    if not found[1].exists():  # it finished just before: let it go, look again
                        os.kill(found[0], signal.SIGCONT)
                        found = None
                time.sleep(0.05)
            assert found is not None, "no decode ran on the worker node"
            marker = found[1]
            done_before = len(_cached(out))
            cluster.remove_node(worker, allow_graceful=False)  # a lost machine
            code = job.wait(timeout=900)
        finally:
            if job.poll() is None:
                job.kill()
            log.close()
        text = (tmp_path / "job.log").read_text()
        assert code == 0, text[-4000:]
        # the removal hit work in flight (Ray's message when it re-runs a task of a dead node)
        assert "node it was running on is dead" in text, text[-4000:]
        # the lost attempt's marker outlived its process until the retry's row was cached
        assert not marker.exists()
        assert not list(out.glob("cache/features-*/_attempts/*/*.json"))
    finally:
        cluster.shutdown()

    assert done_before < N_TRAILERS + 2, "ingest had already finished: nothing was lost"
    snap = storage.latest(str(out))
    rows = pq.read_table(Path(snap) / "trailers.parquet").select(
        ["trailer_id", "status", "reason"]).to_pylist()
    statuses = {r["trailer_id"]: r for r in rows}
    assert len(rows) == len(statuses) == N_TRAILERS + 2  # every input, exactly once
    assert statuses.pop("broken_0000")["status"] == "failed"
    assert statuses.pop("teaser_0000")["status"] == "excluded"
    assert {r["status"] for r in statuses.values()} == {"ok"}, statuses
    report = json.loads(max((out / "runs").glob("*.json")).read_text())
    assert report["counts"] == {"ok": N_TRAILERS, "excluded": 1, "failed": 1}
