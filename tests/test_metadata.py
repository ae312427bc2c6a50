"""mmx.metadata: the archive's metadata sidecar (CSV or Parquet, local or S3), its validation,
per-title digests, posters and numeric features; the archive listing leaves it alone."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmx import archive, schema, storage
from mmx.metadata import (
    NUMERIC_DIM,
    MetadataError,
    changed_titles,
    digest,
    fingerprints,
    numeric_features,
    plots,
    poster_versions,
    posters,
    read_fingerprints,
    read_metadata,
    read_poster,
    record,
    write_fingerprints,
)

CSV = """trailer_id,title,plot,year,runtime_min,poster,country
a.mp4,Alpha,"A pilot, a storm.",1999,101,posters/a.jpg,UK
b,Beta,,2021.0,,,US
c,,A quiet house.,,88.5,posters/../posters/c.png,
"""


def _jpeg() -> bytes:
    return cv2.imencode(".jpg", np.full((24, 16, 3), 90, np.uint8))[1].tobytes()


@pytest.fixture()
def arch(tmp_path: Path) -> Path:
    root = tmp_path / "arch"
    (root / "videos").mkdir(parents=True)
    (root / "posters").mkdir()
    for tid in ("a", "b", "c"):
        (root / "videos" / f"{tid}.mp4").write_bytes(b"video " + tid.encode())
    (root / "posters" / "a.jpg").write_bytes(_jpeg())
    (root / "posters" / "c.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3),
                                                                          np.uint8))[1].tobytes())
    (root / "metadata.csv").write_text(CSV, encoding="utf-8")
    (root / "labels.csv").write_text("trailer_id,genres\na,Action\n")
    return root


def test_no_sidecar_is_none(tmp_path: Path) -> None:
    assert read_metadata(str(tmp_path)) is None
    values, mask = numeric_features(None, ["x", "y"])
    assert values.shape == (2, NUMERIC_DIM) and not mask.any() and not values.any()


def test_csv_is_normalised(arch: Path) -> None:
    meta = read_metadata(str(arch))
    assert meta is not None and meta.table.schema == schema.METADATA
    assert meta.ids == ["a", "b", "c"]  # "a.mp4" names the trailer a; extra column ignored
    a, b, c = meta.table.to_pylist()
    assert a == {"trailer_id": "a", "title": "Alpha", "plot": "A pilot, a storm.", "year": 1999,
                 "runtime_min": 101.0, "poster": "posters/a.jpg"}
    assert b["plot"] is None and b["year"] == 2021 and b["runtime_min"] is None
    assert b["poster"] is None and c["title"] is None and c["year"] is None
    assert c["poster"] == "posters/c.png"  # normalised, still inside the archive
    assert meta.row("zzz") is None and meta.row("b")["year"] == 2021


def test_parquet_matches_csv(arch: Path, tmp_path: Path) -> None:
    csv_meta = read_metadata(str(arch))
    (arch / "metadata.csv").unlink()
    pq.write_table(pa.table({
        "trailer_id": ["c", "a", "b"], "title": [None, "Alpha", "Beta"],
        "plot": ["A quiet house.", "A pilot, a storm.", ""], "year": [None, 1999.0, 2021.0],
        "runtime_min": [88.5, 101, float("nan")],
        "poster": [str(arch / "posters" / "c.png"), "posters/a.jpg", None],
        "rating": [1, 2, 3]}), arch / "metadata.parquet")
    pq_meta = read_metadata(str(arch))
    assert pq_meta is not None and pq_meta.uri.endswith("metadata.parquet")
    assert pq_meta.table.equals(csv_meta.table)  # an absolute path inside the archive is fine
    assert fingerprints(pq_meta) == fingerprints(csv_meta)
    assert digest(fingerprints(pq_meta)) == digest(fingerprints(csv_meta)) != ""


@pytest.mark.parametrize(("text", "match"), [
    ("title,plot\nx,y\n", "lacks the column 'trailer_id'"),
    ("trailer_id,plot\na,one\nb,two\na.mp4,three\n", r"'a' appears twice \(lines 2 and 4\)"),
    ("trailer_id,plot\n ,one\n", "line 2 has an empty trailer_id"),
    ("trailer_id,year\na,nineteen\n", "line 2: year 'nineteen' is not a number"),
    ("trailer_id,year\na,1999.5\n", "is not a year in 1870..2100"),
    ("trailer_id,year\na,3020\n", "year '3020' is not a year"),
    ("trailer_id,runtime_min\na,long\n", "runtime_min 'long' is not a number"),
    ("trailer_id,runtime_min\na,-5\n", "is not a runtime in minutes"),
    ("trailer_id,runtime_min\na,inf\n", "is not a finite number"),
    ("trailer_id,poster\na,../elsewhere/a.jpg\n", "leaves the archive"),
    ("trailer_id,poster\na,posters/../../a.jpg\n", "leaves the archive"),
    ("trailer_id,poster\na,/etc/passwd\n", "is outside the archive"),
    ("trailer_id,poster\na,s3://other-bucket/a.jpg\n", "is outside the archive"),
])
def test_bad_sidecars_are_named(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "metadata.csv").write_text(text)
    with pytest.raises(MetadataError, match=match) as err:
        read_metadata(str(tmp_path))
    assert "metadata.csv" in str(err.value)


def test_both_sidecars_or_bad_encoding_are_errors(arch: Path) -> None:
    pq.write_table(pa.table({"trailer_id": ["a"]}), arch / "metadata.parquet")
    with pytest.raises(MetadataError, match="two metadata sidecars") as err:
        read_metadata(str(arch))
    assert "metadata.csv" in str(err.value) and "metadata.parquet" in str(err.value)
    (arch / "metadata.parquet").unlink()
    (arch / "metadata.csv").write_bytes("trailer_id,title\na,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(MetadataError, match="line 2 is not UTF-8"):
        read_metadata(str(arch))


def test_unknown_ids_are_warned_and_ignored(arch: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmx.metadata"):
        meta = read_metadata(str(arch), ids=["a", "c", "d"])
    assert meta is not None and meta.ids == ["a", "c"] and meta.ignored == ("b",)
    assert "1 trailer_id(s) not in the archive, ignored: b" in caplog.text
    later = read_metadata(str(arch)).restrict(["a", "c", "d"])  # read first, listed after
    assert later.table.equals(meta.table) and later.ignored == ("b",)


def test_an_edited_plot_changes_that_title_only(arch: Path) -> None:
    before = fingerprints(read_metadata(str(arch)))
    (arch / "metadata.csv").write_text(CSV.replace("A quiet house.", "A loud house."))
    now = fingerprints(read_metadata(str(arch)))
    assert changed_titles(["a", "b", "c"], before, now) == ["c"]
    assert digest(before) != digest(now)
    # a title added to or removed from the sidecar is a change too; row order is not
    rows = CSV.splitlines()
    (arch / "metadata.csv").write_text("\n".join([rows[0], rows[2], rows[1]]) + "\n")
    fewer = fingerprints(read_metadata(str(arch)))
    assert changed_titles(["a", "b", "c"], before, fewer) == ["c"]
    assert {t: before[t] for t in ("a", "b")} == fewer


def test_a_replaced_poster_changes_its_title(arch: Path) -> None:
    meta = read_metadata(str(arch))
    versions = poster_versions(str(arch))
    assert set(versions) == {"posters/a.jpg", "posters/c.png"}
    before = fingerprints(meta, versions)
    (arch / "posters" / "a.jpg").write_bytes(_jpeg() + b"\0" * 10)  # other size and mtime
    after = fingerprints(meta, poster_versions(str(arch)))
    assert changed_titles(meta.ids, before, after) == ["a"]
    (arch / "posters" / "c.png").unlink()  # a poster gone is a change as well
    assert changed_titles(meta.ids, after, fingerprints(meta, poster_versions(str(arch)))) == [
        "c"]


def test_read_poster(arch: Path) -> None:
    assert read_poster(str(arch), "posters/a.jpg") == (arch / "posters" / "a.jpg").read_bytes()
    with pytest.raises(MetadataError, match="'posters/zz.jpg' of archive .*: no such file"):
        read_poster(str(arch), "posters/zz.jpg")
    (arch / "posters" / "bad.jpg").write_bytes(b"<html>not found</html>")
    with pytest.raises(MetadataError, match="not a JPEG, PNG"):
        read_poster(str(arch), "posters/bad.jpg")
    with pytest.raises(MetadataError, match="leaves the archive"):
        read_poster(str(arch), "../arch/posters/a.jpg")


def test_numeric_features(arch: Path) -> None:
    meta = read_metadata(str(arch))
    values, mask = numeric_features(meta, ["c", "zz", "a", "b"])
    assert values.dtype == np.float32 and values.shape == (4, NUMERIC_DIM)
    assert mask.tolist() == [True, False, True, True]
    np.testing.assert_allclose(values[2], [(1999 - 1990) / 30, np.log(101 / 100) / 0.25, 1, 1],
                               rtol=1e-5)
    np.testing.assert_allclose(values[0], [0, np.log(88.5 / 100) / 0.25, 0, 1], rtol=1e-5)
    np.testing.assert_allclose(values[3], [(2021 - 1990) / 30, 0, 1, 0], rtol=1e-5)
    assert not values[1].any()  # not in the sidecar: zeros, masked
    # clipping keeps silent-film years and day-long epics in range
    (arch / "metadata.csv").write_text("trailer_id,year,runtime_min\na,1895,1400\n")
    v, _ = numeric_features(read_metadata(str(arch)), ["a"])
    assert v[0, 0] == -2.0 and v[0, 1] == 4.0


def test_listing_skips_the_sidecar_and_posters(arch: Path) -> None:
    (arch / "metadata.parquet").write_bytes(b"PAR1")
    (arch / "posters" / "d.webp").write_bytes(b"RIFF....WEBP")
    (arch / "cover.JPEG").write_bytes(_jpeg())
    files = archive.list_inputs(str(arch))
    assert sorted(f.trailer_id for f in files) == ["a", "b", "c"]
    assert all(f.uri.endswith(".mp4") and not f.clash for f in files)


def test_s3_archive(s3_endpoint: str, arch: Path) -> None:
    from tests.conftest import S3_BUCKET

    root = f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:8]}/arch"
    for rel in ("metadata.csv", "posters/a.jpg", "posters/c.png", "videos/a.mp4",
                "videos/b.mp4"):
        storage.write_bytes(f"{root}/{rel}", (arch / rel).read_bytes())
    meta = read_metadata(root, ids=[f.trailer_id for f in archive.list_inputs(root)])
    assert meta is not None and meta.ids == ["a", "b"] and meta.ignored == ("c",)
    assert meta.table.equals(read_metadata(str(arch), ids=["a", "b"]).table)
    assert read_poster(root, "posters/a.jpg") == (arch / "posters" / "a.jpg").read_bytes()
    assert set(poster_versions(root)) == {"posters/a.jpg", "posters/c.png"}
    storage.write_text(f"{root}/metadata.csv",
                       f"trailer_id,poster\na,{root}/posters/a.jpg\nb,s3://{S3_BUCKET}/x.jpg\n")
    with pytest.raises(MetadataError, match="line 3: poster .* is outside the archive"):
        read_metadata(root)


def test_expert_inputs_and_record(arch: Path) -> None:
    meta = read_metadata(str(arch))
    texts, mask = plots(meta, ["b", "a", "zz"])
    assert texts == ["", "A pilot, a storm.", ""] and mask.tolist() == [False, True, False]
    assert posters(meta, ["c", "b", "zz"]) == ["posters/c.png", None, None]
    assert plots(None, ["a"])[1].tolist() == [False] and posters(None, ["a"]) == [None]
    prints = fingerprints(meta)
    assert record(meta, prints) == {
        "sidecar": str(arch / "metadata.csv"), "digest": digest(prints), "n_titles": 3,
        "ignored_ids": 0, "with_title": 2, "with_plot": 2, "with_year": 2,
        "with_runtime_min": 2, "with_poster": 2}
    assert record(None, {}) == {"sidecar": None}


def test_snapshot_fingerprints_round_trip(arch: Path, tmp_path: Path) -> None:
    snap = str(tmp_path / "snap")
    assert read_fingerprints(None) == {} and read_fingerprints(snap) == {}
    prints = fingerprints(read_metadata(str(arch)))
    write_fingerprints(snap, prints)
    assert read_fingerprints(snap) == prints
    # a snapshot from before metadata: every title with metadata now is re-embedded once
    assert changed_titles(["a", "b", "c", "d"], {}, prints) == ["a", "b", "c"]
