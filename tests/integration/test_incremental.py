"""Nightly runs: incremental decoding by content fingerprint, no-op reruns, and a killed run
that leaves LATEST intact and resumes from the per-trailer feature cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmx import storage
from mmx.cli import EXIT_LEASE_HELD, run_job
from mmx.synth import write_trailer

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1"]


def _report(out: Path) -> dict:
    newest = max((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def test_incremental_decodes_only_new_and_changed(
    ray_session, small_archive, tmp_path: Path, capsys
) -> None:
    arch = small_archive(tmp_path / "arch", n=11)
    out = tmp_path / "out"
    base = ["--archive", str(arch), "--out", str(out), *ARGS]
    assert run_job(base) == 0
    first = storage.latest(str(out))
    assert _report(out)["n_decoded"] == 12
    # no sidecar: the trailer-only run, as before (no title experts, nothing recorded)
    assert not Path(first, "title_metadata.parquet").exists()
    assert "metadata" not in json.loads(Path(first, "metrics.json").read_text())

    videos = arch / "videos"
    for i, genre in enumerate(("Horror", "Comedy", "Action")):
        write_trailer(str(videos / f"night2_{i}.mp4"), (genre,), seed=900 + i)
    write_trailer(str(videos / "trailer_0001.mp4"), ("Drama",), seed=999)  # changed content
    # a partial metadata sidecar arrives too (issue 15): a poster for one title, a plot for
    # some, a year only for another; the rest have no row
    (arch / "posters").mkdir()
    poster = np.zeros((90, 60, 3), np.uint8)
    poster[10:40, 5:50] = (220, 30, 30)
    cv2.imwrite(str(arch / "posters" / "t0.png"), poster)
    sidecar = ("trailer_id,plot,year,poster\n"
               "trailer_0000,A crew plans a heist.,1999,posters/t0.png\n"
               "trailer_0002,Two friends go on a road trip.,,\n"
               "trailer_0003,,2012,\n")
    (arch / "metadata.csv").write_text(sidecar)
    # the title experts (on by default, ExpertsConfig.names) named anyway: the test means the
    # same whatever the default
    base = [*base, "--experts.names=[appearance,scene,motion,audio,text,poster,metadata]"]
    # a second file named like a trailer of the archive: excluded, never decoded
    write_trailer(str(videos / "bonus" / "trailer_0004.mp4"), ("Horror",), seed=998)
    # --dry-run says what the night will do, and writes nothing
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    capsys.readouterr()
    assert run_job([*base, "--mode", "incremental", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["to_hash"] == ["night2_0", "night2_1", "night2_2", "trailer_0001"]
    assert plan["to_decode"] == [] and len(plan["featurised"]) == 11
    assert list(plan["excluded"]) == ["videos/bonus/trailer_0004.mp4"]
    assert plan["latest"] == first and plan["inputs"] == 16
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert run_job([*base, "--mode", "incremental"]) == 0
    report = _report(out)
    assert sorted(report["decoded"]) == ["night2_0", "night2_1", "night2_2", "trailer_0001"]
    assert report["changes"] == {"new": 4, "changed": 1, "unchanged": 11, "removed": 0}
    # only the new and rewritten files were read: the others' size and mtime are unchanged
    assert report["fingerprints"] == {"hashed": 5, "reused": 11}
    second = storage.latest(str(out))
    assert second != first
    trailers = pq.read_table(Path(second) / "trailers.parquet")
    assert trailers.num_rows == 16  # 12 + 3 new + the clash; the changed one replaces its row
    # built from the previous snapshot's float32[D] tables: still fixed-size vectors
    assert pa.types.is_fixed_size_list(trailers.schema.field("embedding").type)
    rows = {r["trailer_id"]: r for r in trailers.to_pylist()}
    clash = rows["videos/bonus/trailer_0004.mp4"]
    assert clash["status"] == "excluded"
    assert "'trailer_0004' is taken by videos/trailer_0004.mp4" in clash["reason"]
    assert rows["trailer_0004"]["uri"] == str(videos / "trailer_0004.mp4")
    assert rows["trailer_0004"]["status"] == "ok"
    assert all(r["source_version"].startswith("mtime:") for r in rows.values())
    assert Path(first, "trailers.parquet").exists()  # the previous snapshot stays readable
    # thumbnails: every ok trailer has one; the unchanged ones' carried over byte for byte
    thumbs = {t: pq.read_table(Path(s) / "thumbnails.parquet").to_pydict() for t, s in
              (("first", first), ("second", second))}
    now = dict(zip(thumbs["second"]["trailer_id"], thumbs["second"]["jpeg"], strict=True))
    before = dict(zip(thumbs["first"]["trailer_id"], thumbs["first"]["jpeg"], strict=True))
    assert sorted(now) == sorted(t for t, r in rows.items() if r["status"] == "ok")
    assert all(now.values())
    assert all(now[t] == before[t] for t in before if t != "trailer_0001")
    assert now["trailer_0001"] != before["trailer_0001"]  # its content changed
    # the titles' metadata fingerprints the embeddings were made with (the next night's diff)
    assert pq.read_table(Path(second) / "title_metadata.parquet")["trailer_id"].to_pylist() \
        == ["trailer_0000", "trailer_0002", "trailer_0003"]
    metrics = json.loads(Path(second, "metrics.json").read_text())
    meta = metrics["metadata"]
    assert (meta["n_titles"], meta["with_plot"], meta["with_poster"]) == (3, 2, 1)
    # the 4 new or rewritten files and the 3 titles whose metadata is new are embedded (the
    # latter from their cached features: only the 4 files were decoded)
    assert meta["changed_titles"] == 3 and metrics["recomputed"]["embedded"] == 7

    assert run_job([*base, "--mode", "incremental"]) == 0  # same night again
    again = _report(out)
    assert again["n_decoded"] == 0 and not again["published"]
    assert again["fingerprints"] == {"hashed": 0, "reused": 16}
    assert storage.latest(str(out)) == second
    assert run_job([*base, "--mode", "incremental", "--rehash"]) == 0  # read every byte again
    assert _report(out)["fingerprints"] == {"hashed": 16, "reused": 0}
    assert storage.latest(str(out)) == second



def test_killed_run_keeps_latest_and_resumes(
    ray_session, small_archive, tmp_path: Path
) -> None:
    arch = small_archive(tmp_path / "arch", n=11)
    out = tmp_path / "out"
    base = ["--archive", str(arch), "--out", str(out), *ARGS]
    assert run_job(base) == 0
    published = storage.latest(str(out))
    for i in range(6):
        write_trailer(str(arch / "videos" / f"late_{i}.mp4"), ("Sci-Fi",), seed=700 + i)

    # a separate job process (its own local Ray), killed while the expert stage is writing;
    # its run lease lapses 30 s after its last heartbeat (the default TTL is 10 minutes)
    cache = next((out / "cache").iterdir())
    # trailers featurised so far: the loose rows ingest writes one per trailer (compacted into
    # parts/ after ingest)
    def rows() -> int:
        return len(list(cache.glob("*.parquet")))

    before = rows()
    short_lease = tmp_path / "short_lease.yaml"
    short_lease.write_text("lease_ttl_s: 30\n")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs/index_archive.py"), *base, "--mode", "incremental",
         "--config", str(short_lease)],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while rows() < before + 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", f"--out {out}"], check=False)
    done = rows() - before
    assert 2 <= done < 6

    assert storage.latest(str(out)) == published  # LATEST untouched and readable
    assert pq.read_table(Path(published) / "trailers.parquet").num_rows == 12

    # the killed run still holds the output root: a rerun right away is refused, writing
    # nothing; one that waits takes the lease over once it has lapsed, and resumes
    assert run_job([*base, "--mode", "incremental"]) == EXIT_LEASE_HELD
    assert run_job([*base, "--mode", "incremental", "--lease-wait", "120"]) == 0
    report = _report(out)
    assert report["published"]
    assert len(report["decoded"]) == 6 - done  # only the unfinished trailers
