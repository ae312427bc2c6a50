"""mmx.archive: inputs and their ids (name clashes), fingerprints and their reuse."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mmx import archive, storage


@pytest.fixture()
def clashing(tmp_path: Path) -> Path:
    for rel in ("a.mp4", "a.mov", "b.mp4", "deep/b.mp4", "deep/c.mkv", "labels.csv", ".hidden"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    return tmp_path


def test_every_file_keeps_one_unique_id(clashing: Path) -> None:
    files = {f.trailer_id: f for f in archive.list_inputs(str(clashing))}
    assert sorted(files) == ["a", "a.mp4", "b", "c", "deep/b.mp4"]  # no sidecar, no hidden
    assert files["a"].uri == str(clashing / "a.mov") and not files["a"].clash
    assert files["a.mp4"].clash == (
        "trailer_id 'a' is taken by a.mov (file names must be unique without their extension)")
    assert files["b"].uri == str(clashing / "b.mp4")  # the shallowest keeps the name
    assert "'b' is taken by b.mp4" in files["deep/b.mp4"].clash
    assert all(f.version.startswith("mtime:") for f in files.values())


def test_the_previous_owner_keeps_its_id(clashing: Path) -> None:
    keep = {"a": str(clashing / "a.mp4"), "b": str(clashing / "deep/b.mp4")}
    files = {f.trailer_id: f for f in archive.list_inputs(str(clashing), keep=keep)}
    assert files["a"].uri == keep["a"] and files["b"].uri == keep["b"]
    assert "'a' is taken by a.mp4" in files["a.mov"].clash
    assert "'b' is taken by deep/b.mp4" in files["b.mp4"].clash


def test_duplicate_bytes_keep_their_published_owner() -> None:
    rows = [("b_trailer", "fp1"), ("a_copy", "fp1"), ("c", "fp2"), ("d", "fp2")]
    assert archive.find_duplicates(rows) == {"b_trailer": "a_copy", "d": "c"}
    # b_trailer was published ok: a copy appearing under a name that sorts first is the duplicate
    assert archive.find_duplicates(rows, owners={"b_trailer"}) == {"a_copy": "b_trailer",
                                                                   "d": "c"}


def test_fingerprint_is_size_and_sha256(tmp_path: Path) -> None:
    data = b"x" * 5_000_001
    (tmp_path / "v.mp4").write_bytes(data)
    fp = archive.fingerprint(str(tmp_path / "v.mp4"), chunk=1 << 20)
    assert fp == f"{len(data)}-{hashlib.sha256(data).hexdigest()}"


def test_fingerprints_are_reused_only_for_the_same_version_and_size() -> None:
    f = archive.InputFile("t", "s3://b/t.mp4", 10, "ETag:abc")
    known = {("s3://b/t.mp4", "ETag:abc"): "10-ff"}
    assert archive.reuse_fingerprints([f], known) == {"s3://b/t.mp4": "10-ff"}
    rewritten = archive.InputFile("t", "s3://b/t.mp4", 10, "ETag:def")
    resized = archive.InputFile("t", "s3://b/t.mp4", 11, "ETag:abc")
    untagged = archive.InputFile("t", "s3://b/t.mp4", 10, "")
    moved = archive.InputFile("t", "s3://b/new/t.mp4", 10, "ETag:abc")
    assert archive.reuse_fingerprints([rewritten, resized, untagged, moved], known) == {}
    unreadable = {("s3://b/t.mp4", "ETag:abc"): "unreadable-OSError-1234"}
    assert archive.reuse_fingerprints([f], unreadable) == {}


def test_version_tags_from_listings(tmp_path: Path) -> None:
    assert storage.version_tag({"ETag": '"9b2cf535f27731c974343645a3985328"'}) == (
        "ETag:9b2cf535f27731c974343645a3985328")
    assert storage.version_tag({"generation": 1714}) == "generation:1714"
    assert storage.version_tag({"size": 3}) == ""
    path = tmp_path / "v.mp4"
    path.write_bytes(b"one")
    [(_, size, before)] = storage.iter_archive(str(tmp_path), (".mp4",))
    path.write_bytes(b"two")  # same size, rewritten
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    [(_, _, after)] = storage.iter_archive(str(tmp_path), (".mp4",))
    assert size == 3 and before != after


def _labels_file(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    return str(path)


def test_labels_tolerate_a_bom_spaces_and_extensions(tmp_path: Path) -> None:
    uri = _labels_file(tmp_path, "\ufefftrailer_id , genres\r\na.mp4,Action| Drama\r\nb,\r\n"
                       "Amélie.MOV,Romance\r\n".encode())
    assert archive.read_labels(uri) == {"a": ["Action", "Drama"], "b": [], "Amélie": ["Romance"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"trailer_id,genres\na,Action\nb,Com\xe9dy\n", r"line 3 is not UTF-8 \(byte 0xe9\)"),
        (b"trailer_id,genres\na,Action\nb,Drama\na.mp4,Comedy\n",
         r"'a' appears twice \(lines 2 and 4\)"),
        (b"trailer_id,genres,title\na,Action,A\n", r"unknown column\(s\) \['title'\]"),
        (b"id,genres\na,Action\n", r"lacks column\(s\) \['trailer_id'\]"),
        (b"trailer_id,genres\na,Action\n ,Drama\n", "line 3 has an empty trailer_id"),
    ],
    ids=["latin-1", "duplicate", "unknown-column", "missing-column", "empty-id"],
)
def test_labels_errors_name_the_line(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        archive.read_labels(_labels_file(tmp_path, data))


def test_parquet_labels_are_checked_too(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "labels.parquet"
    table = pa.table({"trailer_id": ["a.mkv", "b", "a"],
                      "genres": pa.array([["Action"], None, ["Drama"]], pa.list_(pa.string()))})
    pq.write_table(table.slice(0, 2), path)
    assert archive.read_labels(str(path)) == {"a": ["Action"], "b": []}
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"'a' appears twice \(rows 1 and 3\)"):
        archive.read_labels(str(path))


def test_the_job_refuses_a_bad_labels_file_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from mmx.cli import run_job

    labels = _labels_file(tmp_path, b"trailer_id,genres\na,Action\na,Drama\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run_job(["--archive", str(tmp_path), "--labels", labels, "--out", str(out)])
    assert exit_.value.code == 2
    assert "'a' appears twice (lines 2 and 3)" in capsys.readouterr().err
    assert not out.exists()  # nothing written, no Ray started
    with pytest.raises(SystemExit) as exit_:
        run_job(["--archive", str(tmp_path), "--labels", str(tmp_path / "no.csv"),
                 "--out", str(out)])
    assert exit_.value.code == 2 and "cannot read it" in capsys.readouterr().err
    assert not out.exists()


def test_labels_digest_ignores_order_format_and_unlabelled_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = {"a": ["Horror", "Comedy"], "b": ["Drama"], "c": []}
    digest = archive.labels_digest(base)
    assert len(digest) == 64 and int(digest, 16) >= 0  # sha256 hex
    # genre order, repeats, row order and rows without genres do not count
    assert archive.labels_digest({"b": ["Drama"], "a": ["Comedy", "Horror", "Comedy"]}) == digest
    assert archive.normalise_labels(base) == {"a": ["Comedy", "Horror"], "b": ["Drama"]}
    # CSV and Parquet of the same labels agree
    csv_file = _labels_file(tmp_path, b"trailer_id,genres\nb,Drama\na,Horror|Comedy\nc,\n")
    parquet = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"trailer_id": ["a", "b"],
                             "genres": pa.array([["Comedy", "Horror"], ["Drama"]],
                                                pa.list_(pa.string()))}), parquet)
    assert archive.labels_digest(archive.read_labels(csv_file)) == digest
    assert archive.labels_digest(archive.read_labels(str(parquet))) == digest
    # a genre edited, renamed, added or removed, a trailer labelled: another digest
    for edited in ({**base, "b": ["Dramma"]}, {**base, "b": ["Drama", "War"]},
                   {**base, "a": ["Horror"]}, {**base, "c": ["Action"]}):
        assert archive.labels_digest(edited) != digest
    assert archive.labels_record(base) == {"digest": digest, "n_labelled": 2,
                                           "genres": ["Comedy", "Drama", "Horror"]}
    assert archive.labels_digest({}) == archive.labels_digest({"x": []})
