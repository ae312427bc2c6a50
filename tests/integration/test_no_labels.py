"""A folder of videos with no labels at all: the job still publishes everything that needs no
labels (scenes, a self-supervised embedding, sub-genres, neighbours, the index) and exits 0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmx import schema, storage


def test_archive_without_labels_publishes_a_snapshot(ray_session, index_job, synth_archive: Path,
                                                      tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(12):  # a dozen trailers, no labels.csv anywhere
        shutil.copy(synth_archive / "videos" / f"trailer_{i:04d}.mp4", videos)
    out = tmp_path / "out"
    code = index_job.main(["--archive", str(videos), "--out", str(out), "--profile", "tiny"])
    assert code == 0

    snap = Path(storage.latest(str(out)))
    assert json.loads((snap / "genres.json").read_text()) == []
    metrics = json.loads((snap / "metrics.json").read_text())
    assert metrics["genre_model"]["trained"] is False
    assert "no genre labels" in metrics["genre_model"]["reason"]
    trailers = pq.read_table(snap / "trailers.parquet")
    ok = trailers.filter(pc.equal(trailers["status"], "ok")).to_pylist()
    assert len(ok) == 12
    for r in ok:
        assert len(r["embedding"]) == 64 and r["subgenre"] is not None
        assert r["genre_scores"] is None and r["predicted_genres"] == []
        assert r["split"] == "unlabelled"
    assert pq.read_table(snap / "scenes.parquet").num_rows >= 12 * 10
    neighbours = pq.read_table(snap / "neighbours.parquet")
    assert neighbours.num_rows == 12 * 3  # tiny profile: 3 neighbours each
    assert pq.read_table(snap / "subgenres.parquet").num_rows >= 1
    manifest = json.loads((snap / "faiss" / "manifest.json").read_text())
    assert manifest["ntotal"] == 12
    for name, sch in schema.TABLES.items():
        assert pq.read_table(snap / f"{name}.parquet").schema.names == sch.names
