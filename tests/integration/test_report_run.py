"""Acceptance of the HTML run report on a real run (the session's ``run`` fixture): the job
writes ``report.html`` and ``thumbnails.parquet`` into its snapshot, the page renders in
headless Chromium (every section, no broken image, no console error; screenshot at
``.mmx/test-artifacts/report.png``), and ``mmx report`` renders the snapshot again."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmx import report, schema
from mmx.cli import main as mmx_main


def _snapshot(run: Path) -> Path:
    return run / "snapshots" / (run / "LATEST").read_text().strip()


def test_thumbnails_published_for_every_ok_trailer(run: Path) -> None:
    snap = _snapshot(run)
    thumbs = pq.read_table(snap / report.THUMBNAILS_FILE)
    assert thumbs.schema.equals(schema.THUMBNAILS)
    trailers = pq.read_table(snap / "trailers.parquet", columns=["trailer_id", "status"])
    ok = trailers.filter(pc.equal(trailers["status"], "ok"))["trailer_id"].to_pylist()
    assert thumbs["trailer_id"].to_pylist() == sorted(ok)
    for jpeg in thumbs["jpeg"].to_pylist():  # a fresh run: every one has its picture
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] <= 160 and img.std() > 1.0


def test_published_report_renders_in_chromium(run: Path, browser_check) -> None:
    snap = _snapshot(run)
    page = snap / report.REPORT_FILE
    assert page.exists(), "the job wrote no report.html into its snapshot"
    html = page.read_text()
    maps = re.search(r'<section id="maps">(.*?)</section>', html, re.DOTALL).group(1)
    assert maps.count("<svg") == 2, "coarse and fine maps expected from a run with a genre model"
    attrs = browser_check(page, "report.png")
    assert int(attrs["images"]) > 0


def test_mmx_report_command(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "again.html"
    assert mmx_main(["report", "--out", str(run), "--html", str(out)]) == 0
    html = out.read_text()
    assert html.count("<section id=") == len(report.SECTIONS)
    assert "data:image/jpeg;base64," in html
    assert "No coarse map" in html  # a published snapshot holds the fine embedding only
