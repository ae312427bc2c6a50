"""The HTML run report (mmx.report): PR-curve numbers against scikit-learn, rendering of a
small hand-made snapshot, the thumbnail taken at ingest, ``mmx report``, and the page in
headless Chromium (every section drawn, no broken image, no console error)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from mmx import report, schema, storage
from mmx.cli import main as cli_main
from mmx.ingest import THUMBNAIL_WIDTH, thumbnail

VOCAB = ["Action", "Comedy", "Drama"]
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_curve_matches_sklearn(seed: int) -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    rng = np.random.default_rng(seed)
    y = rng.random(40) < 0.3
    y[0] = True
    s = np.round(rng.random(40) + 0.5 * y, 1)  # rounded: many ties
    p, r, t = report.precision_recall_curve(y, s)
    p_ref, r_ref, t_ref = precision_recall_curve(y, s)
    np.testing.assert_allclose(p, p_ref)
    np.testing.assert_allclose(r, r_ref)
    np.testing.assert_allclose(t, t_ref)
    assert report.average_precision(p, r) == pytest.approx(average_precision_score(y, s))


def test_precision_recall_curve_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no positive"):
        report.precision_recall_curve(np.zeros(5), np.arange(5.0))
    with pytest.raises(ValueError, match="one value per row"):
        report.precision_recall_curve(np.ones(5), np.arange(4.0))


def test_pca_2d_finds_the_spread_directions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * np.array([5.0, 2.0, 0.1])
    xy = report.pca_2d(x)
    assert xy.shape == (200, 2)
    np.testing.assert_allclose(np.abs(xy), np.abs(x[:, :2] - x[:, :2].mean(0)), atol=0.3)
    assert report.pca_2d(np.zeros((0, 4))).shape == (0, 2)


# ------------------------------------------------------------------------------ thumbnail
def test_thumbnail_is_a_small_jpeg_of_the_longest_clip() -> None:
    frames = np.zeros((3, 3, 144, 256, 3), np.uint8)  # (C, F, h, w, 3)
    frames[1, 1] = (200, 30, 10)  # middle frame of the longest clip: red (RGB)
    clips = np.array([[0, 10], [12, 80], [82, 90]])
    jpeg = thumbnail(frames, clips)
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert img.shape == (90, THUMBNAIL_WIDTH, 3)
    assert abs(int(img[..., 2].mean()) - 200) < 8 and int(img[..., 0].mean()) < 25
    assert len(jpeg) < 10_000
    assert thumbnail(frames[:, :0], clips) is None


# ------------------------------------------------------------------------------ a snapshot
def _jpeg(colour: tuple[int, int, int]) -> bytes:
    img = np.zeros((90, 160, 3), np.uint8)
    img[:] = colour
    cv2.rectangle(img, (40, 20), (120, 70), (255, 255, 255), -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


def make_snapshot(out: Path, n: int = 30, name: str = "20260101T000000Z-abcdef") -> Path:
    """A small complete snapshot of hand-made tables (no pipeline run)."""
    rng = np.random.default_rng(0)
    snap = out / "snapshots" / name
    snap.mkdir(parents=True)
    ids = [f"t{i:03d}" for i in range(n)]
    genres = [[VOCAB[i % 3]] + ([VOCAB[(i + 1) % 3]] if i % 4 == 0 else []) for i in range(n)]
    genres[-1] = []  # unlabelled
    status = ["ok"] * (n - 3) + ["excluded", "failed", "failed"]
    reason = [""] * (n - 3) + ["4 shots < 10", "truncated video: decoded 10 of 99 frames",
                               "truncated video: decoded 12 of 80 frames"]
    ok = np.array([s == "ok" for s in status])
    labels = np.array([[g in gs for g in VOCAB] for gs in genres], np.float32)
    scores = np.clip(labels * 0.5 + rng.random((n, 3)) * 0.6, 0, 1).astype(np.float32)
    emb = rng.normal(size=(n, 8)).astype(np.float32) + labels @ rng.normal(size=(3, 8)) * 2
    split = ["test" if i % 2 else "train" for i in range(n)]
    split[-1] = "unlabelled"
    f32 = pa.list_(pa.float32())
    trailers = pa.table({
        "trailer_id": ids, "status": status, "reason": reason,
        "n_clips": pa.array([12] * n, pa.int32()), "genres": genres,
        "predicted_genres": [[]] * n, "suggested_genres": [[]] * n,
        "genre_scores": pa.array([list(r) if k else None for r, k in zip(scores, ok)], f32),
        "subgenre": pa.array([i % 3 if k else None for i, k in enumerate(ok)], pa.int32()),
        "previous_subgenre": pa.nulls(len(ok), pa.int32()),
        "embedding": pa.array([list(r) if k else None for r, k in zip(emb, ok)], f32),
        "split": split, "duration_s": [30.0] * n, "fingerprint": ids, "uri": ids,
        "source_version": ids,
    })
    storage.write_table(schema.conform(trailers, schema.with_vocab(schema.TRAILERS, VOCAB)),
                        str(snap / "trailers.parquet"))
    ok_ids = [t for t, k in zip(ids, ok) if k]
    starts = np.cumsum(rng.uniform(0.5, 4.0, size=(len(ok_ids), 12)), axis=1)
    scenes = pa.table({
        "trailer_id": np.repeat(ok_ids, 12), "clip_idx": np.tile(np.arange(12), len(ok_ids)),
        "start_frame": (starts * 24).astype(int).ravel(),
        "end_frame": (starts * 24 + 20).astype(int).ravel(),
        "start_s": starts.ravel(), "end_s": starts.ravel() + rng.uniform(0.3, 3.0, starts.size),
    })
    storage.write_table(schema.conform(scenes, schema.SCENES), str(snap / "scenes.parquet"))
    subgenres = pa.table({
        "subgenre": pa.array([0, 1, 2], pa.int32()), "size": [9, 9, 9],
        "top_genres": [["Action"], ["Comedy", "Action"], ["Drama"]],
        "top_concepts": [["sports car", "racer"], ["balloon"], ["church", "candle"]],
        "exemplars": [ok_ids[0:3], ok_ids[3:6], ok_ids[6:9]],
        "centroid": pa.array([[0.0] * 8] * 3, f32),
    })
    storage.write_table(schema.conform(subgenres, schema.SUBGENRES),
                        str(snap / "subgenres.parquet"))
    neighbours = pa.table({
        "trailer_id": np.repeat(ok_ids, 3), "rank": np.tile(np.arange(1, 4), len(ok_ids)),
        "neighbour_id": [ok_ids[(i + k) % len(ok_ids)] for i in range(len(ok_ids))
                         for k in (1, 2, 3)],
        "score": rng.random(3 * len(ok_ids)),
    })
    storage.write_table(schema.conform(neighbours, schema.NEIGHBOURS),
                        str(snap / "neighbours.parquet"))
    colours = [(60, 120, 200), (30, 160, 90), (200, 90, 60)]
    thumbs = pa.table({"trailer_id": ok_ids,
                       "jpeg": [None if i == 1 else _jpeg(colours[i % 3])  # one without
                                for i in range(len(ok_ids))]})
    storage.write_table(schema.conform(thumbs, schema.THUMBNAILS),
                        str(snap / report.THUMBNAILS_FILE))
    storage.write_json(str(snap / "genres.json"), VOCAB)
    metrics = {
        "test": {"n": 14, "au_prc_weighted": 0.61, "au_prc_micro": 0.6, "au_prc_macro": 0.58,
                 "au_prc_samples": 0.66,
                 "ap_per_genre": {"Action": 0.7, "Comedy": 0.55, "Drama": 0.5}},
        "baseline": {"au_prc_micro": 0.4, "ap_per_genre": {"Action": 0.4, "Comedy": 0.35,
                                                           "Drama": 0.33}},
        "silhouette": [0.21, 0.18, 0.12, 0.09],
        "timings_s": {"discover": 0.4, "ingest": 12.0, "train": 30.5, "embed": 3.2,
                      "publish": 1.1},
    }
    storage.write_json(str(snap / "metrics.json"), metrics)
    storage.write_text(str(snap / storage.COMPLETE), "{}")
    storage.write_text(str(out / storage.LATEST), name + "\n")
    return snap


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.DOTALL))


def test_render_draws_every_section(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path)
    coarse = (["t000", "t001", "t002", "t003"], np.eye(4, 8, dtype=np.float32))
    assert report.write_snapshot_report(str(snap), coarse=coarse)
    page = (snap / report.REPORT_FILE).read_text()
    sections = _sections(page)
    assert list(sections) == list(report.SECTIONS)
    assert "could not be drawn" not in page
    for key, body in sections.items():
        assert len(body) > 80, key
    # Table 2 shape: each genre's AP beside the prior, and its positives on the test split
    assert re.search(r"<td>Action</td><td>0\.700</td><td>0\.400</td><td>\+0\.300</td><td>\d+",
                     sections["genres"])
    assert "<b>AU(PRC) samples</b></td><td><b>0.660</b>" in sections["genres"]
    assert sections["pr-curves"].count("<svg") == len(VOCAB)
    assert sections["silhouette"].count("<circle") == 4
    # both maps, the same trailers (the coarse sample's)
    assert sections["maps"].count("<svg") == 2
    assert sections["maps"].count("<circle") == 8
    # exemplar thumbnails inline (a placeholder for the trailer without one)
    assert sections["subgenres"].count('src="data:image/jpeg;base64,') == 8
    assert sections["subgenres"].count("no thumbnail") == 1
    assert "sports car" in sections["subgenres"]
    assert "truncated video: decoded # of # frames</td><td>2" in sections["status"]
    assert "train" in sections["timings"]
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def test_old_snapshot_without_thumbnails_or_coarse_vectors(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path)
    (snap / report.THUMBNAILS_FILE).unlink()
    page = report.render_snapshot(str(snap))
    sections = _sections(page)
    assert "data:image/jpeg" not in page
    assert sections["subgenres"].count("no thumbnail") == 9
    assert "No coarse map: the snapshot publishes the fine embedding only" in sections["maps"]
    assert sections["maps"].count("<svg") == 1


def test_write_snapshot_report_never_raises(tmp_path: Path, caplog) -> None:
    assert not report.write_snapshot_report(str(tmp_path / "nothing"))
    assert "could not write report.html" in caplog.text


def test_cli_report(tmp_path: Path, capsys) -> None:
    make_snapshot(tmp_path / "out")
    html_file = tmp_path / "r.html"
    assert cli_main(["report", "--out", str(tmp_path / "out"), "--html", str(html_file)]) == 0
    assert list(_sections(html_file.read_text())) == list(report.SECTIONS)
    assert cli_main(["report", "--out", str(tmp_path / "none"), "--html",
                     str(tmp_path / "x.html")]) == 2
    assert "no snapshot under" in capsys.readouterr().err
    assert cli_main(["report", "--out", str(tmp_path / "out"), "--snapshot", "nope"]) == 2


def test_report_module_needs_no_ray_or_torch() -> None:
    code = ("import sys, mmx.report; bad = [m for m in ('ray', 'torch', 'sklearn', 'cv2') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------ Chromium
def test_report_in_headless_chromium(tmp_path: Path, browser_check) -> None:
    snap = make_snapshot(tmp_path)
    assert report.write_snapshot_report(
        str(snap), coarse=(["t000", "t004", "t008"], np.eye(3, 8, dtype=np.float32)))
    attrs = browser_check(snap / report.REPORT_FILE, "report-unit.png")
    assert int(attrs["images"]) > 0


def test_snapshot_without_a_genre_model(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path)
    storage.write_json(str(snap / "genres.json"), [])
    storage.write_json(str(snap / "metrics.json"), {
        "genre_model": {"trained": False, "reason": "only 3 labelled trailers"},
        "silhouette": [float("nan"), None], "timings_s": {"ingest": 1.0}})
    sections = _sections(report.render_snapshot(str(snap)))
    assert list(sections) == list(report.SECTIONS)
    assert "No genre model in this snapshot: only 3 labelled trailers" in sections["genres"]
    assert "No test trailer with genre scores" in sections["pr-curves"]
    assert "No silhouette recorded" in sections["silhouette"]
    assert sections["maps"].count("<svg") == 1


def test_genres_section_names_the_title_fusion_weights(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path)
    assert "title experts" not in _sections(report.render_snapshot(str(snap)))["genres"]
    metrics = storage.read_json(str(snap / "metrics.json"))
    metrics["title_fusion"] = {"weights": {"trailer": 0.273, "text": 0.576, "poster": 0.0},
                               "reason": "fitted on 29 labelled validation trailers"}
    storage.write_json(str(snap / "metrics.json"), metrics)
    genres = _sections(report.render_snapshot(str(snap)))["genres"]
    assert ("fuse the trailer with its title experts, weights trailer 0.27, poster 0.00, "
            "text 0.58 (fitted on 29 labelled validation trailers)") in genres
