"""Transient failures (issue 13): a storage error while a trailer is read fails it for this run
only. Its row is not cached, the run report counts it, and the next run reads it again and
indexes it; ``--retry-failed`` decodes trailers whose *cached* result is ``failed``.

The storage errors are real S3 errors: the archive sits on a local S3 server (moto, on
127.0.0.1) behind a small HTTP proxy that answers chosen GETs with ``503 SlowDown``, as S3
does under load. Every client (the driver's and the Ray workers' s3fs, boto3) talks to the
proxy through the standard AWS chain (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest

from mmx import storage
from mmx.cli import run_job
from mmx.stages import cache as features_cache

BUCKET = "mmx-transient"
ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1"]
NO_RETRAIN = ["--mode", "incremental", "--train.retrain_every_days=30",
              "--train.retrain_growth=0.5"]
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultyS3:
    """A proxy in front of an S3 server that fails GETs of chosen keys with 503 SlowDown."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.rules: dict[str, int] = {}  # key suffix → GETs allowed before every next one fails
        self.gets: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", _free_port()), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, suffix: str, allow: int = 0) -> None:
        """Fail every GET of a key ending in ``suffix`` after the first ``allow`` ones."""
        with self.lock:
            self.rules[suffix] = allow
            self.gets[suffix] = 0

    def heal(self) -> None:
        with self.lock:
            self.rules.clear()

    def should_fail(self, method: str, path: str) -> bool:
        if method != "GET":
            return False
        key = urlsplit(path).path
        with self.lock:
            for suffix, allow in self.rules.items():
                if key.endswith(suffix):
                    self.gets[suffix] += 1
                    if self.gets[suffix] > allow:
                        self.failed[suffix] += 1
                        return True
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(proxy: FaultyS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _forward(self) -> None:
            body = self._body()
            if proxy.should_fail(self.command, self.path):
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                self.end_headers()
                self.wfile.write(SLOW_DOWN)
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("transfer-encoding", "expect", "connection")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() in ("transfer-encoding", "connection"):
                        continue
                    if k.lower() == "content-length" and self.command != "HEAD":
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler


@pytest.fixture(scope="module")
def faulty_s3(ray_session) -> Iterator[FaultyS3]:
    """moto on 127.0.0.1 behind the fault-injecting proxy; the AWS chain and a restarted local
    Ray (its workers inherit the env) pointed at the proxy."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    proxy = FaultyS3(port)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_ENDPOINT_URL_S3": proxy.endpoint,
           # botocore's standard retries, fewer of them: a failing read gives up sooner
           "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}
    ray = ray_session
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(k, raising=False)
            s3fs.S3FileSystem.clear_instance_cache()
            ray.shutdown()  # a local Ray's workers inherit the env of the process starting it
            ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1",
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
            import boto3

            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield proxy
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        ray.shutdown()  # restarted without the proxy's env for the tests after this module
        ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1",
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
        proxy.close()
        moto.stop()


def _statuses(out: Path) -> dict[str, dict]:
    trailers = pq.read_table(Path(storage.latest(str(out))) / "trailers.parquet",
                             columns=["trailer_id", "status", "reason", "fingerprint"])
    return {r["trailer_id"]: r for r in trailers.to_pylist()}


def _last_report(out: Path) -> dict:
    return json.loads(max((out / "runs").glob("*.json"), key=os.path.getmtime).read_text())


def test_storage_errors_fail_for_one_run_and_are_retried(
    faulty_s3: FaultyS3, small_archive, tmp_path: Path
) -> None:
    import boto3

    arch = small_archive(tmp_path / "arch", n=10, extra=("broken_0000",))
    # a file larger than video.max_bytes: excluded without being read
    videos = sorted((arch / "videos").glob("*.mp4"))
    limit = max(p.stat().st_size for p in videos)
    (arch / "videos" / "huge.mp4").write_bytes(videos[0].read_bytes() + b"\0" * (limit + 1))
    client = boto3.client("s3")
    for p in sorted(arch.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), BUCKET, f"arch/{p.relative_to(arch).as_posix()}")
    out = tmp_path / "out"
    base = ["--archive", f"s3://{BUCKET}/arch", "--out", str(out), *ARGS,
            f"--video.max_bytes={limit}"]
    faulty_s3.fail("videos/huge.mp4", allow=0)  # never read: fingerprinting it would fail

    # trailer_0001: hashed fine, then every read fails (during decode); trailer_0002: not even
    # its fingerprint can be read
    faulty_s3.fail("videos/trailer_0001.mp4", allow=1)
    faulty_s3.fail("videos/trailer_0002.mp4", allow=0)
    assert run_job(base) == 0
    assert faulty_s3.failed["videos/trailer_0001.mp4"] and faulty_s3.failed[
        "videos/trailer_0002.mp4"]
    rows = _statuses(out)
    assert len(rows) == 12  # one row per input file
    huge = rows.pop("huge")
    assert huge["status"] == "excluded" and "video.max_bytes" in huge["reason"], huge
    assert faulty_s3.failed["videos/huge.mp4"] == 0
    first, second = rows.pop("trailer_0001"), rows.pop("trailer_0002")
    for row in (first, second):
        assert row["status"] == "failed", row
        assert row["reason"].startswith("transient: "), row
        assert "retried on the next run" in row["reason"]
    assert "fingerprint" in second["reason"]
    assert rows.pop("broken_0000")["status"] == "failed"  # deterministic: stays failed, cached
    assert {r["status"] for r in rows.values()} == {"ok"}
    report = _last_report(out)
    assert report["transient_failures"] == {"count": 2, "ids": ["trailer_0001", "trailer_0002"]}
    # a transient failure is never cached (the broken file's failure is)
    cache = str(next((out / "cache").iterdir()))
    cached = features_cache.locate(cache)
    assert first["fingerprint"] not in cached
    broken = _statuses(out)["broken_0000"]
    assert broken["fingerprint"] in cached

    # storage healthy again: the next night reads both and indexes them, nothing else decoded
    faulty_s3.heal()
    assert run_job([*base, *NO_RETRAIN]) == 0
    rows = _statuses(out)
    assert rows["trailer_0001"]["status"] == "ok" and rows["trailer_0002"]["status"] == "ok"
    assert rows["trailer_0001"]["reason"] == ""
    report = _last_report(out)
    assert report["published"] and sorted(report["decoded"]) == ["trailer_0001", "trailer_0002"]
    assert report["transient_failures"]["count"] == 0
    assert not report["retrain"]["retrain"]  # the model was reused

    # --retry-failed decodes the cached failure again (still broken: failed, same reason)
    assert run_job([*base, *NO_RETRAIN, "--retry-failed"]) == 0
    report = _last_report(out)
    assert report["decoded"] == ["broken_0000"], report["decoded"]
    assert _statuses(out)["broken_0000"]["reason"] == broken["reason"]
    # ... and a night without the flag decodes nothing
    assert run_job([*base, *NO_RETRAIN]) == 0
    assert _last_report(out)["n_decoded"] == 0
