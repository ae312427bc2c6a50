"""Per-title experts over the archive's metadata sidecar: their inputs, vectors and cache rows.

Owns what turns a title's metadata (:data:`mmx.schema.METADATA` rows, :mod:`mmx.metadata`) into
the vectors of the run's ``title`` experts (:mod:`mmx.experts.registry`): which experts are
active (:func:`active_title_experts`: those of ``experts.names`` when the archive has a
sidecar, none otherwise, so an archive without one runs exactly as before), each expert's input
by the sidecar fields it ``needs`` (:func:`title_inputs`), the vectors with their masks
(:func:`describe_titles`) as rows of :func:`vectors_schema` keyed by the title's metadata
fingerprint (:func:`mmx.metadata.fingerprints`; not the video's: an edited plot re-embeds the
title without decoding its trailer), the settings key of their cache (:func:`titles_key`) and
the join of those rows onto ``features`` rows (:func:`attach`, via
:func:`mmx.features.with_title_expert`).

Pure pyarrow/numpy/torch over :mod:`mmx.storage`; the Ray adapter is
:mod:`mmx.stages.titles`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmx import metadata, schema, storage
from mmx.config import TITLE_EXPERT_SETTINGS, RunConfig
from mmx.errors import is_transient
from mmx.experts.registry import Expert, expert_class, plan
from mmx.features import with_title_expert

log = logging.getLogger(__name__)

NUMERIC_FIELDS = ("year", "runtime_min")  # needs read through metadata.numeric_features
POSTER_READS = 3  # attempts at a poster read that fails for a transient (storage) reason


def active_title_experts(cfg: RunConfig, sidecar: metadata.MetadataTable | None
                         ) -> tuple[str, ...]:
    """The title experts this run computes: the ``title`` experts of ``experts.names`` when the
    archive has a sidecar, none without one (the run is then the trailer-only run)."""
    return plan(cfg.experts.names).title if sidecar is not None else ()


def titles_key(cfg: RunConfig, names: Sequence[str]) -> str:
    """Short hash of what changes a title's vectors besides its metadata: the title experts and
    their settings (text model length and quantisation, poster fit and CNN side, user weights).
    Title vectors are cached under ``cache/titles-<key>/``."""
    experts = cfg.to_dict()["experts"]
    parts = {
        "names": list(names),
        "settings": {k: experts[k] for k in (*TITLE_EXPERT_SETTINGS, "appearance_size")},
        "weights": {n: experts["weights"][n] for n in names if n in experts["weights"]},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def vectors_schema(names: Sequence[str]) -> pa.Schema:
    """Cached title vectors: ``fingerprint`` (the metadata fingerprint) and one
    ``list<float32>`` column of ``dim`` floats per title expert, null where the title lacks
    that expert's input (masked)."""
    return pa.schema([("fingerprint", pa.string()),
                      *[(n, pa.list_(pa.float32())) for n in names]])


def title_inputs(expert: type[Expert], rows: pa.Table, archive_uri: str) -> list[Any]:
    """The input of ``expert`` for each of ``rows`` (:data:`mmx.schema.METADATA` columns), by
    the fields it ``needs``: ``plot``/``title`` → the text (None: none); ``poster`` → the image
    bytes (None: none, or not an image: :func:`mmx.metadata.read_poster`);
    ``year``/``runtime_min`` → one row of :func:`mmx.metadata.numeric_features` (None: neither
    known)."""
    needs = tuple(expert.needs)
    if not needs:
        raise ValueError(f"title expert {expert.name!r} declares no sidecar fields (needs)")
    if set(needs) <= set(NUMERIC_FIELDS):
        values, has = metadata.numeric_features(
            metadata.MetadataTable(uri="", archive=archive_uri, table=rows.select(
                schema.METADATA.names)), rows["trailer_id"].to_pylist())
        return [v if h else None for v, h in zip(values, has, strict=True)]
    if needs == ("poster",):
        return [None if p is None else read_poster(archive_uri, p)
                for p in rows["poster"].to_pylist()]
    if len(needs) == 1 and needs[0] in ("plot", "title"):
        return rows[needs[0]].to_pylist()
    raise ValueError(f"title expert {expert.name!r} needs {needs}: no input is built for that "
                     f"(known: 'plot', 'title', 'poster', {NUMERIC_FIELDS})")


