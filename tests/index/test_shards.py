"""Sharded FAISS index: ids, partition, exact and IVF search, round trips, integrity checks."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import faiss
import fsspec
import numpy as np
import pytest

from mmx.index import shards
from mmx.index.shards import (
    IdCollisionError,
    IndexIntegrityError,
    ShardedIndex,
    build_index,
    build_shard,
    index_to_bytes,
    partition,
    shard_of,
    stable_id,
    stable_ids,
    train_index,
    write_index,
)


def clustered(n: int, dim: int = 32, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Seeded clustered vectors (n, dim) float32 with unequal norms."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, size=n)] + 0.5 * rng.normal(size=(n, dim))
    return (x * rng.uniform(0.5, 2.0, size=(n, 1))).astype(np.float32)


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: scores (Q, k), row indices (Q, k)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T  # (Q, N)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, top, axis=1), top


def tids_for(n: int) -> list[str]:
    return [f"trailer-{i:05d}" for i in range(n)]


@pytest.fixture()
def memory_root() -> Iterator[str]:
    root = f"memory://mmx-test-{uuid.uuid4().hex}"
    yield root
    fs, path = fsspec.core.url_to_fs(root)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_ids_and_shards_are_stable() -> None:
    # Pinned values: changing the hash would silently re-id every published trailer.
    assert stable_id("abc") == 0x3A7816BF8F01CFEA  # sha256("abc")[:8], top bit cleared
    assert [shard_of("abc", n) for n in (1, 2, 7)] == [0, 1, 0]
    tids = tids_for(3000)
    ids = stable_ids(tids)
    assert ids.dtype == np.int64 and (ids >= 0).all() and len(np.unique(ids)) == len(ids)
    counts = np.bincount([shard_of(t, 3) for t in tids], minlength=3)
    assert counts.min() > 900  # roughly balanced
    parts = partition(tids, 3)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(tids)))
    for s, rows in enumerate(parts):
        assert all(shard_of(tids[i], 3) == s for i in rows)


def test_stable_ids_refuse_duplicates_and_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="'a' occurs more than once"):
        stable_ids(["a", "b", "a"])
    monkeypatch.setattr(shards, "stable_id", lambda t: 42)
    with pytest.raises(IdCollisionError, match="shared by 'a' and 'b'"):
        stable_ids(["a", "b"])


def test_exact_sharded_search_equals_brute_force(tmp_path: Path) -> None:
    x = clustered(900)
    tids = tids_for(len(x))
    manifest = build_index(
        str(tmp_path), tids, x, n_shards=3, model_version="m1", exact_below=10_000, seed=0
    )
    assert manifest["index_type"] == "Flat" and manifest["n_shards"] == 3
    assert manifest["ntotal"] == 900 and sum(s["count"] for s in manifest["shards"]) == 900
    assert all(s["count"] > 0 for s in manifest["shards"])
    index = ShardedIndex.load(str(tmp_path))
    assert index.ntotal == 900 and index.dim == 32
    queries = clustered(40, seed=9)
    scores, found = index.search(queries, 10)
    want_scores, want_rows = brute_force(x, queries, 10)
    assert scores.dtype == np.float32 and found.dtype == object and found.shape == (40, 10)
    np.testing.assert_array_equal(found, np.asarray(tids, dtype=object)[want_rows])
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # No duplicates after the merge, and every id maps back through the id maps.
    assert all(len(set(row)) == 10 for row in found)
    ids = stable_ids(tids)
    _, got_ids = index.search_ids(queries, 10)
    np.testing.assert_array_equal(got_ids, ids[want_rows])


def test_ivf_recall_and_full_probe_is_exact() -> None:
    x = clustered(6000, n_clusters=50, seed=1)
    tids = tids_for(len(x))
    root = f"memory://mmx-test-{uuid.uuid4().hex}"
    try:
        manifest = build_index(
            root, tids, x, n_shards=3, model_version="m1", exact_below=1000, seed=0
        )
        assert manifest["index_type"].startswith("IVF")
        nlist = int(manifest["index_type"][3:].split(",")[0])
        index = ShardedIndex.load(root, nprobe=16)
        queries = clustered(200, n_clusters=50, seed=1)[:200] + 0.01
        _, want_rows = brute_force(x, queries, 10)
        want = np.asarray(tids, dtype=object)[want_rows]
        _, found = index.search(queries, 10)
        recall = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want, strict=True)])
        assert recall >= 0.9
        _, found_all = index.search(queries, 10, nprobe=nlist)
        np.testing.assert_array_equal(found_all, want)
    finally:
        fs, path = fsspec.core.url_to_fs(root)
        fs.rm(path, recursive=True)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_round_trip(where: str, tmp_path: Path, memory_root: str) -> None:
    x = clustered(300, dim=16)
    tids = tids_for(len(x))
    ids = stable_ids(tids)
    trained = index_to_bytes(train_index(x, n_total=len(x), exact_below=1000, seed=0))
    parts = partition(tids, 3)
    shard_inputs = [
        (s, build_shard(trained, ids[rows], x[rows]), ids[rows], [tids[i] for i in rows])
        for s, rows in enumerate(parts)
    ]
    if where == "local":
        root, fs = str(tmp_path / "faiss"), None
    else:
        root, fs = memory_root, fsspec.filesystem("memory")
    manifest = write_index(root, shard_inputs, model_version="m7", dim=16, metric="cosine", fs=fs)
    fs_, path = fsspec.core.url_to_fs(root)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs_.ls(path, detail=False))
    assert names == [
        "ids_00000.parquet",
        "ids_00001.parquet",
        "ids_00002.parquet",
        "manifest.json",
        "shard_00000.faiss",
        "shard_00001.faiss",
        "shard_00002.faiss",
    ]
    on_disk = json.loads(fs_.cat(f"{path}/manifest.json"))
    assert on_disk == manifest
    assert manifest["model_version"] == "m7" and manifest["metric"] == "cosine"
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    index = ShardedIndex.load(root, fs=fs)
    assert index.ntotal == 300
    scores, found = index.search(x[:5], 1)
    assert list(found[:, 0]) == tids[:5]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_search_pads_when_index_is_small(tmp_path: Path) -> None:
    x = clustered(4, dim=8)
    build_index(
        str(tmp_path), tids_for(4), x, n_shards=3, model_version="m", exact_below=10, seed=0
    )
    scores, found = ShardedIndex.load(str(tmp_path)).search(x[:2], 6)
    assert found.shape == (2, 6)
    assert all(v is not None for v in found[:, :4].ravel()) and all(
        v is None for v in found[:, 4:].ravel()
    )
    assert np.isneginf(scores[:, 4:]).all()


def test_duplicate_ids_across_shards_are_refused(tmp_path: Path) -> None:
    x = clustered(10, dim=8)
    trained = index_to_bytes(train_index(x, n_total=10, exact_below=100, seed=0))
    ids = np.arange(10, dtype=np.int64)
    tids = tids_for(10)
    a = (0, build_shard(trained, ids[:6], x[:6]), ids[:6], tids[:6])
    b = (1, build_shard(trained, ids[4:], x[4:]), ids[4:], tids[4:])
    with pytest.raises(IdCollisionError, match="ids across shards"):
        write_index(str(tmp_path), [a, b], model_version="m", dim=8)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(IdCollisionError):
        build_shard(trained, np.zeros(3, dtype=np.int64), x[:3])
    with pytest.raises(ValueError, match="ids differ"):
        write_index(str(tmp_path), [(0, a[1], ids[1:7], tids[1:7])], model_version="m", dim=8)


@pytest.fixture()
def written(tmp_path: Path) -> Path:
    x = clustered(120, dim=8)
    build_index(
        str(tmp_path), tids_for(120), x, n_shards=3, model_version="m", exact_below=999, seed=0
    )
    return tmp_path


@pytest.mark.parametrize("name", ["shard_00001.faiss", "ids_00002.parquet"])
def test_tampered_file_is_refused(written: Path, name: str) -> None:
    path = written / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match=re.escape(f"{name} fails its sha256 checksum")):
        ShardedIndex.load(str(written))


@pytest.mark.parametrize("name", ["shard_00000.faiss", "ids_00001.parquet", "manifest.json"])
def test_missing_file_is_refused(written: Path, name: str) -> None:
    (written / name).unlink()
    with pytest.raises(IndexIntegrityError, match=re.escape(f"{name} is missing")):
        ShardedIndex.load(str(written))


def test_malformed_manifest_is_refused(written: Path) -> None:
    manifest = json.loads((written / "manifest.json").read_text())
    del manifest["files"]["shard_00002.faiss"]
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match=re.escape("no checksum for shard_00002.faiss")):
        ShardedIndex.load(str(written))
    (written / "manifest.json").write_text("{not json")
    with pytest.raises(IndexIntegrityError, match="not valid JSON"):
        ShardedIndex.load(str(written))


def test_swapped_shard_is_refused_even_without_checksums(written: Path) -> None:
    # A shard replaced by another shard's file: counts or stored ids no longer match.
    (written / "shard_00000.faiss").write_bytes((written / "shard_00001.faiss").read_bytes())
    with pytest.raises(IndexIntegrityError, match=re.escape("shard_00000.faiss")):
        ShardedIndex.load(str(written))


def test_round_trip_via_s3(tmp_path: Path) -> None:
    """s3:// through s3fs against a local moto server (the dev extra); skipped without moto."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", **creds).create_bucket(
            Bucket="mmx"
        )
        fs = s3fs.S3FileSystem(
            key="test",
            secret="test",
            client_kwargs={"endpoint_url": url, "region_name": "us-east-1"},
        )
        x = clustered(60, dim=8)
        root = "s3://mmx/snapshots/a/faiss"
        build_index(
            root, tids_for(60), x, n_shards=3, model_version="m", exact_below=99, seed=0, fs=fs
        )
        index = ShardedIndex.load(root, fs=fs)
        assert index.ntotal == 60
        assert list(index.search(x[:3], 1)[1][:, 0]) == tids_for(3)
        fs.pipe("mmx/snapshots/a/faiss/ids_00001.parquet", b"junk")
        with pytest.raises(
            IndexIntegrityError, match=re.escape("ids_00001.parquet fails its sha256")
        ):
            ShardedIndex.load(root, fs=fs)
    finally:
        server.stop()


