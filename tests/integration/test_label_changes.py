"""Label edits on nightly (incremental) runs: a labels-only edit is published with the model
and embeddings unchanged; a genre the model does not know retrains, or, with retraining for
it off, stops the run before decoding with exit code 7 and nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmx import archive, storage
from mmx.cli import EXIT_UNKNOWN_GENRES, run_job
from mmx.synth import write_trailer

# a genre head needs train.min_labelled labelled trailers: the small archive has 11
ARGS = ["--profile", "tiny", "--train.coarse_epochs=2", "--train.contrastive_epochs=1",
        "--train.min_labelled=5"]


def _report(out: Path) -> dict:
    newest = max((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def _write_labels(path: Path, labels: dict[str, list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trailer_id", "genres"])
        for tid, genres in sorted(labels.items()):
            writer.writerow([tid, "|".join(genres)])


def _rows(snapshot: str) -> dict[str, dict]:
    table = pq.read_table(Path(snapshot) / "trailers.parquet")
    return {r["trailer_id"]: r for r in table.to_pylist()}


def _model_genres(snapshot: str) -> tuple[list[str], list[str], list[str]]:
    """genres.json, model.json's genres and the model's own (fine/meta.json) of a snapshot."""
    snap = Path(snapshot)
    model = json.loads((snap / "model.json").read_text())
    meta = json.loads((Path(model["model_dir"]) / "fine" / "meta.json").read_text())
    return json.loads((snap / "genres.json").read_text()), model["genres"], meta["genres"]


def test_label_edits_publish_and_new_genres_retrain(
    ray_session, small_archive, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    arch = small_archive(tmp_path / "arch", n=11)
    out = tmp_path / "out"
    labels_csv = arch / "labels.csv"
    base = ["--archive", str(arch), "--out", str(out), *ARGS]
    nightly = [*base, "--mode", "incremental"]
    assert run_job(base) == 0
    first = storage.latest(str(out))
    vocab, recorded, head = _model_genres(first)
    assert vocab and vocab == recorded == head  # a genre head; genres.json in score order
    labels = archive.read_labels(str(labels_csv))
    assert json.loads(Path(first, "labels.json").read_text())["digest"] == \
        archive.labels_digest(labels)
    before = _rows(first)

    # ---- a labels-only edit, within the model's genres: published, nothing decoded
    tid = next(t for t, r in sorted(before.items()) if r["status"] == "ok" and r["genres"])
    new = [g for g in vocab if g not in before[tid]["genres"]][:2]
    _write_labels(labels_csv, {**labels, tid: new})
    capsys.readouterr()
    assert run_job(nightly) == 0
    assert "labels: changed for 1 trailers" in capsys.readouterr().out
    report = _report(out)
    assert report["published"] and report["n_decoded"] == 0
    assert report["changes"] == {"new": 0, "changed": 0, "unchanged": 12, "removed": 0}
    assert report["labels"]["relabelled"] == 1 and report["labels"]["relabelled_ids"] == [tid]
    assert not report["retrain"]["retrain"]
    second = storage.latest(str(out))
    assert second != first
    after = _rows(second)
    row, old = after[tid], before[tid]
    assert sorted(row["genres"]) == sorted(new)
    assert row["split"] == old["split"]  # the model (and its split) is the same
    # same model: the embedding and scores are the published ones; suggestions follow labels
    assert row["embedding"] == old["embedding"] and row["genre_scores"] == old["genre_scores"]
    assert row["predicted_genres"] == old["predicted_genres"]
    assert row["suggested_genres"] == [g for g in row["predicted_genres"] if g not in new]
    for t, r in before.items():  # the other rows as published (sub-genres are re-assigned)
        if t != tid:
            moved = {"subgenre": None, "previous_subgenre": None}
            assert {**after[t], **moved} == {**r, **moved}
        assert after[t]["previous_subgenre"] == r["subgenre"]  # where it was before
    assert _model_genres(second)[0] == vocab
    assert json.loads(Path(second, "model.json").read_text()) == \
        json.loads(Path(first, "model.json").read_text())
    assert run_job(nightly) == 0  # the same labels again: nothing to publish
    assert not _report(out)["published"] and storage.latest(str(out)) == second

    # ---- a genre the model does not know (a typo), and a new video
    _write_labels(labels_csv, {**labels, tid: ["Horor"]})
    write_trailer(str(arch / "videos" / "night2_0.mp4"), ("Comedy",), seed=901)
    reports = sorted((out / "runs").iterdir())
    snapshots = sorted((out / "snapshots").iterdir())
    models = sorted((out / "models").iterdir())
    # retraining for it off: stops before decoding, writing nothing
    assert run_job([*nightly, "--train.retrain_on_new_genres=false"]) == EXIT_UNKNOWN_GENRES
    err = capsys.readouterr().err
    assert "['Horor'] (new or renamed)" in err and "--retrain" in err
    assert storage.latest(str(out)) == second
    assert sorted((out / "runs").iterdir()) == reports
    assert sorted((out / "snapshots").iterdir()) == snapshots
    assert sorted((out / "models").iterdir()) == models
    assert not (out / "work" / "PENDING").exists()
    assert not (out / "work" / "LEASE").exists()

    # retraining on (the default): the night trains anew, and the model knows the genre
    assert run_job(nightly) == 0
    report = _report(out)
    assert report["published"] and report["retrain"] == {
        "retrain": True,
        "reason": "labels name genres the model does not know: ['Horor'] (new or renamed); "
                  "training anew"}
    assert report["labels"]["unknown_genres"] == ["Horor"]
    assert sorted(report["decoded"]) == ["night2_0"]
    third = storage.latest(str(out))
    vocab3, recorded3, head3 = _model_genres(third)
    assert "Horor" in vocab3 and vocab3 == recorded3 == head3
    model3 = json.loads(Path(third, "model.json").read_text())
    assert model3["labels_digest"] == archive.labels_digest(archive.read_labels(str(labels_csv)))
    rows3 = _rows(third)
    assert rows3[tid]["genres"] == ["Horor"]
    assert all(len(r["genre_scores"]) == len(vocab3) for r in rows3.values()
               if r["status"] == "ok")
