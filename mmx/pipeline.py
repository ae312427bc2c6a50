"""The whole job, in order: the only module that knows the stage order.

discover → fingerprint → ingest (decode+shots+experts) → train (coarse → contrastive) →
embed → sub-genres → sharded index + neighbours → publish a snapshot, then move LATEST.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmx import archive, policy, schema, storage
from mmx.config import DEFAULT_WORKDIR, RunConfig
from mmx.layout import OutputLayout

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: where the snapshot is, counts per status, timings, headline metric."""

    out: str
    snapshot: str
    counts: dict[str, int]
    timings_s: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    published: bool = True
    model: str = ""  # trained anew or reused, and why (mmx.policy)

    def render(self) -> str:
        """A one-screen, human-readable summary."""
        if not self.published:
            return f"nothing changed: LATEST still names {self.snapshot}"
        lines = [f"snapshot: {self.snapshot}"]
        total = sum(self.counts.values())
        counts = ", ".join(f"{k} {self.counts.get(k, 0)}" for k in schema.STATUSES)
        lines.append(f"trailers: {total} ({counts})")
        for tid, reason in sorted(self.reasons.items())[:8]:
            lines.append(f"  {tid}: {reason}")
        if len(self.reasons) > 8:
            lines.append(f"  … {len(self.reasons) - 8} more (see the trailers table)")
        test = self.metrics.get("test", {})
        genre_model = self.metrics.get("genre_model", {})
        if genre_model and not genre_model.get("trained", True):
            lines.append(f"genre model: none ({genre_model.get('reason', '')}); genre columns "
                         "are empty, embeddings are self-supervised")
        if test:
            ci = test.get("ci95", {}).get("au_prc_micro")
            lines.append(
                "test split ({} trailers): AU(PRC) micro {:.3f}{} (label-frequency baseline "
                "{:.3f}), weighted {:.3f}, F1w {:.3f}, Pw {:.3f}, Rw {:.3f}".format(
                    test.get("n", 0),
                    test.get("au_prc_micro", float("nan")),
                    f" [95% CI {ci[0]:.2f}–{ci[1]:.2f}]" if ci else "",
                    self.metrics.get("baseline", {}).get("au_prc_micro", float("nan")),
                    test.get("au_prc_weighted", float("nan")),
                    test.get("f1_weighted", float("nan")),
                    test.get("precision_weighted", float("nan")),
                    test.get("recall_weighted", float("nan")),
                )
            )
        sub = self.metrics.get("subgenres") or {}
        if sub:
            sizes = sub.get("sizes", {})
            lines.append(f"sub-genres: {sub.get('k')} ({sub.get('rule')})"
                         + (f"; sizes {sizes['min']}–{sizes['max']}, median {sizes['median']:g}"
                            if sizes else ""))
        sil = self.metrics.get("silhouette") or []
        if sil:
            lines.append(f"genre silhouette: coarse {sil[0]:.3f} → fine {sil[-1]:.3f}")
        if self.model:
            lines.append(f"model: {self.model}")
        lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings_s.items()))
        lines.append(f"total: {sum(self.timings_s.values()):.1f} s")
        return "\n".join(lines)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    log.info("stage %s …", stage)
    t0 = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - t0, 3)
    log.info("stage %s done in %.1f s", stage, timings[stage])


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """Fill in the embedded demo archive and default output folder when not given."""
    archive_uri = cfg.archive
    labels = cfg.labels
    if not archive_uri:
        from mmx.synth import generate_archive

        demo = DEFAULT_WORKDIR / "demo"
        generate_archive(str(demo), n=cfg.demo_trailers, seed=0)
        archive_uri = str(demo.resolve())
        labels = labels or str((demo / "labels.csv").resolve())
    if not labels:
        candidate = storage.join(archive_uri, "labels.csv")
        labels = candidate if storage.exists(candidate) else ""
    out = cfg.out or str((DEFAULT_WORKDIR / "out").resolve())
    return replace(cfg, archive=archive_uri, labels=labels, out=out)


def run(cfg: RunConfig, retrain: bool = False) -> RunSummary:
    """Run the whole job for ``cfg`` and publish a snapshot. Returns its summary.

    ``cfg.mode == "incremental"`` reuses the latest snapshot's model and sub-genre centroids
    and decodes only new or changed content; ``retrain`` (or no previous snapshot) trains anew.
    """
    from mmx.stages import session

    cfg = resolve_paths(cfg)
    # a bad labels file stops the run here, before Ray starts or any output is written
    labels = archive.read_labels(cfg.labels) if cfg.labels else {}
    started = session.connect(cfg)
    try:
        session.check_storage(cfg.archive, cfg.out)  # workers reach s3:// too, or stop here
        return _run(cfg, retrain, labels)
    finally:
        if started:
            import ray

            ray.shutdown()


