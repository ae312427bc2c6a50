"""``ray job submit --working-dir . -- python jobs/index_archive.py …`` against a local head
started on 127.0.0.1 (and stopped afterwards): the documented way to run the nightly job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmx import storage

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dashboard at {url} did not come up in {timeout} s")


@pytest.mark.own_ray
def test_ray_job_submit(synth_archive: Path, tmp_path: Path) -> None:
    import ray

    ray.shutdown()  # the shared local Ray (this test runs last); its head is separate
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # as in an activated virtualenv: the job's `python` is the one mmx is installed in
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    gcs_port, dash_port = _free_port(), _free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
         "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats",
         # the job agent's default port may be taken by another Ray on this machine
         f"--dashboard-agent-listen-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dash_port}"
    out = tmp_path / "out"
    try:
        _wait_for_dashboard(url, head)
        for _ in range(12):  # the head's job agent may start after the dashboard answers
            proc = subprocess.run(
                [RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
                 "python", "jobs/index_archive.py", "--archive", str(synth_archive),
                 "--out", str(out), "--profile", "tiny"],
                check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
            )
            if "No available agent to submit job" not in proc.stdout + proc.stderr:
                break
            time.sleep(5)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "succeeded" in proc.stdout
        assert "trailers:" in proc.stdout  # the job's own summary reached the submitter
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
    snap = storage.latest(str(out))
    assert snap is not None and Path(snap, "trailers.parquet").exists()
