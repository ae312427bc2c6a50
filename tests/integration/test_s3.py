"""The job against s3:// end to end, on a local S3 (moto's server on 127.0.0.1, never a real
bucket): archive and output both on S3, bad inputs, a full run then an incremental one, the
snapshot read back through :mod:`mmx.query`, and no credential in logs or run reports.

The S3 settings reach every process through the standard AWS chain (env vars): the driver's
s3fs/pyarrow, and the Ray workers, which inherit the env of the process that started the local
Ray. If the session's Ray was started before this module set the env, it is restarted once.
"""

from __future__ import annotations

import io
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmx import storage
from mmx.cli import run_job
from mmx.synth import write_trailer

BUCKET = "mmx-it"
SECRET = "dummy-secret-5f0c1e7a9b"  # must never appear in logs or reports
KEY_ID = "AKIDDUMMYMMXTEST"
ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1"]
N_GOOD = 10
DUP = "trailer_0003 (copy ü)"


@dataclass(frozen=True)
class S3:
    endpoint: str

    def client(self):
        import boto3

        return boto3.client("s3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto in server mode on 127.0.0.1, and the AWS chain pointed at it (env vars)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    drop = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for k in drop:
            mp.delenv(k, raising=False)
        _clear_fs_cache()
        try:
            import boto3

            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield S3(endpoint)
        finally:
            _clear_fs_cache()
            server.stop()
    _clear_fs_cache()


def _clear_fs_cache() -> None:
    """fsspec caches filesystem instances: none made for another endpoint may be reused."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_ray(s3: S3, ray_session):
    """The session's local Ray, with workers that see the S3 env (restarted once if not)."""
    ray = ray_session

    @ray.remote(num_cpus=0)
    def endpoint() -> str | None:
        return os.environ.get("AWS_ENDPOINT_URL")

    if ray.get(endpoint.remote()) != s3.endpoint:
        # started before the env was set: a local Ray's workers inherit the env of the process
        # that started it, so start it again the way the session fixture does
        ray.shutdown()
        ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1",
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
        assert ray.get(endpoint.remote()) == s3.endpoint
    return ray


def _upload(client, local: Path, key: str) -> None:
    client.upload_file(str(local), BUCKET, key)


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="module")
def s3_runs(s3: S3, s3_ray, synth_archive: Path, tmp_path_factory: pytest.TempPathFactory):
    """A full run, then an incremental one (one new trailer, a retrain policy that is not due),
    archive and output on S3: the captured logs, both run reports and snapshot URIs."""
    client = s3.client()
    local = tmp_path_factory.mktemp("s3-archive")
    videos = synth_archive / "videos"
    good = sorted(videos.glob("trailer_*.mp4"))[:N_GOOD]
    for p in good:
        _upload(client, p, f"archive/videos/{p.name}")
    _upload(client, synth_archive / "labels.csv", "archive/labels.csv")
    bad = {
        "zero": b"",
        "truncated": good[1].read_bytes()[: good[1].stat().st_size // 3],
        "notes": b"not a video at all\n" * 200,  # a text file renamed .mp4
    }
    for name, data in bad.items():
        client.put_object(Bucket=BUCKET, Key=f"archive/videos/{name}.mp4", Body=data)
    # the same bytes under another name (sorting after the original, which is kept)
    _upload(client, good[3], f"archive/videos/{DUP}.mp4")

    archive_uri, out = f"s3://{BUCKET}/archive", f"s3://{BUCKET}/out"
    base = ["--archive", archive_uri, "--out", out, *ARGS]
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert run_job(base) == 0
        first = storage.latest(out)
        write_trailer(str(local / "night_0.mp4"), ("Horror",), seed=4242)
        _upload(client, local / "night_0.mp4", "archive/videos/night_0.mp4")
        policy = ["--train.retrain_every_days=30", "--train.retrain_growth=0.5"]
        assert run_job([*base, "--mode", "incremental", *policy]) == 0
        second = storage.latest(out)
    finally:
        root.removeHandler(handler)
    reports = [storage.read_json(u) for u in storage.list_files(f"{out}/runs", ".json")]
    reports.sort(key=lambda r: r["run"])
    return {
        "logs": logs.getvalue(), "reports": reports, "first": first, "second": second,
        "out": out, "good": [p.stem for p in good], "client": client,
    }


def snap_model(snap: str) -> dict:
    return storage.read_json(f"{snap}/model.json")


def test_statuses_and_incremental_on_s3(s3_runs) -> None:
    from mmx.query import Snapshot

    out, good = s3_runs["out"], s3_runs["good"]
    assert s3_runs["first"] != s3_runs["second"]
    full, incr = s3_runs["reports"]
    assert full["mode"] == "full" and full["published"]
    assert incr["mode"] == "incremental" and incr["published"]
    assert incr["decoded"] == ["night_0"]
    # the retrain policy was configured but not due: the model of the full run is reused
    assert full["retrain"] == {"retrain": True, "reason": "full run"}
    assert not incr["retrain"]["retrain"]
    assert full["run"] in incr["retrain"]["reason"] and "+10%" in incr["retrain"]["reason"]
    assert snap_model(s3_runs["second"]) == snap_model(s3_runs["first"])
    assert incr["changes"]["new"] == 1 and incr["changes"]["changed"] == 0
    # the nightly run reads only the new object's bytes: the others' ETags are unchanged
    n_files = sum(full["changes"].values())
    assert full["fingerprints"] == {"hashed": n_files, "reused": 0}
    assert incr["fingerprints"] == {"hashed": 1, "reused": n_files}

    snap = Snapshot.open(out)
    assert snap.uri == s3_runs["second"]
    rows = {r["trailer_id"]: r for r in snap.table("trailers").to_pylist()}
    inputs = [*good, "zero", "truncated", "notes", DUP, "night_0"]
    assert sorted(rows) == sorted(inputs)  # exactly one row (one status) per input file
    for tid in ("zero", "truncated", "notes"):
        assert rows[tid]["status"] == "failed", rows[tid]
    dup = rows[DUP]
    assert dup["status"] == "excluded" and good[3] in dup["reason"]
    for tid, r in rows.items():
        assert r["status"] in ("ok", "excluded", "failed")
        assert (r["reason"] == "") == (r["status"] == "ok"), (tid, r["reason"])
        assert r["uri"].startswith(f"s3://{BUCKET}/archive/videos/")
    first = {r["trailer_id"]: r for r in Snapshot.open(out, s3_runs["first"].rsplit("/", 1)[-1])
             .table("trailers").to_pylist()}
    ok_before = {t for t, r in first.items() if r["status"] == "ok"}
    ok_now = {t for t, r in rows.items() if r["status"] == "ok"}
    assert len(ok_before) >= N_GOOD - 1  # the synthetic trailers pass the shot rule
    assert ok_now == ok_before | {"night_0"}  # no good row lost, the new one added

    query = min(ok_before)
    near = snap.similar(query, k=3).to_pylist()  # through the sharded FAISS index on S3
    assert len(near) == 3
    assert all(n["trailer_id"] in ok_now - {query} for n in near)
    counts = {r["status"]: r["n"] for r in snap.sql(
        "SELECT status, count(*) AS n FROM trailers GROUP BY status").to_pylist()}
    assert counts == {s: sum(r["status"] == s for r in rows.values()) for s in counts}


def test_output_keys_in_bucket(s3_runs) -> None:
    client, out = s3_runs["client"], s3_runs["out"]
    keys = set(_keys(client, "out/"))
    name = client.get_object(Bucket=BUCKET, Key="out/LATEST")["Body"].read().decode().strip()
    assert s3_runs["second"].endswith(name)
    snap = f"out/snapshots/{name}/"
    for f in ("trailers.parquet", "scenes.parquet", "subgenres.parquet", "neighbours.parquet",
              "genres.json", "metrics.json", "config.json", storage.COMPLETE,
              "faiss/manifest.json"):
        assert snap + f in keys, f
    manifest = storage.read_json(f"{out}/snapshots/{name}/faiss/manifest.json")
    for f in manifest["files"]:
        assert snap + "faiss/" + f in keys
    for report in s3_runs["reports"]:
        assert f"out/runs/{report['run']}.json" in keys
    assert not any(k.startswith("out/work/PENDING") for k in keys)


def test_no_credentials_in_logs_or_reports(s3_runs, s3_ray) -> None:
    client = s3_runs["client"]
    assert s3_runs["logs"]  # the run did log
    assert SECRET not in s3_runs["logs"]
    # the Ray session's own logs (drivers, workers, Ray Data, Ray Train)
    node = getattr(s3_ray._private.worker, "_global_node", None)
    if node is not None:
        for path in Path(node.get_logs_dir_path()).rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    for key in _keys(client, "out/"):
        if key.endswith((".json", "LATEST", storage.COMPLETE, ".csv", ".txt")):
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            assert SECRET not in body, key
            assert KEY_ID not in body, key


def test_workers_that_cannot_reach_s3_stop_the_run_early(s3: S3, s3_ray) -> None:
    from mmx.stages import session

    uri = f"s3://{BUCKET}/out"
    session.check_storage(uri, "/local/paths/are/not/probed")  # these workers can
    dead = "http://127.0.0.1:1"  # a worker whose env points elsewhere
    env = {"AWS_ENDPOINT_URL": dead, "AWS_ENDPOINT_URL_S3": dead, "AWS_MAX_ATTEMPTS": "1",
           "AWS_RETRY_MODE": "standard"}
    errors = s3_ray.get(
        session._probe_storage.options(runtime_env={"env_vars": env}).remote([uri])
    )
    assert list(errors) == [uri] and "EndpointConnectionError" in errors[uri]
    assert SECRET not in errors[uri]
