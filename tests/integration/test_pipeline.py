"""The whole job on a local Ray over a small synthetic archive: the snapshot contract (DESIGN
§3–4), statuses of bad inputs, the mmx commands, and a model that beats the label baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmx import schema, storage
from mmx.cli import main as mmx_main


def test_snapshot_contract(run: Path, synth_archive: Path) -> None:
    name = (run / "LATEST").read_text().strip()
    snap = run / "snapshots" / name
    assert (snap / storage.COMPLETE).exists()
    vocab = json.loads((snap / "genres.json").read_text())
    sizes = {"trailers": {"embedding": 64, "genre_scores": len(vocab)},  # tiny: 64-d
             "subgenres": {"centroid": 64}}
    for table, sch in schema.TABLES.items():
        t = pq.read_table(snap / f"{table}.parquet")
        assert t.schema.names == sch.names, table
        # vectors are fixed-size float32 lists (DuckDB FLOAT[D]), the rest as defined
        assert t.schema.remove_metadata().equals(
            schema.published(sch, **sizes.get(table, {}))), table
    assert vocab == ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
    trailers = pq.read_table(snap / "trailers.parquet")
    assert schema.vocab_of(trailers.schema) == vocab

    metrics = json.loads((snap / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["au_prc_weighted"] <= 1.0
    for key in ("au_prc_micro", "au_prc_macro", "au_prc_samples", "f1_weighted",
                "precision_weighted", "recall_weighted", "ap_per_genre"):
        assert key in metrics["test"]
    assert len(metrics["silhouette"]) == 1 + 2  # coarse model + tiny profile's 2 epochs
    assert set(metrics["timings_s"]) >= {"ingest", "train", "embed", "index", "publish"}

    manifest = json.loads((snap / "faiss" / "manifest.json").read_text())
    assert manifest["n_shards"] >= 2
    ok = trailers.filter(pc.equal(trailers["status"], "ok"))
    assert manifest["ntotal"] == ok.num_rows
    for f in manifest["files"]:
        assert (snap / "faiss" / f).exists()


def test_every_input_has_one_status(run: Path, synth_archive: Path) -> None:
    snap = storage.latest(str(run))
    trailers = pq.read_table(Path(snap) / "trailers.parquet").to_pylist()
    by_id = {r["trailer_id"]: r for r in trailers}
    inputs = sorted(p.stem for p in (synth_archive / "videos").iterdir())
    assert sorted(by_id) == inputs  # exactly one row per input file
    assert by_id["broken_0000"]["status"] == "failed"
    assert by_id["empty"]["status"] == "failed"
    assert by_id["teaser_0000"]["status"] == "excluded"
    assert "shots" in by_id["teaser_0000"]["reason"]
    dup = by_id["zz copy of trailer ü"]
    assert dup["status"] == "excluded" and "trailer_0003" in dup["reason"]
    assert by_id["noaudio_0000"]["status"] == "ok"
    for r in trailers:
        assert r["status"] in schema.STATUSES and (r["status"] == "ok") == (not r["reason"])
        if r["status"] == "ok":
            assert len(r["embedding"]) == 64  # tiny profile bottleneck
            assert len(r["genre_scores"]) == 6
            assert r["subgenre"] is not None
            assert r["split"] in schema.SPLITS
    scenes = pq.read_table(Path(snap) / "scenes.parquet")
    ok_ids = {t for t, r in by_id.items() if r["status"] == "ok"}
    assert set(scenes["trailer_id"].to_pylist()) == ok_ids
    s = scenes.to_pandas()
    assert (s.end_frame > s.start_frame).all() and (s.end_s > s.start_s).all()
    assert (s.groupby("trailer_id").size() >= 10).all()


def test_neighbours_exclude_self_and_match_cosine(run: Path) -> None:
    snap = Path(storage.latest(str(run)))
    trailers = pq.read_table(snap / "trailers.parquet")
    ok = trailers.filter(pc.equal(trailers["status"], "ok")).to_pylist()
    ids = [r["trailer_id"] for r in ok]
    x = np.asarray([r["embedding"] for r in ok], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    neigh = pq.read_table(snap / "neighbours.parquet").to_pandas()
    assert (neigh.trailer_id != neigh.neighbour_id).all()
    for i, tid in enumerate(ids):
        got = neigh[neigh.trailer_id == tid].sort_values("rank")
        want = np.argsort(-sims[i])[: len(got)]
        np.testing.assert_allclose(got.score.to_numpy(), sims[i, want], atol=1e-4)


def test_commands_against_snapshot(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert mmx_main(["sql", "SELECT status, count(*) AS n FROM trailers GROUP BY status",
                     "--out", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in rows} == {"ok", "excluded", "failed"}
    assert mmx_main(["similar", "trailer_0000", "--k", "3", "--out", str(run)]) == 0
    text = capsys.readouterr().out
    assert "rank" in text and "trailer_0000 " not in text.split("\n", 2)[2]
    assert mmx_main(["subgenres", "--out", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert mmx_main(["similar", "no_such_trailer", "--out", str(run)]) == 2


def test_ablate_uses_the_latest_run(run: Path, tmp_path: Path) -> None:
    """`mmx ablate` with no --features finds the features the latest run trained on."""
    out = tmp_path / "ablation"
    argv = ["ablate", "--root", str(run), "--out", str(out), "--no-pairs",
            "--train.coarse_epochs=1"]
    assert mmx_main(argv) == 0
    table = pq.read_table(out / "ablation.parquet")
    assert "gated (all)" in table.column("variant").to_pylist()
    assert min(table.column("n_eval").to_pylist()) > 0


def test_split_is_stratified_with_a_real_test_part(run: Path) -> None:
    snap = Path(storage.latest(str(run)))
    trailers = pq.read_table(snap / "trailers.parquet").to_pandas()
    labelled = trailers[(trailers.status == "ok") & (trailers.genres.map(len) > 0)]
    counts = labelled.split.value_counts()
    assert counts.get("test", 0) >= 0.2 * len(labelled) - 1
    assert set(labelled.split) <= {"train", "val", "test"}
    metrics = json.loads((snap / "metrics.json").read_text())
    assert metrics["test"]["n"] == counts["test"]
    lo, hi = metrics["test"]["ci95"]["au_prc_micro"]
    assert lo <= metrics["test"]["au_prc_micro"] <= hi
    assert metrics["genre_model"]["trained"] is True
