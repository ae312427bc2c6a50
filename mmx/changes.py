"""The incremental diff: what the latest snapshot knows of the archive, and what changed since.

An incremental run compares the files it discovers with the latest published snapshot's ledger
(trailer_id → content fingerprint): new, changed, unchanged and removed trailers. With the
model reused, only new and changed trailers are embedded; unchanged ones keep their published
embedding, scores and sub-genre (:mod:`mmx.stages.publish`).

Labels are compared too: each snapshot records the digest of the labels it published
(``labels.json``, :func:`mmx.archive.labels_digest`); when the current labels' digest differs,
the trailers whose published ``genres`` differ from their current labels are relabelled, a
change to publish even when no file changed (their embeddings and scores stay: same model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmx import policy, schema, storage

LABELS_FILE = "labels.json"  # a snapshot's labels digest and genre vocabulary


@dataclass
class LatestFiles:
    """What the latest snapshot knows of the archive's files."""

    ledger: dict[str, str] = field(default_factory=dict)  # trailer_id → fingerprint
    owners: dict[str, str] = field(default_factory=dict)  # trailer_id → uri holding the name
    # (uri, version tag) → fingerprint of the files whose version tag is known and whose bytes
    # could be read (an unreadable file's placeholder fingerprint is never reused)
    known: dict[tuple[str, str], str] = field(default_factory=dict)
    ok: frozenset[str] = frozenset()  # trailers the snapshot published with an embedding
    uri: str = ""  # the snapshot ("" = none)
    labels_digest: str = ""  # of the labels it published ("" = none recorded, or no snapshot)


def latest_files(uri: str | None) -> LatestFiles:
    """The files of snapshot ``uri`` (None: no snapshot yet), from a few small columns of its
    trailers table (the embeddings are most of it and are not read)."""
    if uri is None:
        return LatestFiles()
    path = storage.join(uri, "trailers.parquet")
    try:
        table = storage.read_table(
            path, ["trailer_id", "uri", "fingerprint", "source_version", "status"])
    except pa.ArrowInvalid:  # a snapshot from before version tags: nothing to reuse
        table = storage.read_table(path, ["trailer_id", "uri", "fingerprint", "status"])
    ids, uris, fps = (table[c].to_pylist() for c in ("trailer_id", "uri", "fingerprint"))
    versions = (table["source_version"].to_pylist() if "source_version" in table.column_names
                else [""] * table.num_rows)
    status = table["status"].to_pylist()
    labels_uri = storage.join(uri, LABELS_FILE)
    digest = (str(storage.read_json(labels_uri).get("digest", ""))
              if storage.exists(labels_uri) else "")
    return LatestFiles(
        ledger=dict(zip(ids, fps, strict=True)),
        owners=dict(zip(ids, uris, strict=True)),
        known={(u, v): fp for u, v, fp in zip(uris, versions, fps, strict=True)
               if v and fp and not fp.startswith("unreadable-")},
        ok=frozenset(t for t, s in zip(ids, status, strict=True) if s == "ok"),
        uri=uri,
        labels_digest=digest,
    )


def relabelled(ids: list[str], labels: dict[str, list[str]], digest: str,
               files: LatestFiles) -> list[str]:
    """The trailers of ``ids`` that the snapshot of ``files`` published with other labels
    than ``labels`` (of digest ``digest``; genre order and repeats aside), sorted. Only when
    ``digest`` differs from the one the snapshot recorded is its ``genres`` column read."""
    if not files.uri or (files.labels_digest and files.labels_digest == digest):
        return []
    table = storage.read_table(storage.join(files.uri, "trailers.parquet"),
                               ["trailer_id", "genres"])
    published = dict(zip(table["trailer_id"].to_pylist(), table["genres"].to_pylist(),
                         strict=True))
    return sorted(t for t in ids if t in published
                  and sorted(set(published[t] or ())) != sorted(set(labels.get(t, ()))))


@dataclass
class Previous:
    """The latest published snapshot, as an incremental run needs it."""

    name: str
    uri: str
    files: LatestFiles
    model: policy.ModelInfo
    centroids: np.ndarray  # (k, D) float32

    @property
    def ledger(self) -> dict[str, str]:
        return self.files.ledger

    @property
    def model_dir(self) -> str:
        return self.model.model_dir


def previous(uri: str, files: LatestFiles) -> Previous:
    """The latest published snapshot ``uri`` as an incremental run needs it."""
    sub = storage.read_table(storage.join(uri, "subgenres.parquet"), ["centroid"])
    model = storage.read_json(storage.join(uri, "model.json"))
    return Previous(
        name=uri.rstrip("/").rsplit("/", 1)[-1],
        uri=uri,
        files=files,
        model=policy.ModelInfo.from_dict(model),
        centroids=schema.matrix(sub["centroid"]),  # (k, D): float32[D] or list<float32>
    )


def changes(ids: list[str], fingerprints: list[str], prev: Previous | None) -> dict[str, list[str]]:
    """new / changed / unchanged / removed trailer ids against the previous ledger."""
    ledger = prev.ledger if prev else {}
    now = dict(zip(ids, fingerprints, strict=True))
    return {
        "new": sorted(t for t in now if t not in ledger),
        "changed": sorted(t for t in now if t in ledger and ledger[t] != now[t]),
        "unchanged": sorted(t for t in now if t in ledger and ledger[t] == now[t]),
        "removed": sorted(t for t in ledger if t not in now),
    }


def anything(diff: dict[str, list[str]]) -> bool:
    """Whether ``diff`` holds a new, changed or removed trailer."""
    return bool(diff["new"] or diff["changed"] or diff["removed"])