def ingest_key(cfg: RunConfig) -> str:
    """Short hash of everything that changes a trailer's features (video, shots, experts):
    cached features are only reused under the same key."""
    import hashlib
    import json

    parts = {k: cfg.to_dict()[k] for k in ("video", "shots", "experts")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class _Previous:
    """The latest published snapshot, as an incremental run needs it."""

    name: str
    uri: str
    ledger: dict[str, str]  # trailer_id -> fingerprint
    model: policy.ModelInfo
    centroids: np.ndarray  # (k, D) float32

    @property
    def model_dir(self) -> str:
        return self.model.model_dir


def _previous(uri: str, latest: _LatestFiles) -> _Previous:
    """The latest published snapshot ``uri`` as an incremental run needs it."""
    sub = storage.read_table(storage.join(uri, "subgenres.parquet"))
    model = storage.read_json(storage.join(uri, "model.json"))
    return _Previous(
        name=uri.rstrip("/").rsplit("/", 1)[-1],
        uri=uri,
        ledger=latest.ledger,
        model=policy.ModelInfo.from_dict(model),
        centroids=np.asarray(sub["centroid"].to_pylist(), dtype=np.float32),
    )


@dataclass
class _LatestFiles:
    """What the latest snapshot knows of the archive's files."""

    ledger: dict[str, str] = field(default_factory=dict)  # trailer_id → fingerprint
    owners: dict[str, str] = field(default_factory=dict)  # trailer_id → uri holding the name
    # (uri, version tag) → fingerprint of the files whose version tag is known and whose bytes
    # could be read (an unreadable file's placeholder fingerprint is never reused)
    known: dict[tuple[str, str], str] = field(default_factory=dict)


def _latest_files(uri: str | None) -> _LatestFiles:
    """The files of snapshot ``uri`` (None: no snapshot yet), from four small columns of its
    trailers table (the embeddings are most of it)."""
    if uri is None:
        return _LatestFiles()
    path = storage.join(uri, "trailers.parquet")
    try:
        table = storage.read_table(path, ["trailer_id", "uri", "fingerprint", "source_version"])
    except pa.ArrowInvalid:  # a snapshot from before version tags: nothing to reuse
        table = storage.read_table(path, ["trailer_id", "uri", "fingerprint"])
    ids, uris, fps = (table[c].to_pylist() for c in ("trailer_id", "uri", "fingerprint"))
    versions = (table["source_version"].to_pylist() if "source_version" in table.column_names
                else [""] * table.num_rows)
    return _LatestFiles(
        ledger=dict(zip(ids, fps, strict=True)),
        owners=dict(zip(ids, uris, strict=True)),
        known={(u, v): fp for u, v, fp in zip(uris, versions, fps, strict=True)
               if v and fp and not fp.startswith("unreadable-")},
    )


def _changes(inputs: pa.Table, prev: _Previous | None) -> dict[str, list[str]]:
    """new / changed / unchanged / removed trailer ids against the previous ledger."""
    ledger = prev.ledger if prev else {}
    now = dict(zip(inputs["trailer_id"].to_pylist(), inputs["fingerprint"].to_pylist(),
                   strict=True))
    return {
        "new": sorted(t for t in now if t not in ledger),
        "changed": sorted(t for t in now if t in ledger and ledger[t] != now[t]),
        "unchanged": sorted(t for t in now if t in ledger and ledger[t] == now[t]),
        "removed": sorted(t for t in ledger if t not in now),
    }


def _run(cfg: RunConfig, retrain: bool, labels: dict[str, list[str]]) -> RunSummary:
    from mmx.stages import embed, index, ingest
    from mmx.train import ray_trainer

    timings: dict[str, float] = {}
    # A run killed before it published left its name here: reuse it, so its training
    # checkpoints under models/<name>/ are resumed rather than started again.
    layout = OutputLayout(cfg.out)
    pending = layout.pending
    name = storage.read_text(pending).strip() if storage.exists(pending) else ""
    if name and storage.exists(storage.join(layout.snapshot(name), storage.COMPLETE)):
        name = ""  # it did publish; start afresh
    name = name or storage.new_snapshot_name()
    storage.write_text(pending, name + "\n")
    snap = layout.snapshot(name)
    cache = layout.cache(ingest_key(cfg))
    vocab = archive.genre_vocabulary(labels)
    latest_uri = storage.latest(cfg.out)
    latest = _latest_files(latest_uri)
    prev = (_previous(latest_uri, latest)
            if cfg.mode == "incremental" and latest_uri is not None else None)
    incremental = prev is not None and not retrain

    with _timed(timings, "discover"):
        files = archive.list_inputs(cfg.archive, keep=latest.owners)
        if not files:
            raise FileNotFoundError(f"no input files under {cfg.archive}")
        reused = archive.reuse_fingerprints(files, {} if cfg.rehash else latest.known)
        inputs = ingest.fingerprint_inputs(files, cfg, reused).sort_by("trailer_id")
        excluded = {f.trailer_id: f.clash for f in files if f.clash}
        excluded |= {
            tid: f"duplicate of {original} (same bytes)"
            for tid, original in archive.find_duplicates(
                (t, fp) for t, fp in zip(inputs["trailer_id"].to_pylist(),
                                         inputs["fingerprint"].to_pylist(), strict=True)
                if t not in excluded
            ).items()
        }
        changes = _changes(inputs, prev)
        cached = {u.rsplit("/", 1)[-1].removesuffix(".parquet")
                  for u in storage.list_files(cache, ".parquet")}
        ids = inputs["trailer_id"].to_pylist()
        fps = inputs["fingerprint"].to_pylist()
        todo = [i for i, (t, f) in enumerate(zip(ids, fps, strict=True))
                if t not in excluded and f not in cached]
        fingerprints = {"hashed": len(files) - len(reused), "reused": len(reused)}
        log.info("%d input files (%d hashed, %d fingerprints reused): %d excluded by name or "
                 "duplicate bytes, %d to decode, %d already featurised", len(files),
                 fingerprints["hashed"], len(reused), len(excluded), len(todo),
                 len(ids) - len(excluded) - len(todo))
        n_labelled = sum(1 for t in ids if t not in excluded and labels.get(t))
        log.info("archive %s: %d of %d trailers labelled, %d genres", cfg.archive, n_labelled,
                 len(ids) - len(excluded), len(vocab))
        if not incremental and (why := ray_trainer.genre_training(n_labelled, len(vocab),
                                                                   cfg.train)):
            # decided before decoding: the run publishes everything that needs no labels
            log.warning("no genre model this run: %s; publishing a self-supervised embedding, "
                        "sub-genres, neighbours and the index (genre columns empty)", why)

    if incremental and not (changes["new"] or changes["changed"] or changes["removed"]):
        log.info("nothing changed since snapshot %s: nothing to publish", prev.name)
        summary = RunSummary(out=cfg.out, snapshot=prev.uri, counts={}, timings_s=timings,
                             published=False)
        _write_report(cfg, name, summary, changes, [], published=False,
                      fingerprints=fingerprints)
        fs, path = storage.filesystem(pending)
        fs.rm(path)
        return summary

    with _timed(timings, "ingest"):
        if todo:
            ingest.extract_features(inputs.take(todo), cfg, cache)
        features = _assemble_features(inputs, excluded, cache)
    ok = features.filter(pc.equal(features["status"], "ok"))
    if ok.num_rows == 0:
        raise RuntimeError("no trailer could be featurised: see the statuses above")

    decision = policy.decide_retrain(
        mode=cfg.mode, forced=retrain, model=prev.model if prev else None, n_ok=ok.num_rows,
        now=time.time(), every_days=cfg.train.retrain_every_days, growth=cfg.train.retrain_growth,
    )
    log.info("model: %s (%s)", "train anew" if decision.retrain else "reuse", decision.reason)
    incremental = incremental and not decision.retrain
    if incremental:
        model_info = prev.model
        model_dir = prev.model_dir
        fine, coarse = storage.join(model_dir, "fine"), storage.join(model_dir, "coarse")
        train_metrics = storage.read_json(storage.join(prev.uri, "metrics.json"))
        train_metrics = {k: train_metrics[k] for k in ("test", "val", "baseline", "silhouette",
                                                       "genre_model", "n_labelled")
                         if k in train_metrics}
    else:
        model_dir = layout.model_dir(name)
        features_uri = layout.features(name)
        storage.write_table(ok, features_uri)
        with _timed(timings, "train"):
            result = ray_trainer.train_model(features_uri, labels, vocab, cfg, model_dir)
        fine, coarse, train_metrics = result.fine, result.coarse, result.metrics
        model_info = policy.ModelInfo(model_dir, name, time.time(), ok.num_rows)

    # the genre vocabulary of the model's head, in score order (empty: no genre model)
    model_genres = list(storage.read_json(storage.join(fine, "meta.json")).get("genres", []))
    splits = ray_trainer.read_splits(model_info.model_dir)
    with _timed(timings, "embed"):
        emb = embed.embed_trailers(ok, fine, coarse if model_genres else None, cfg)

    with _timed(timings, "cluster"):
        centroids = prev.centroids if incremental else None
        sub = index.cluster_trailers(emb, labels, vocab, cfg, centroids=centroids, features=ok)

    with _timed(timings, "index"):
        manifest = index.build_index(
            emb["trailer_id"], emb["embedding"], cfg, storage.join(snap, "faiss"), model_dir
        )
        neigh = index.find_neighbours(storage.join(snap, "faiss"), emb, cfg)

    with _timed(timings, "publish"):
        versions = dict(zip(inputs["trailer_id"].to_pylist(), inputs["version"].to_pylist(),
                            strict=True))
        trailers = _trailers_table(features, emb, sub.labels, labels, model_genres, versions,
                                   splits, cfg)
        storage.write_table(trailers, storage.join(snap, "trailers.parquet"))
        storage.write_table(_scenes_table(ok), storage.join(snap, "scenes.parquet"))
        storage.write_table(sub.table, storage.join(snap, "subgenres.parquet"))
        storage.write_table(neigh, storage.join(snap, "neighbours.parquet"))
        storage.write_json(storage.join(snap, "genres.json"), model_genres)
        storage.write_json(storage.join(snap, "config.json"), cfg.to_dict())
        storage.write_json(storage.join(snap, "model.json"), model_info.to_dict())
    # metrics.json is the last file of the snapshot (it carries the publish timing too);
    # only then does LATEST move.
    metrics = {
        **train_metrics,
        "timings_s": timings,
        "counts": _counts(features),
        "n_vectors": manifest["ntotal"],
        "subgenres": sub.quality,
        "mode": "incremental" if incremental else "full",
        "retrain": decision.to_dict(),
    }
    storage.write_json(storage.join(snap, "metrics.json"), metrics)
    storage.publish(cfg.out, name)
    fs, path = storage.filesystem(pending)
    fs.rm(path)
    if cfg.keep_snapshots > 0:
        storage.prune(cfg.out, cfg.keep_snapshots)

    reasons = {
        r["trailer_id"]: f"{r['status']}: {r['reason']}"
        for r in features.select(["trailer_id", "status", "reason"]).to_pylist()
        if r["status"] != "ok"
    }
    summary = RunSummary(
        out=cfg.out,
        snapshot=snap,
        counts=_counts(features),
        timings_s=timings,
        metrics=metrics,
        reasons=reasons,
        model=("trained anew: " if decision.retrain else "") + decision.reason,
    )
    _write_report(cfg, name, summary, changes, [ids[i] for i in todo], published=True,
                  retrain=decision.to_dict(), fingerprints=fingerprints)
    return summary


def _assemble_features(inputs: pa.Table, excluded: dict[str, str], cache: str) -> pa.Table:
    """One features row per input: cached results under this run's names, plus the files
    ``excluded`` before decoding (trailer_id → reason: a name clash or duplicate bytes)."""
    rows = inputs.to_pylist()
    distinct = [r for r in rows if r["trailer_id"] not in excluded]
    from mmx.stages.ingest import cached_path

    cached = storage.read_tables([cached_path(cache, r["fingerprint"]) for r in distinct],
                                 schema.FEATURES)
    where = {f: i for i, f in enumerate(cached["fingerprint"].to_pylist())}
    cached = cached.take([where[r["fingerprint"]] for r in distinct])  # input order
    # the same bytes may have been featurised under another name or location
    cached = cached.set_column(0, "trailer_id", pa.array([r["trailer_id"] for r in distinct]))
    cached = cached.set_column(1, "uri", pa.array([r["uri"] for r in distinct]))
    extra = [
        {**{n: None for n in schema.FEATURES.names}, "trailer_id": r["trailer_id"],
         "uri": r["uri"], "fingerprint": r["fingerprint"], "size_bytes": r["size_bytes"],
         "status": "excluded", "reason": excluded[r["trailer_id"]]}
        for r in rows if r["trailer_id"] in excluded
    ]
    table = pa.concat_tables([cached, pa.Table.from_pylist(extra, schema=schema.FEATURES)])
    return table.sort_by("trailer_id")


def _write_report(
    cfg: RunConfig, name: str, summary: RunSummary, changes: dict[str, list[str]],
    decoded: list[str], published: bool, retrain: dict[str, Any] | None = None,
    fingerprints: dict[str, int] | None = None,
) -> None:
    """``<out>/runs/<name>.json``: what changed, what was decoded, counts, timings."""
    ingest_s = summary.timings_s.get("ingest", 0.0)
    report = {
        "run": name,
        "mode": cfg.mode,
        "published": published,
        "snapshot": summary.snapshot,
        "counts": summary.counts,
        "changes": {k: len(v) for k, v in changes.items()},
        # files whose bytes were read to hash them / whose fingerprint was reused because
        # their location, size and version tag were unchanged
        "fingerprints": fingerprints,
        "changed_ids": {k: v for k, v in changes.items() if k != "unchanged"},
        "decoded": decoded,
        "n_decoded": len(decoded),
        "timings_s": summary.timings_s,
        "throughput_trailers_per_s": round(len(decoded) / ingest_s, 3) if ingest_s else None,
        "reasons": summary.reasons,
        "retrain": retrain,  # {"retrain": bool, "reason": str}; None when nothing was published
    }
    storage.write_json(OutputLayout(cfg.out).run_report(name), report)


def _counts(features: pa.Table) -> dict[str, int]:
    values = features["status"].to_pylist()
    return {s: values.count(s) for s in schema.STATUSES}


def _trailers_table(
    features: pa.Table,
    emb: pa.Table,
    subgenres: np.ndarray,
    labels: dict[str, list[str]],
    vocab: list[str],
    versions: dict[str, str],
    splits: dict[str, str],
    cfg: RunConfig,
) -> pa.Table:
    """One row per input file: status, labels, predictions, sub-genre, embedding, split.

    ``vocab`` is the genre model's vocabulary (empty: no genre model, genre columns stay
    empty); ``versions`` maps trailer_id to the store's version tag of its file when
    fingerprinted; ``splits`` the split each trailer had when the model was trained (a labelled
    trailer the model never saw, e.g. new in an incremental run, is ``unseen``).
    """
    by_id = {tid: i for i, tid in enumerate(emb["trailer_id"].to_pylist())}
    scores = emb["genre_scores"].to_pylist()
    vectors = emb["embedding"].to_pylist()
    thr = cfg.train.threshold
    rows = []
    for r in features.select(
        ["trailer_id", "status", "reason", "n_clips", "duration_s", "fingerprint", "uri"]
    ).to_pylist():
        tid = r["trailer_id"]
        genres = labels.get(tid, [])
        i = by_id.get(tid)
        s = scores[i] if i is not None and vocab else None
        predicted = [g for g, v in zip(vocab, s, strict=True) if v >= thr] if s else []
        rows.append(
            {
                **r,
                "n_clips": r["n_clips"] or 0,
                "genres": genres,
                "predicted_genres": predicted,
                "suggested_genres": [g for g in predicted if g not in genres] if genres else [],
                "genre_scores": s,
                "subgenre": int(subgenres[i]) if i is not None else None,
                "embedding": vectors[i] if i is not None else None,
                "split": _split(genres, splits.get(tid)),
                "source_version": versions.get(tid, ""),
            }
        )
    table = pa.Table.from_pylist(rows, schema=schema.TRAILERS)
    return table.replace_schema_metadata(schema.with_vocab(schema.TRAILERS, vocab).metadata)


def _split(genres: list[str], trained_split: str | None) -> str:
    """A trailer's published split: ``unlabelled`` without labels, else its split when the
    model was trained, or ``unseen`` if the model never saw its labels."""
    if not genres:
        return "unlabelled"
    return trained_split if trained_split in ("train", "val", "test") else "unseen"


def _scenes_table(ok: pa.Table) -> pa.Table:
    """One row per kept shot of every ok trailer (vectorised over the list columns)."""
    n = np.asarray(ok["n_clips"].to_numpy(zero_copy_only=False), dtype=np.int64)
    starts = pc.list_flatten(ok["clip_start"]).to_numpy(zero_copy_only=False)
    ends = pc.list_flatten(ok["clip_end"]).to_numpy(zero_copy_only=False)
    fps = np.repeat(ok["fps"].to_numpy(zero_copy_only=False), n)
    ids = np.repeat(np.asarray(ok["trailer_id"].to_pylist(), dtype=object), n)
    # clip index within its trailer: position minus the trailer's first position
    offsets = np.repeat(np.cumsum(n) - n, n)
    clip_idx = np.arange(int(n.sum())) - offsets
    return pa.table(
        {
            "trailer_id": pa.array(ids, pa.string()),
            "clip_idx": pa.array(clip_idx, pa.int32()),
            "start_frame": pa.array(starts, pa.int64()),
            "end_frame": pa.array(ends, pa.int64()),
            "start_s": pa.array(starts / fps, pa.float64()),
            "end_s": pa.array(ends / fps, pa.float64()),
        },
        schema=schema.SCENES,
    )
