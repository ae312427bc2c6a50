"""mmx.changes: what an incremental run compares with the latest snapshot (files and labels)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmx import archive, changes

PUBLISHED = {"a": ["Horror", "Comedy"], "b": ["Drama"], "c": [], "d": ["Action"]}


def _snapshot(root: Path, labels_json: bool = True) -> str:
    """A snapshot folder with the columns of the trailers table that changes reads."""
    ids = sorted(PUBLISHED)
    root.mkdir(parents=True)
    pq.write_table(pa.table({
        "trailer_id": ids,
        "uri": [f"/arch/{t}.mp4" for t in ids],
        "fingerprint": [f"10-{t}" for t in ids],
        "source_version": ["mtime:1"] * len(ids),
        "status": ["ok", "ok", "ok", "failed"],
        "genres": pa.array([PUBLISHED[t] for t in ids], pa.list_(pa.string())),
    }), root / "trailers.parquet")
    if labels_json:
        (root / changes.LABELS_FILE).write_text(json.dumps(archive.labels_record(PUBLISHED)))
    return str(root)


@pytest.mark.parametrize("labels_json", [True, False])  # False: a snapshot from before
def test_relabelled_trailers(tmp_path: Path, labels_json: bool) -> None:
    files = changes.latest_files(_snapshot(tmp_path / "snap", labels_json))
    assert files.labels_digest == (archive.labels_digest(PUBLISHED) if labels_json else "")
    ids = ["a", "b", "c", "d", "new"]

    def relabelled(labels: dict[str, list[str]]) -> list[str]:
        return changes.relabelled(ids, labels, archive.labels_digest(labels), files)

    assert relabelled(PUBLISHED) == []
    # genre order and a label for a trailer outside the archive change nothing published
    assert relabelled({**PUBLISHED, "a": ["Comedy", "Horror"], "elsewhere": ["War"]}) == []
    edited = {**PUBLISHED, "b": ["Thriller"], "c": ["Action"], "d": [], "new": ["War"]}
    assert relabelled(edited) == ["b", "c", "d"]  # edited, labelled, unlabelled (not new)
    assert relabelled({k: v for k, v in PUBLISHED.items() if k != "a"}) == ["a"]


def test_unchanged_digest_reads_no_genres(tmp_path: Path) -> None:
    snap = Path(_snapshot(tmp_path / "snap"))
    files = changes.latest_files(str(snap))
    (snap / "trailers.parquet").unlink()  # the digest alone answers
    assert changes.relabelled(["a", "b"], PUBLISHED, archive.labels_digest(PUBLISHED),
                              files) == []
    assert changes.relabelled(["a"], {}, "", changes.LatestFiles()) == []  # no snapshot
