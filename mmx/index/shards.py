"""Sharded FAISS index: stable ids, shard assignment, training, shard building, layout, search.

Owns the ``faiss/`` folder of a snapshot (DESIGN §4)::

    shard_00000.faiss    one serialised FAISS index per shard, vectors added with global ids
    ids_00000.parquet    that shard's id map: id int64, trailer_id string
    manifest.json        written LAST: files, sha256 checksums, model version, index type,
                         metric, dim, counts per shard and in total, creation time

A folder without ``manifest.json`` is unfinished and is refused by :meth:`ShardedIndex.load`.

Rules (PITFALLS, FAISS items): every vector enters with an explicit global 64-bit id
(:func:`stable_id`, a hash of trailer_id, so ids survive incremental runs); ids are checked for
collisions and for uniqueness across shards; all shards are copies of ONE trained index
(:func:`train_index`, once per model version). Similarity is cosine: vectors are
L2-normalised here and the index ranks by inner product.

IVF encodings (``encoding`` of :func:`train_index`, ``index.ivf_encoding`` in config):
``flat`` stores float32 vectors (exact scores within the probed lists, 4·D bytes per vector);
``sq8`` stores one byte per dimension (FAISS ``SQ8``: 4× smaller, ~1.8× faster scans at D=2048,
about half a point of recall@10 at equal nprobe); ``auto`` picks ``sq8`` once the float32
vectors would exceed :data:`SQ8_ABOVE_BYTES` (2 GiB: ~262k vectors at D=2048), else ``flat``.

Search (:meth:`ShardedIndex.search_ids`): all IVF shards share one trained coarse quantizer
(checked on load by a fingerprint of the trained state), so the quantizer is searched once per
query batch and the probe lists go to every shard (``search_preassigned``); shard top-k lists
are merged.

Distributed use (no Ray here): the driver calls :func:`train_index` and :func:`index_to_bytes`
once; one task per shard calls :func:`build_shard` then :func:`write_shard`; the driver calls
:func:`write_manifest` last with the entries the tasks returned. :func:`write_index` and
:func:`build_index` do the same in one process.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faiss
import fsspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from mmx import killpoints, storage
from mmx.index.vectors import as_matrix, l2_normalise, row_blocks

FORMAT = "mmx-faiss-sharded"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METRICS = ("cosine",)  # inner product over L2-normalised vectors
ID_SCHEME = "sha256-63"  # stable_id: first 8 bytes of sha256(trailer_id), top bit cleared
IDS_SCHEMA = pa.schema([("id", pa.int64()), ("trailer_id", pa.string())])
MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per IVF list
DEFAULT_NPROBE = 16
ENCODINGS = ("auto", "flat", "sq8")  # IVF list encodings; see the module docstring
SQ8_ABOVE_BYTES = 2 * 2**30  # "auto": SQ8 once N·D float32 bytes exceed this
ADD_CHUNK = 65_536  # rows normalised and added per step in build_shard

ShardInput = tuple[int, bytes, npt.ArrayLike, Sequence[str]]


class IndexIntegrityError(RuntimeError):
    """A published index is incomplete or corrupt (missing file, checksum or count mismatch)."""


class IdCollisionError(ValueError):
    """Two different trailer_ids map to one 64-bit id, or an id occurs in two places."""


# --------------------------------------------------------------------------- ids and shards


def _digest(trailer_id: str) -> bytes:
    return hashlib.sha256(trailer_id.encode("utf-8")).digest()


def stable_id(trailer_id: str) -> int:
    """Global FAISS id of a trailer: a non-negative 63-bit int from sha256(trailer_id).

    Never -1 (FAISS's "no result"), identical across runs, machines and Python versions.
    """
    return int.from_bytes(_digest(trailer_id)[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def shard_of(trailer_id: str, n_shards: int) -> int:
    """Shard number in ``[0, n_shards)`` of a trailer (bytes 8..16 of sha256, not ``hash()``)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return int.from_bytes(_digest(trailer_id)[8:16], "big") % n_shards


def stable_ids(trailer_ids: Sequence[str]) -> np.ndarray:
    """:func:`stable_id` of each trailer as (N,) int64; raises on duplicates or collisions.

    ``ValueError`` if a trailer_id repeats, :class:`IdCollisionError` (naming both trailers) if
    two distinct trailer_ids hash to one id.
    """
    tids = list(trailer_ids)
    ids = np.fromiter((stable_id(t) for t in tids), dtype=np.int64, count=len(tids))
    if len(set(tids)) != len(tids):
        dup = next(t for t, n in Counter(tids).items() if n > 1)
        raise ValueError(f"trailer_id {dup!r} occurs more than once")
    _check_unique(ids, tids, what="stable ids")
    return ids


def partition(trailer_ids: Sequence[str], n_shards: int) -> list[np.ndarray]:
    """Row indices (int64, ascending) of each shard: ``result[s]`` = rows with shard_of == s."""
    shard = np.fromiter(
        (shard_of(t, n_shards) for t in trailer_ids), dtype=np.int64, count=len(trailer_ids)
    )
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(n_shards + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(n_shards)]


def _check_unique(ids: np.ndarray, trailer_ids: Sequence[str], *, what: str) -> None:
    """Raise :class:`IdCollisionError` naming the first two rows that share an id."""
    if len(ids) < 2:
        return
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(same):
        a, b = order[same[0]], order[same[0] + 1]
        raise IdCollisionError(
            f"{what}: id {int(ids[a])} is shared by {trailer_ids[a]!r} and {trailer_ids[b]!r}"
        )


# --------------------------------------------------------------------------- training, shards


def nlist_for(n_total: int, n_train: int) -> int:
    """IVF list count: ~4*sqrt(n_total), capped so each list gets >= 39 training points."""
    want = round(4 * math.sqrt(max(n_total, 1)))
    return max(1, min(want, n_train // MIN_POINTS_PER_LIST))


def resolve_encoding(encoding: str, n_total: int, dim: int) -> str:
    """``flat`` or ``sq8`` for an IVF index of ``n_total`` vectors of width ``dim``.

    ``auto``: ``sq8`` when ``n_total * dim * 4`` bytes exceed :data:`SQ8_ABOVE_BYTES`.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"ivf encoding {encoding!r} not supported; known: {list(ENCODINGS)}")
    if encoding == "auto":
        return "sq8" if n_total * dim * 4 > SQ8_ABOVE_BYTES else "flat"
    return encoding


def train_index(
    sample: npt.ArrayLike,
    *,
    n_total: int,
    exact_below: int,
    seed: int,
    nlist: int | None = None,
    encoding: str = "auto",
) -> faiss.Index:
    """The empty, trained index every shard of one model version starts from.

    ``sample`` (M, D) float32: training vectors (a seeded sample of the embeddings; normalised
    here, a copy). Below ``exact_below`` total vectors: an exact ``IndexFlatIP`` (no training).
    Above: ``IVF{nlist},Flat`` or ``IVF{nlist},SQ8`` (``encoding``: ``flat``, ``sq8`` or
    ``auto``, see :func:`resolve_encoding`) with inner product, ``nlist`` = :func:`nlist_for`
    unless given, coarse quantizer trained by seeded k-means on ``sample`` (which should hold
    >= 39 * nlist rows); SQ8 also learns its per-dimension ranges from ``sample``.
    """
    x = l2_normalise(sample, name="sample")
    d = x.shape[1]
    codes = resolve_encoding(encoding, n_total, d)  # validates even when exact
    if n_total < exact_below:
        return faiss.IndexFlatIP(d)
    nlist = nlist or nlist_for(n_total, len(x))
    if len(x) < nlist:
        raise ValueError(f"train_index: {len(x)} training vectors for {nlist} IVF lists")
    factory = f"IVF{nlist},{'SQ8' if codes == 'sq8' else 'Flat'}"
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = int(seed)
    ivf.cp.min_points_per_centroid = 1  # nlist is already capped by the sample size
    index.train(x)
    return index


def index_to_bytes(index: faiss.Index) -> bytes:
    """Serialise a FAISS index (``faiss.serialize_index``) to plain bytes."""
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes) -> faiss.Index:
    """Inverse of :func:`index_to_bytes`."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def build_shard(trained_index_bytes: bytes, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> bytes:
    """One shard: a fresh copy of the trained empty index holding ``vectors`` under ``ids``.

    ``ids`` (n,) int64 global ids (e.g. :func:`stable_ids`), unique and >= 0; ``vectors``
    (n, D) float32, L2-normalised here. A flat index is wrapped in ``IndexIDMap`` so it can
    take explicit ids; IVF takes them natively. Returns the serialised shard.
    """
    index = index_from_bytes(trained_index_bytes)
    if index.ntotal != 0:
        raise ValueError(f"build_shard: trained index is not empty ({index.ntotal} vectors)")
    if not index.is_trained:
        raise ValueError("build_shard: index is not trained")
    x = as_matrix(vectors, dim=index.d)  # no copy for C-contiguous float32
    id_arr = np.ascontiguousarray(ids, dtype=np.int64)
    if id_arr.shape != (len(x),):
        raise ValueError(f"build_shard: {id_arr.shape} ids for {len(x)} vectors")
    if len(id_arr) and id_arr.min() < 0:
        raise ValueError("build_shard: ids must be >= 0 (-1 is FAISS's 'no result')")
    if len(np.unique(id_arr)) != len(id_arr):
        raise IdCollisionError("build_shard: duplicate ids within the shard")
    if isinstance(index, faiss.IndexFlat):
        index = faiss.IndexIDMap(index)
    for rows in row_blocks(len(x), ADD_CHUNK):  # a normalised copy of one block at a time
        index.add_with_ids(l2_normalise(x[rows]), id_arr[rows])
    return index_to_bytes(index)


def training_rows(trailer_ids: Sequence[str], n_sample: int, seed: int) -> np.ndarray:
    """Rows (ascending int64) of the seeded sample the index is trained on: at most
    ``n_sample`` trailers, drawn by ``seed`` from the trailers in trailer_id order, so the
    sample depends on which trailers there are, never on the order they arrive in."""
    tids = np.asarray([str(t) for t in trailer_ids], dtype=object)
    by_id = np.argsort(tids, kind="stable")
    pick = np.random.default_rng(seed).permutation(len(tids))[:n_sample]
    return np.sort(by_id[pick])


def update_shard(
    shard_bytes: bytes, remove: npt.ArrayLike, ids: npt.ArrayLike, vectors: npt.ArrayLike
) -> bytes:
    """A published shard with the global ids ``remove`` taken out and ``vectors`` (n, D) added
    under ``ids`` (n,): the same trained index, so shards stay copies of one training.
    An id both removed and added (a changed trailer) ends up holding its new vector."""
    index = index_from_bytes(shard_bytes)
    gone = np.ascontiguousarray(remove, dtype=np.int64)
    if len(gone):
        index.remove_ids(faiss.IDSelectorBatch(gone))
    x = as_matrix(vectors, dim=index.d)
    id_arr = np.ascontiguousarray(ids, dtype=np.int64)
    if id_arr.shape != (len(x),):
        raise ValueError(f"update_shard: {id_arr.shape} ids for {len(x)} vectors")
    if len(id_arr):
        present = np.intersect1d(index_ids(index), id_arr)
        if len(present):
            raise IdCollisionError(f"update_shard: ids {present[:3].tolist()} already present")
        for rows in row_blocks(len(x), ADD_CHUNK):
            index.add_with_ids(l2_normalise(x[rows]), id_arr[rows])
    return index_to_bytes(index)


def index_type(index: faiss.Index) -> str:
    """Factory-style description of a shard: ``"Flat"``, ``"IVF{nlist},Flat"`` or
    ``"IVF{nlist},SQ8"``."""
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return "Flat"
    ivf = faiss.downcast_index(ivf)  # IndexIVF → IndexIVFFlat / IndexIVFScalarQuantizer
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
        if ivf.sq.qtype != faiss.ScalarQuantizer.QT_8bit:
            raise TypeError(f"index_type: unsupported scalar quantizer type {ivf.sq.qtype}")
        return f"IVF{ivf.nlist},SQ8"
    if isinstance(ivf, faiss.IndexIVFFlat):
        return f"IVF{ivf.nlist},Flat"
    raise TypeError(f"index_type: unsupported IVF index {type(ivf).__name__}")


def trained_fingerprint(index: faiss.Index) -> str:
    """sha256 of the trained state a shard shares with its siblings (not of its vectors).

    IVF: list count, metric, residual flag, the coarse centroids and, for SQ8, the quantizer's
    ranges; flat: the type and width. Equal fingerprints = shards cut from one trained index,
    which is what lets :class:`ShardedIndex` search the coarse quantizer once for all shards.
    """
    h = hashlib.sha256(index_type(index).encode())
    h.update(f"d={index.d};metric={index.metric_type}".encode())
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        h.update(f"by_residual={bool(ivf.by_residual)}".encode())
        quantizer = faiss.downcast_index(ivf.quantizer)
        h.update(np.ascontiguousarray(quantizer.reconstruct_n(0, ivf.nlist)).tobytes())
        ivf = faiss.downcast_index(ivf)
        if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
            h.update(faiss.vector_to_array(ivf.sq.trained).tobytes())
    return h.hexdigest()


def index_ids(index: faiss.Index) -> np.ndarray:
    """All ids stored in a flat-in-IDMap or IVF index, (ntotal,) int64 (order unspecified)."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise TypeError(f"index_ids: unsupported index {type(index).__name__}")
    invlists = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            ptr = invlists.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- files


def _fs_root(path: str, fs: fsspec.AbstractFileSystem | None) -> tuple[Any, str]:
    if fs is None:
        return fsspec.core.url_to_fs(str(path))
    return fs, fs._strip_protocol(str(path))


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` whole or not at all: locally through a temp file renamed over ``path``
    (a kill mid-write leaves the previous file, or none); an object-store PUT is atomic."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocol or "local" in protocol:
        storage.write_local_atomic(path, data)
        return
    with fs.open(path, "wb") as f:
        f.write(data)


def _read(fs: Any, path: str, what: str) -> bytes:
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        raise IndexIntegrityError(f"{what} {path} is missing") from err


def shard_file(shard_no: int) -> str:
    """``shard_00000.faiss``."""
    return f"shard_{shard_no:05d}.faiss"


def ids_file(shard_no: int) -> str:
    """``ids_00000.parquet``."""
    return f"ids_{shard_no:05d}.parquet"


def write_shard(
    out_path: str,
    shard_no: int,
    index_bytes: bytes,
    ids: npt.ArrayLike,
    trailer_ids: Sequence[str],
    *,
    fs: fsspec.AbstractFileSystem | None = None,
) -> dict[str, Any]:
    """Write one shard's index and id map under ``out_path``; return its manifest entry.

    ``ids`` (n,) int64 must be exactly the ids inside ``index_bytes`` (checked), paired with
    ``trailer_ids`` (n,) strings. Safe to call from one task per shard in parallel.
    """
    fs, root = _fs_root(out_path, fs)
    id_arr = np.ascontiguousarray(ids, dtype=np.int64)
    tids = [str(t) for t in trailer_ids]
    if id_arr.shape != (len(tids),):
        raise ValueError(f"shard {shard_no}: {id_arr.shape} ids for {len(tids)} trailer_ids")
    index = index_from_bytes(index_bytes)
    if index.ntotal != len(id_arr):
        raise ValueError(f"shard {shard_no}: index holds {index.ntotal} vectors, {len(id_arr)} ids")
    if not np.array_equal(np.sort(index_ids(index)), np.sort(id_arr)):
        raise ValueError(f"shard {shard_no}: ids differ from the ids inside the index")
    _check_unique(id_arr, tids, what=f"shard {shard_no}")
    table = pa.table({"id": id_arr, "trailer_id": pa.array(tids, pa.string())}, schema=IDS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    ids_bytes = buf.getvalue()
    fs.makedirs(root, exist_ok=True)
    _write(fs, _join(root, shard_file(shard_no)), index_bytes)
    killpoints.reached("shard")
    _write(fs, _join(root, ids_file(shard_no)), ids_bytes)
    return {
        "shard": int(shard_no),
        "index_file": shard_file(shard_no),
        "ids_file": ids_file(shard_no),
        "count": len(id_arr),
        "index_type": index_type(index),
        "trained_sha256": trained_fingerprint(index),
        "dim": int(index.d),
        "index_sha256": _sha256(index_bytes),
        "ids_sha256": _sha256(ids_bytes),
        "index_bytes": len(index_bytes),
        "ids_bytes": len(ids_bytes),
    }


def write_manifest(
    out_path: str,
    entries: Sequence[dict[str, Any]],
    *,
    model_version: str,
    dim: int,
    metric: str = "cosine",
    fs: fsspec.AbstractFileSystem | None = None,
) -> dict[str, Any]:
    """Check the written shards and publish ``manifest.json`` (the last file written).

    ``entries`` are :func:`write_shard` results, shard numbers 0..n-1 each once. Re-reads every
    id map (checksum) and refuses ids shared between shards. Returns the manifest dict.
    """
    fs, root = _fs_root(out_path, fs)
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} not supported; known: {list(METRICS)}")
    entries = sorted(entries, key=lambda e: e["shard"])
    numbers = [e["shard"] for e in entries]
    if numbers != list(range(len(entries))):
        raise ValueError(f"shard numbers must be 0..{len(entries) - 1} once each, got {numbers}")
    types = {e["index_type"] for e in entries}
    if len(types) > 1:
        raise ValueError(f"shards disagree on index type: {sorted(types)} (train once)")
    trained = {e["trained_sha256"] for e in entries}
    if len(trained) > 1:
        raise ValueError("shards come from different trained indexes (train once, copy it)")
    dims = {e["dim"] for e in entries}
    if dims != {dim}:
        raise ValueError(f"shard dims {sorted(dims)} differ from dim={dim}")
    all_ids, all_tids = [], []
    for e in entries:
        table = _read_ids(fs, root, e["ids_file"], e["ids_sha256"], verify=True)
        all_ids.append(table.column("id").to_numpy())
        all_tids.extend(table.column("trailer_id").to_pylist())
    ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
    _check_unique(ids, all_tids, what="ids across shards")
    files = {}
    for e in entries:
        files[e["index_file"]] = {"sha256": e["index_sha256"], "bytes": e["index_bytes"]}
        files[e["ids_file"]] = {"sha256": e["ids_sha256"], "bytes": e["ids_bytes"]}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_version": str(model_version),
        "index_type": types.pop() if types else "Flat",
        "trained_sha256": trained.pop() if trained else None,
        "metric": metric,
        "dim": int(dim),
        "id_scheme": ID_SCHEME,
        "n_shards": len(entries),
        "ntotal": int(sum(e["count"] for e in entries)),
        "shards": [
            {k: e[k] for k in ("shard", "index_file", "ids_file", "count")} for e in entries
        ],
        "files": files,
    }
    _write(fs, _join(root, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def write_index(
    out_path: str,
    shards: Sequence[ShardInput],
    *,
    model_version: str,
    dim: int,
    metric: str = "cosine",
    fs: fsspec.AbstractFileSystem | None = None,
) -> dict[str, Any]:
    """Write every shard, then ``manifest.json`` last; return the manifest dict.

    ``shards``: ``(shard_no, index_bytes, ids (n,) int64, trailer_ids (n,) str)`` per shard,
    as produced by :func:`build_shard`. An existing manifest in ``out_path`` is removed first
    so a half-overwritten folder never looks complete.
    """
    fs, root = _fs_root(out_path, fs)
    manifest_path = _join(root, MANIFEST)
    if fs.exists(manifest_path):
        fs.rm(manifest_path)
    entries = [write_shard(root, no, data, ids, tids, fs=fs) for no, data, ids, tids in shards]
    return write_manifest(root, entries, model_version=model_version, dim=dim, metric=metric, fs=fs)


def build_index(
    out_path: str,
    trailer_ids: Sequence[str],
    vectors: npt.ArrayLike,
    *,
    n_shards: int,
    model_version: str,
    exact_below: int,
    seed: int,
    train_sample: int = 100_000,
    encoding: str = "auto",
    nlist: int | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
) -> dict[str, Any]:
    """All steps in one process: ids, partition, train once, build and write shards, manifest.

    ``vectors`` (N, D) float32 row-aligned with ``trailer_ids`` (not copied as a whole; each
    shard's rows are, one shard at a time). The training sample is at most ``train_sample``
    rows, drawn with ``seed``; ``encoding`` and ``nlist`` go to :func:`train_index`. Returns
    the manifest dict.
    """
    tids = [str(t) for t in trailer_ids]
    x = as_matrix(vectors)
    if len(x) != len(tids):
        raise ValueError(f"{len(tids)} trailer_ids for {len(x)} vectors")
    ids = stable_ids(tids)
    rows = training_rows(tids, train_sample, seed)
    trained = index_to_bytes(
        train_index(
            x[rows], n_total=len(x), exact_below=exact_below, seed=seed, nlist=nlist,
            encoding=encoding,
        )
    )
    fs, root = _fs_root(out_path, fs)
    manifest_path = _join(root, MANIFEST)
    if fs.exists(manifest_path):
        fs.rm(manifest_path)
    entries = []
    for s, part in enumerate(partition(tids, n_shards)):  # one shard in memory at a time
        data = build_shard(trained, ids[part], x[part])
        entries.append(write_shard(root, s, data, ids[part], [tids[i] for i in part], fs=fs))
        del data
    return write_manifest(root, entries, model_version=model_version, dim=x.shape[1], fs=fs)


def _read_ids(fs: Any, root: str, name: str, sha256: str | None, *, verify: bool) -> pa.Table:
    path = _join(root, name)
    data = _read(fs, path, "id map")
    if verify and sha256 is not None and _sha256(data) != sha256:
        raise IndexIntegrityError(f"id map {path} fails its sha256 checksum (corrupt or replaced)")
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise IndexIntegrityError(f"id map {path} is not a readable Parquet file: {err}") from err


# --------------------------------------------------------------------------- reading, search


def _check_manifest(manifest: Any, mpath: str) -> None:
    """Raise :class:`IndexIntegrityError` unless ``manifest`` has the fields the reader uses."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexIntegrityError(f"{mpath} is not an {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise IndexIntegrityError(
            f"{mpath}: format_version {manifest['format_version']} is newer than this "
            f"reader ({FORMAT_VERSION})"
        )
    missing = [key for key in ("dim", "metric", "shards", "files") if key not in manifest]
    if missing:
        raise IndexIntegrityError(f"{mpath} lacks {missing}")
    if manifest["metric"] not in METRICS:
        raise IndexIntegrityError(f"{mpath}: unknown metric {manifest['metric']!r}")
    files = manifest["files"]
    for entry in manifest["shards"]:
        for key in ("index_file", "ids_file", "count"):
            if key not in entry:
                raise IndexIntegrityError(f"{mpath}: a shard entry lacks {key!r}")
        for key in ("index_file", "ids_file"):
            if "sha256" not in files.get(entry[key], {}):
                raise IndexIntegrityError(f"{mpath}: no checksum for {entry[key]}")


class ShardedIndex:
    """A loaded sharded index: FAISS shards plus the global id → trailer_id map.

    Usually built with :meth:`load`. Search fans out over the shards and merges their top-k;
    IVF shards (which must share one trained index, else :class:`IndexIntegrityError`) get
    the coarse quantizer's probe lists computed once per query batch.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        shards: list[faiss.Index],
        ids: npt.ArrayLike,
        trailer_ids: Sequence[str],
        *,
        nprobe: int = DEFAULT_NPROBE,
    ) -> None:
        """``ids`` (ntotal,) int64 and ``trailer_ids`` (ntotal,) str: the union of id maps."""
        prints = {trained_fingerprint(s) for s in shards}
        if len(prints) > 1:
            raise IndexIntegrityError("shards come from different trained indexes")
        want = manifest.get("trained_sha256")
        if want is not None and prints and prints != {want}:
            raise IndexIntegrityError("shards' trained state differs from the manifest's")
        ivfs = [faiss.try_extract_index_ivf(s) for s in shards]
        # all IVF (one shared quantizer) or all flat: write_manifest refuses mixed types
        self._ivfs = ivfs if ivfs and all(v is not None for v in ivfs) else None
        id_arr = np.asarray(ids, dtype=np.int64)
        tids = np.empty(len(trailer_ids), dtype=object)
        tids[:] = list(trailer_ids)
        order = np.argsort(id_arr, kind="stable")
        self.manifest = manifest
        self.shards = shards
        self.nprobe = nprobe
        self._sorted_ids = id_arr[order]  # (ntotal,) int64 ascending, for searchsorted
        self._sorted_tids = tids[order]  # (ntotal,) object, aligned with _sorted_ids

    @classmethod
    def load(
        cls,
        path: str,
        fs: fsspec.AbstractFileSystem | None = None,
        verify: bool = True,
        nprobe: int = DEFAULT_NPROBE,
    ) -> ShardedIndex:
        """Read ``manifest.json`` and every shard under ``path`` (local dir or URL).

        With ``verify`` (default) every file's sha256 is checked and each shard's stored ids
        must equal its id map. Raises :class:`IndexIntegrityError` naming the offending file
        when anything is missing, corrupt or inconsistent.
        """
        fs, root = _fs_root(path, fs)
        mpath = _join(root, MANIFEST)
        try:
            manifest = json.loads(_read(fs, mpath, "manifest"))
        except json.JSONDecodeError as err:
            raise IndexIntegrityError(f"manifest {mpath} is not valid JSON: {err}") from err
        _check_manifest(manifest, mpath)
        files = manifest["files"]
        indexes, all_ids, all_tids = [], [], []
        for entry in manifest["shards"]:
            ipath = _join(root, entry["index_file"])
            data = _read(fs, ipath, "shard")
            if verify and _sha256(data) != files[entry["index_file"]]["sha256"]:
                raise IndexIntegrityError(
                    f"shard {ipath} fails its sha256 checksum (corrupt or replaced)"
                )
            try:
                index = index_from_bytes(data)
            except RuntimeError as err:
                raise IndexIntegrityError(f"shard {ipath} cannot be deserialised: {err}") from err
            table = _read_ids(
                fs, root, entry["ids_file"], files[entry["ids_file"]]["sha256"], verify=verify
            )
            ids = table.column("id").to_numpy().astype(np.int64)
            if index.ntotal != entry["count"] or len(ids) != entry["count"]:
                raise IndexIntegrityError(
                    f"shard {ipath}: {index.ntotal} vectors and {len(ids)} ids, manifest says "
                    f"{entry['count']}"
                )
            if index.d != manifest["dim"]:
                raise IndexIntegrityError(f"shard {ipath}: dim {index.d} != {manifest['dim']}")
            if verify and not np.array_equal(np.sort(index_ids(index)), np.sort(ids)):
                raise IndexIntegrityError(f"shard {ipath}: stored ids differ from its id map")
            indexes.append(index)
            all_ids.append(ids)
            all_tids.extend(table.column("trailer_id").to_pylist())
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
        try:
            _check_unique(ids, all_tids, what=f"{root}: ids across shards")
        except IdCollisionError as err:
            raise IndexIntegrityError(str(err)) from err
        return cls(manifest, indexes, ids, all_tids, nprobe=nprobe)

    @property
    def ntotal(self) -> int:
        """Number of vectors over all shards."""
        return int(sum(s.ntotal for s in self.shards))

    @property
    def dim(self) -> int:
        """Vector width D."""
        return int(self.manifest["dim"])

    def search_ids(
        self, queries: npt.ArrayLike, k: int, *, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` global ids by cosine: ``queries`` (Q, D) → scores (Q, k) f32, ids (Q, k) i64.

        Rows are sorted by decreasing score; missing slots (fewer than ``k`` vectors) have id
        -1 and score -inf. ``nprobe`` (IVF only) defaults to ``self.nprobe``.
        """
        q = l2_normalise(queries, name="queries", dim=self.dim)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n_q = len(q)
        if not self.shards:
            return np.full((n_q, k), -np.inf, np.float32), np.full((n_q, k), -1, np.int64)
        scores, ids = [], []
        if self._ivfs is not None:
            first = self._ivfs[0]
            probe = max(1, min(int(nprobe or self.nprobe), first.nlist))
            # one coarse search for all shards: they share the trained quantizer (checked)
            coarse_s, coarse_i = first.quantizer.search(q, probe)  # (Q, probe) each
            params = faiss.SearchParametersIVF(nprobe=probe)
            for ivf in self._ivfs:
                d, i = _search_preassigned(ivf, q, k, coarse_i, coarse_s, params)
                scores.append(d)  # (Q, k)
                ids.append(i)
        else:
            for shard in self.shards:
                d, i = shard.search(q, k)  # (Q, k) each
                scores.append(d)
                ids.append(i)
        all_s = np.concatenate(scores, axis=1)  # (Q, S*k)
        all_i = np.concatenate(ids, axis=1)  # (Q, S*k)
        all_s[all_i < 0] = -np.inf
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]  # (Q, k)
        return (
            np.take_along_axis(all_s, top, axis=1).astype(np.float32),
            np.take_along_axis(all_i, top, axis=1).astype(np.int64),
        )

    def search(
        self, queries: npt.ArrayLike, k: int, *, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` trailers by cosine: ``queries`` (Q, D) float32 → scores (Q, k) float32,
        trailer_ids (Q, k) object (str; None in slots beyond the index size, score -inf)."""
        scores, ids = self.search_ids(queries, k, nprobe=nprobe)
        return scores, self.trailer_ids_of(ids)

    def trailer_ids_of(self, ids: npt.ArrayLike) -> np.ndarray:
        """Map global ids (any shape, int64; -1 = none) to trailer_ids (object array, None)."""
        id_arr = np.asarray(ids, dtype=np.int64)
        out = np.full(id_arr.shape, None, dtype=object)
        if len(self._sorted_ids) == 0:
            return out
        pos = np.clip(np.searchsorted(self._sorted_ids, id_arr), 0, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == id_arr
        out[found] = self._sorted_tids[pos[found]]
        return out


def _search_preassigned(
    ivf: faiss.IndexIVF,
    q: np.ndarray,
    k: int,
    coarse_i: np.ndarray,
    coarse_s: np.ndarray,
    params: faiss.SearchParametersIVF,
) -> tuple[np.ndarray, np.ndarray]:
    """``IndexIVF::search_preassigned`` with per-call ``params`` (nprobe = coarse_i's width).

    FAISS's Python wrapper refuses ``params`` and wants ``ivf.nprobe`` set instead, which
    would mutate a shared index; the C++ method takes them. ``q`` (Q, D) float32 unit rows,
    ``coarse_i`` (Q, nprobe) int64 lists, ``coarse_s`` (Q, nprobe) float32 their scores.
    Returns scores (Q, k) float32 and ids (Q, k) int64 (-1 where a slot is empty).
    """
    n = len(q)
    q = np.ascontiguousarray(q, dtype=np.float32)
    keys = np.ascontiguousarray(coarse_i, dtype=np.int64)
    dis = np.ascontiguousarray(coarse_s, dtype=np.float32)
    if keys.shape != (n, params.nprobe) or dis.shape != keys.shape:
        raise ValueError(f"coarse assignment {keys.shape} does not match nprobe {params.nprobe}")
    scores = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    ivf.search_preassigned_c(
        n,
        faiss.swig_ptr(q),
        k,
        faiss.swig_ptr(keys),
        faiss.swig_ptr(dis),
        faiss.swig_ptr(scores),
        faiss.swig_ptr(ids),
        False,
        params,
    )
    return scores, ids