def test_encoding_choice() -> None:
    assert shards.resolve_encoding("auto", 100_000, 2048) == "flat"  # 0.76 GiB of float32
    assert shards.resolve_encoding("auto", 300_000, 2048) == "sq8"  # 2.3 GiB
    assert shards.resolve_encoding("auto", 3_000_000, 128) == "flat"  # 1.4 GiB
    assert shards.resolve_encoding("flat", 10**9, 2048) == "flat"
    with pytest.raises(ValueError, match="'pq'"):
        shards.resolve_encoding("pq", 10, 8)
    with pytest.raises(ValueError, match="'pq'"):
        train_index(clustered(50, dim=8), n_total=50, exact_below=100, seed=0, encoding="pq")


def test_sq8_index_round_trip_and_recall(tmp_path: Path) -> None:
    x = clustered(6000, n_clusters=50, seed=1)
    tids = tids_for(len(x))
    manifest = build_index(
        str(tmp_path), tids, x, n_shards=3, model_version="m1", exact_below=1000, seed=0,
        encoding="sq8", nlist=64,
    )
    assert manifest["index_type"] == "IVF64,SQ8"
    index = ShardedIndex.load(str(tmp_path), nprobe=8)
    assert index.ntotal == 6000
    # 1 byte per dimension (+ ids) instead of 4: the shards are well under half Flat's size.
    shard_bytes = sum((tmp_path / shards.shard_file(s)).stat().st_size for s in range(3))
    assert shard_bytes < 0.5 * x.nbytes
    queries = clustered(200, n_clusters=50, seed=1) + 0.01
    _, want_rows = brute_force(x, queries, 10)
    want = np.asarray(tids, dtype=object)[want_rows]
    for nprobe, floor in ((8, 0.85), (64, 0.95)):  # all lists: only quantisation error left
        _, found = index.search(queries, 10, nprobe=nprobe)
        recall = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want, strict=True)])
        assert recall >= floor, (nprobe, recall)