def read_poster(archive_uri: str, rel: str) -> bytes | None:
    """Poster bytes, None when the file is missing or not an image (that title's poster is
    masked, and cached so); a transient storage error is retried, then raised (a masked
    poster would otherwise be cached as if the title had none)."""
    for attempt in range(POSTER_READS):
        try:
            return metadata.read_poster(archive_uri, rel)
        except metadata.MetadataError as err:
            log.warning("%s: the poster is masked", err)
            return None
        except Exception as err:
            if not is_transient(err) or attempt == POSTER_READS - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)
    return None


def _embed(expert: Expert, inputs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors float32 (N, dim), present bool (N,))``: the expert's own ``embed`` when it
    has one (it knows which inputs it could not use), else ``__call__`` on the inputs that are
    there."""
    if hasattr(expert, "embed"):
        vectors, present = expert.embed(inputs)
        return np.asarray(vectors, np.float32), np.asarray(present, bool)
    present = np.array([x is not None for x in inputs], bool)
    vectors = np.zeros((len(inputs), expert.dim), np.float32)
    if present.any():
        vectors[present] = expert([x for x in inputs if x is not None])
    return vectors, present


def describe_titles(experts: Mapping[str, Expert], rows: pa.Table, archive_uri: str
                    ) -> pa.Table:
    """Rows of :data:`mmx.schema.METADATA` plus ``fingerprint`` → :func:`vectors_schema` rows
    of the same titles, in order: each expert's vector, null where its input is missing."""
    out = {"fingerprint": rows["fingerprint"]}
    for name, expert in experts.items():
        vectors, present = _embed(expert, title_inputs(type(expert), rows, archive_uri))
        d = expert.dim
        offsets = pa.array(np.arange(len(present) + 1, dtype=np.int32) * d)  # (N+1,)
        out[name] = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)),
                                             mask=pa.array(~present))
    return pa.table(out, schema=vectors_schema(list(experts)))


@dataclass(frozen=True)
class TitleVectors:
    """Where the cached title vectors of a run's trailers are: the experts ``names``,
    ``prints`` (trailer_id → fingerprint of its metadata) and ``files`` (fingerprint → the
    cache file holding its row)."""

    names: tuple[str, ...]
    prints: pa.Table
    files: pa.Table


def attach(batch: pa.Table, vectors: TitleVectors) -> pa.Table:
    """``batch`` (features rows) with one column per title expert: the cached vector of each
    trailer's title, null where the title has no sidecar row or lacks the input (masked).
    Reads only the cache files of the batch's titles."""
    names, prints, files = vectors.names, vectors.prints, vectors.files
    at = pc.index_in(batch["trailer_id"], value_set=prints["trailer_id"])
    ids = batch["trailer_id"].filter(pc.is_valid(at))
    fps = prints["fingerprint"].take(at.drop_null())
    where = pc.index_in(fps, value_set=files["fingerprint"])
    paths = sorted(set(files["file"].take(where.drop_null()).to_pylist()))
    cached = storage.read_tables(paths, vectors_schema(names))
    rows = pc.index_in(fps, value_set=cached["fingerprint"])
    found = pc.is_valid(rows)
    ids, rows = ids.filter(found).to_pylist(), rows.drop_null()
    for name in names:
        col = cached[name].take(rows)  # (n,) list<float32>, null: masked
        present = col.is_valid().to_numpy(zero_copy_only=False)
        d = expert_class(name).dim
        lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = np.zeros((len(ids), d), np.float32)  # (n, D)
        vectors[lengths == d] = flat.reshape(-1, d)
        batch = with_title_expert(batch, name, ids, vectors, present)
    return batch