@pytest.mark.parametrize("encoding", ["flat", "sq8"])
def test_one_coarse_search_equals_searching_each_shard(tmp_path: Path, encoding: str) -> None:
    """The shared-quantizer search returns what searching every shard on its own and merging
    returns (the pre-assignment changes the cost, not the result)."""
    x = clustered(3000, n_clusters=30, seed=3)
    tids = tids_for(len(x))
    build_index(
        str(tmp_path), tids, x, n_shards=4, model_version="m", exact_below=100, seed=0,
        encoding=encoding, nlist=32,
    )
    index = ShardedIndex.load(str(tmp_path))
    queries = clustered(50, n_clusters=30, seed=8)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for nprobe in (1, 5, 32, 500):  # 500 > nlist: clamped
        scores, ids = index.search_ids(queries, 7, nprobe=nprobe)
        params = faiss.SearchParametersIVF(nprobe=min(nprobe, 32))
        each = [s.search(q, 7, params=params) for s in index.shards]
        all_s = np.concatenate([d for d, _ in each], axis=1)
        all_i = np.concatenate([i for _, i in each], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :7]
        np.testing.assert_allclose(scores, np.take_along_axis(all_s, top, axis=1), atol=1e-5)
        np.testing.assert_array_equal(ids, np.take_along_axis(all_i, top, axis=1))
        assert (ids >= 0).all() and all(len(set(r)) == 7 for r in ids)


def test_shards_from_different_trainings_are_refused(tmp_path: Path) -> None:
    """Searching one quantizer for all shards is only right if they share it: refuse others."""
    x = clustered(2000, n_clusters=20, seed=2)
    tids = tids_for(len(x))
    ids = stable_ids(tids)
    a = index_to_bytes(train_index(x, n_total=2000, exact_below=10, seed=0, nlist=16))
    b = index_to_bytes(train_index(x, n_total=2000, exact_below=10, seed=1, nlist=16))
    parts = partition(tids, 2)
    inputs = [
        (s, build_shard(t, ids[rows], x[rows]), ids[rows], [tids[i] for i in rows])
        for s, (t, rows) in enumerate(zip((a, b), parts, strict=True))
    ]
    with pytest.raises(ValueError, match="different trained indexes"):
        write_index(str(tmp_path / "mixed"), inputs, model_version="m", dim=32)
    assert not (tmp_path / "mixed" / "manifest.json").exists()
    loaded = [shards.index_from_bytes(data) for _, data, _, _ in inputs]
    with pytest.raises(IndexIntegrityError, match="different trained indexes"):
        ShardedIndex({"dim": 32}, loaded, ids, tids)
    # Same training: fine, and the manifest records the shared fingerprint, checked on load.
    good = [
        (s, build_shard(a, ids[rows], x[rows]), ids[rows], [tids[i] for i in rows])
        for s, rows in enumerate(parts)
    ]
    root = tmp_path / "good"
    manifest = write_index(str(root), good, model_version="m", dim=32)
    assert manifest["trained_sha256"] == shards.trained_fingerprint(shards.index_from_bytes(a))
    ShardedIndex.load(str(root))
    manifest["trained_sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match="differs from the manifest"):
        ShardedIndex.load(str(root))


def test_build_shard_adds_in_blocks_without_touching_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = clustered(500, dim=16, seed=5)
    before = x.copy()
    ids = np.arange(500, dtype=np.int64) * 7 + 3
    for encoding in ("flat", "sq8"):
        trained = index_to_bytes(
            train_index(x, n_total=500, exact_below=10, seed=0, nlist=8, encoding=encoding)
        )
        whole = build_shard(trained, ids, x)
        monkeypatch.setattr(shards, "ADD_CHUNK", 37)
        blocks = build_shard(trained, ids, x)
        monkeypatch.undo()
        assert blocks == whole  # same vectors, same order: byte-identical shard
        index = shards.index_from_bytes(whole)
        assert index.ntotal == 500
        np.testing.assert_array_equal(np.sort(shards.index_ids(index)), ids)
    np.testing.assert_array_equal(x, before)
