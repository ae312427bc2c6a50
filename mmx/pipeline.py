"""The whole job, in order: the only module that knows the stage order.

discover → fingerprint → ingest (decode+shots+experts) → features store → train (coarse →
contrastive) → embed → sub-genres → sharded index + neighbours → publish a snapshot, then move
LATEST. Past ingest the driver holds ids and small per-trailer metadata only: the stages read
and write Parquet folders under ``work/<run>/`` in Ray tasks (:mod:`mmx.stages`). The diff
against the latest snapshot is :mod:`mmx.changes`; the summary and run report :mod:`mmx.summary`.

One writer per output root: the run holds the lease ``<out>/work/LEASE`` (:mod:`mmx.lease`)
from before it reads ``work/PENDING`` until it ends, never writes into a snapshot sealed with
``_COMPLETE``, and moves LATEST by compare-and-swap against the LATEST it started from.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from mmx import (
    archive,
    changes,
    collect,
    killpoints,
    lease,
    metadata,
    policy,
    report,
    schema,
    storage,
    titles,
)
from mmx.config import DEFAULT_WORKDIR, TITLE_EXPERT_SETTINGS, RunConfig
from mmx.errors import is_transient_reason
from mmx.layout import OutputLayout
from mmx.summary import RunSummary, counts, write_report

log = logging.getLogger(__name__)

__all__ = ["RunSummary", "ingest_key", "resolve_paths", "run"]


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str,
           held: lease.Lease | None = None) -> Iterator[None]:
    """Time a stage; first make sure this run still holds its lease (``held``): a run whose
    lease was taken over (it stalled past the TTL) stops at the next stage, not at publish."""
    if held is not None:
        held.check()
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
    and decodes only new or changed content; ``retrain`` (or no previous snapshot) trains anew,
    and so does a run whose labels name genres the model does not know (:mod:`mmx.policy`).
    Labels edited since the latest snapshot are a change to publish on their own.

    Raises :class:`mmx.lease.LeaseHeld` (after waiting ``cfg.lease_wait_s``) when another run
    holds the output root, having written nothing; :class:`mmx.lease.LeaseLost` or
    :class:`mmx.storage.LatestMoved` when another run took the lease over or published
    meanwhile (this run publishes nothing); :class:`mmx.storage.SnapshotSealed` rather than
    write into a complete snapshot; :class:`mmx.policy.UnknownGenres` (before decoding,
    having written nothing) when the labels name genres the reused model does not know and
    ``train.retrain_on_new_genres`` is off.
    """
    from mmx.stages import session

    cfg = resolve_paths(cfg)
    # a bad labels file or metadata sidecar stops the run here, before Ray starts or any
    # output is written (LabelsError, MetadataError)
    labels = archive.read_labels(cfg.labels) if cfg.labels else {}
    sidecar = metadata.read_metadata(cfg.archive)
    titles.active_title_experts(cfg, sidecar)  # an unknown or unloadable title expert: here
    started = session.connect(cfg)
    try:
        session.check_storage(cfg.archive, cfg.out)  # workers reach s3:// too, or stop here
        # a provisional run id: _run renames the lease once it knows its snapshot name
        held = lease.acquire(cfg.out, storage.new_snapshot_name(), ttl_s=cfg.lease_ttl_s,
                             wait_s=cfg.lease_wait_s, poll_s=min(30.0, cfg.lease_ttl_s / 10))
        try:
            held.start_heartbeat()
            return _run(cfg, retrain, labels, held, sidecar)
        finally:
            _release(held)
    finally:
        if started:
            import ray

            ray.shutdown()


def _release(held: lease.Lease) -> None:
    """Release the lease if it is still ours (one taken over is left to its new holder). A
    store error here must not hide the run's outcome: the lease then lapses after its TTL."""
    try:
        held.release()
    except Exception as err:  # noqa: BLE001
        log.warning("could not release the lease %s (it lapses %g s after its last "
                    "heartbeat): %s", held.uri, held.info.ttl_s, err)


def ingest_key(cfg: RunConfig) -> str:
    """Short hash of everything that changes a trailer's features (video, shots, experts):
    cached features are only reused under the same key."""
    import json

    from mmx.experts.registry import plan

    parts = {k: cfg.to_dict()[k] for k in ("video", "shots", "experts")}
    # per-title experts are not computed from the video: adding one, or changing its settings
    # or weights, keeps the cached features (title vectors have their own key: mmx.titles)
    run = plan(cfg.experts.names)
    parts["experts"]["names"] = list(run.shot)
    for key in TITLE_EXPERT_SETTINGS:
        parts["experts"].pop(key, None)
    parts["experts"]["weights"] = {n: w for n, w in parts["experts"]["weights"].items()
                                   if n not in run.title}
    # bounds decide whether a file is indexed at all, not its features: changing them (or an
    # upgrade adding one) must not invalidate the cache
    for section, key in _BOUNDS:
        parts[section].pop(key, None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]



def oversize_reasons(files: list[archive.InputFile], max_bytes: int) -> dict[str, str]:
    """trailer_id → why, for the files larger than ``video.max_bytes`` (excluded unread)."""
    return {f.trailer_id: f"{f.size_bytes} bytes > video.max_bytes ({max_bytes})"
            for f in files if f.size_bytes > max_bytes and not f.clash}


_BOUNDS = (("video", "max_bytes"), ("video", "min_fps"), ("video", "max_fps"),
           ("video", "decode_timeout_s"), ("shots", "max_clips"))


def _model_genres(model: policy.ModelInfo) -> list[str]:
    """The genres the head of ``model`` scores, in score order: as its ``model.json`` records
    them, else (a model from before they were recorded) from its ``fine/meta.json``."""
    if model.genres is not None:
        return list(model.genres)
    meta = storage.read_json(storage.join(model.model_dir, "fine", "meta.json"))
    return list(meta.get("genres", []))


def _snapshot_name(layout: OutputLayout) -> str:
    """The name of this run's snapshot: the one ``work/PENDING`` names when that run never
    published (a run killed before it published left it there: its training checkpoints under
    ``models/<name>/`` are resumed rather than started again), else a new one."""
    pending = layout.pending
    name = storage.read_text(pending).strip() if storage.exists(pending) else ""
    if name and storage.snapshot_complete(layout.out, name):
        log.info("work/PENDING names %s, which is published: starting a new snapshot", name)
        name = ""  # it did publish (and a complete snapshot is never written again)
    return name or storage.new_snapshot_name()


def _run(cfg: RunConfig, retrain: bool, labels: dict[str, list[str]],
         held: lease.Lease, sidecar: metadata.MetadataTable | None = None) -> RunSummary:
    from mmx.stages import cache as features_cache
    from mmx.stages import embed, index, ingest, publish, store
    from mmx.stages import titles as titles_stage
    from mmx.train import ray_trainer

    timings: dict[str, float] = {}
    layout = OutputLayout(cfg.out)
    vocab = archive.genre_vocabulary(labels)
    digest = archive.labels_digest(labels)
    # what LATEST names as the run starts: it publishes only if LATEST still names that
    latest_uri = storage.latest(cfg.out)
    latest = changes.latest_files(latest_uri)
    prev = (changes.previous(latest_uri, latest)
            if cfg.mode == "incremental" and latest_uri is not None else None)
    incremental = prev is not None and not retrain
    # labels naming a genre the reused model does not score: train anew (decided with the
    # retrain policy below) or, when that is off, stop here, before anything is written
    unknown = policy.unknown_genres(vocab, _model_genres(prev.model)) if incremental else []
    if prev is not None and unknown:
        policy.check_genres(unknown, forced=retrain, allowed=cfg.train.retrain_on_new_genres,
                            model_run=prev.model.trained_run)
        log.warning("the labels name genres the model of run %s does not know: %s",
                    prev.model.trained_run, unknown)

    pending = layout.pending
    name = _snapshot_name(layout)
    snap = layout.snapshot(name)
    storage.assert_writable(snap)
    held.rename(name)  # the lease names this run now (LeaseLost if it is no longer ours)
    storage.write_text(pending, name + "\n")
    cache = layout.cache(ingest_key(cfg))

    with _timed(timings, "discover", held):
        files = archive.list_inputs(cfg.archive, keep=latest.owners)
        if not files:
            raise FileNotFoundError(f"no input files under {cfg.archive}")
        reused = archive.reuse_fingerprints(files, {} if cfg.rehash else latest.known)
        # larger than video.max_bytes: excluded without reading a byte (a placeholder
        # fingerprint keyed by location, never anyone's duplicate)
        oversize = oversize_reasons(files, cfg.video.max_bytes)
        reused |= {f.uri: "oversize-" + hashlib.sha256(f.uri.encode()).hexdigest()[:16]
                   for f in files if f.trailer_id in oversize}
        inputs = ingest.fingerprint_inputs(files, cfg, reused).sort_by("trailer_id")
        ids = inputs["trailer_id"].to_pylist()
        fps = inputs["fingerprint"].to_pylist()
        excluded = {f.trailer_id: f.clash for f in files if f.clash} | oversize
        excluded |= {
            tid: f"duplicate of {original} (same bytes)"
            for tid, original in archive.find_duplicates(
                ((t, fp) for t, fp in zip(ids, fps, strict=True) if t not in excluded),
                owners=latest.ok,
            ).items()
        }
        # files that could not be read to hash them: failed this run (transient), not decoded,
        # read again next run
        failed_now = {t: why for t, fp in zip(ids, fps, strict=True)
                      if t not in excluded and (why := ingest.unreadable_reason(fp))}
        diff = changes.changes(ids, fps, prev)
        # the metadata sidecar (None: none, the trailer-only run): per-title fingerprints of
        # what feeds the title experts; titles whose fingerprint differs from the one the
        # latest snapshot recorded are re-embedded (their video features stay cached)
        title_names = titles.active_title_experts(cfg, sidecar)
        if sidecar is not None:
            sidecar = sidecar.restrict(ids)
        prints = (metadata.fingerprints(sidecar, metadata.poster_versions(cfg.archive))
                  if title_names and sidecar is not None else {})
        re_meta = metadata.changed_titles(
            [t for t in ids if t not in excluded], metadata.read_fingerprints(latest_uri),
            prints)
        if re_meta and latest_uri is not None:
            log.info("metadata changed for %d titles since snapshot %s", len(re_meta),
                     latest_uri)
        # trailers whose labels differ from those the latest snapshot published
        relabel = changes.relabelled(ids, labels, digest, latest)
        if relabel:
            log.info("labels changed for %d trailers since snapshot %s", len(relabel),
                     latest_uri)
        cached = set(features_cache.locate(cache))
        if cfg.retry_failed:  # failed trailers' cached rows are dropped: decoded again
            wanted = [f for t, f in zip(ids, fps, strict=True) if t not in excluded]
            bad = [f for f, st in features_cache.statuses(cache, wanted).items()
                   if st == "failed"]
            if bad:
                features_cache.forget(cache, bad)
                cached -= set(bad)
            log.info("--retry-failed: %d failed trailers will be decoded again", len(bad))
        todo = [i for i, (t, f) in enumerate(zip(ids, fps, strict=True))
                if t not in excluded and t not in failed_now and f not in cached]
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

    labels_report = {"digest": digest, "previous_digest": latest.labels_digest or None,
                     "relabelled": len(relabel), "relabelled_ids": relabel,
                     "unknown_genres": unknown}
    # unchanged trailers that did not end ok last time and have no cached row (a transient
    # failure, or --retry-failed): tried again, so the night has something to publish
    not_ok_before = set(diff["unchanged"]) - latest.ok
    retry = [ids[i] for i in todo if ids[i] in not_ok_before]
    if retry:
        log.info("%d unchanged trailers are decoded again (transient failure last time, or "
                 "--retry-failed)", len(retry))
    if (incremental and not changes.anything(diff) and not relabel and not unknown
            and not retry and not failed_now and not re_meta):
        log.info("nothing changed since snapshot %s: nothing to publish", prev.name)
        summary = RunSummary(out=cfg.out, snapshot=prev.uri, counts={}, timings_s=timings,
                             published=False)
        write_report(cfg, name, summary, diff, [], published=False, fingerprints=fingerprints,
                     labels=labels_report)
        fs, path = storage.filesystem(pending)
        fs.rm(path)
        return summary

    decision = None
    if incremental:  # decided before the features store: a reused model keeps what it can
        # ok trailers counted before decoding: published ok ones still there, plus new ones
        n_ok = len(latest.ok - set(diff["removed"])) + len(diff["new"])
        decision = policy.decide_retrain(
            mode=cfg.mode, forced=retrain, model=prev.model, n_ok=n_ok, now=time.time(),
            every_days=cfg.train.retrain_every_days, growth=cfg.train.retrain_growth,
            unknown=unknown,
        )
        incremental = not decision.retrain
    # With the model reused, an unchanged trailer keeps its published row: its features are
    # not read again (the same bytes give the same features, status and embedding).
    # (only trailers published ok: a failed or excluded one is cheap to read again, and an
    # exclusion by name may not hold any more)
    # A title whose metadata changed is embedded again (from its cached video features).
    kept = (set() if not incremental or cfg.recompute else
            {t for t in diff["unchanged"] if t not in excluded and t in latest.ok}
            - set(re_meta))

    with _timed(timings, "ingest", held):
        if todo:
            decoded = ingest.extract_features(inputs.take(todo), cfg, cache, run_id=held.info.token)
            failed_now |= {t: r for t, r in zip(decoded["trailer_id"].to_pylist(),
                                                decoded["reason"].to_pylist(), strict=True)
                           if is_transient_reason(r)}
            if failed_now:
                log.warning("%d trailers failed for a transient reason (storage, memory): "
                            "not cached, decoded again by the next run", len(failed_now))
        # one object per many trailers, not per trailer (and a killed run's rows too)
        features_cache.compact(cache, cfg.resources.store_rows_per_file,
                               ingest.features_schema(cfg))

    distinct = inputs.filter(pc.invert(pc.is_in(
        inputs["trailer_id"],
        value_set=pa.array(sorted(set(excluded) | kept | set(failed_now)), pa.string()))))
    title_vectors = None
    if title_names:  # only with a sidecar: without one the run has no such stage
        with _timed(timings, "titles", held):
            wanted = distinct["trailer_id"].to_pylist()
            title_cache = titles_stage.cache_uri(cfg.out, titles.titles_key(cfg, title_names))
            titles_stage.describe(sidecar, wanted, prints, cfg, title_names, title_cache,
                                  storage.join(layout.work(name), "titles_todo.parquet"))
            title_vectors = titles_stage.lookup(title_cache, title_names, wanted, prints)

    with _timed(timings, "store", held):
        features_uri = layout.features(name)
        meta = store.assemble(distinct.select(["trailer_id", "uri", "fingerprint"]), cache,
                              features_uri, cfg, titles=title_vectors)
        meta = _trailer_meta(meta, inputs,
                             {t: ("excluded", r) for t, r in excluded.items()}
                             | {t: ("failed", r) for t, r in failed_now.items()},
                             latest_uri if kept else None, kept)
    n_ok = pc.sum(pc.equal(meta["status"], "ok")).as_py() or 0
    if n_ok == 0:
        raise RuntimeError("no trailer could be featurised: see the statuses above")

    if decision is None:
        decision = policy.decide_retrain(
            mode=cfg.mode, forced=retrain, model=prev.model if prev else None, n_ok=n_ok,
            now=time.time(), every_days=cfg.train.retrain_every_days,
            growth=cfg.train.retrain_growth,
        )
    log.info("model: %s (%s)", "train anew" if decision.retrain else "reuse", decision.reason)
    if incremental:
        model_dir = prev.model_dir
        fine, coarse = storage.join(model_dir, "fine"), storage.join(model_dir, "coarse")
        train_metrics = storage.read_json(storage.join(prev.uri, "metrics.json"))
        train_metrics = {k: train_metrics[k] for k in ("test", "val", "baseline", "silhouette",
                                                       "genre_model", "n_labelled")
                         if k in train_metrics}
    else:
        model_dir = layout.model_dir(name)
        with _timed(timings, "train", held):
            result = ray_trainer.train_model(features_uri, labels, vocab, cfg, model_dir)
        fine, coarse, train_metrics = result.fine, result.coarse, result.metrics

    # the genre vocabulary of the model's head, in score order (empty: no genre model): the
    # columns of genre_scores, and genres.json
    model_genres = list(storage.read_json(storage.join(fine, "meta.json")).get("genres", []))
    if incremental:  # (a model.json from before genres were recorded gains them)
        model_info = replace(prev.model, genres=tuple(model_genres))
    else:
        model_info = policy.ModelInfo(model_dir, name, time.time(), n_ok,
                                      genres=tuple(model_genres), labels_digest=digest)
    splits = ray_trainer.read_splits(model_info.model_dir)
    emb = layout.embeddings(name)
    ok_ids = set(meta.filter(pc.equal(meta["status"], "ok"))["trailer_id"].to_pylist())
    reuse = sorted(kept & latest.ok & ok_ids)  # published embedding still valid
    fresh = sorted(ok_ids - set(reuse))
    stale = sorted(latest.ok - set(reuse)) if kept else []  # vectors to take out of the index
    with _timed(timings, "embed", held):
        publish.reuse_embeddings(storage.join(latest_uri, "trailers.parquet") if reuse else "",
                                 reuse, cfg.index.n_shards, emb, cfg.resources.store_rows_per_file)
        if fresh:
            embed.embed_trailers(features_uri, fine, coarse if model_genres else None, cfg, emb,
                                 only=fresh if kept else None, append=bool(reuse))

    with _timed(timings, "cluster", held):
        previous_sub = (storage.read_table(storage.join(prev.uri, "subgenres.parquet"))
                        if incremental else None)
        sub = index.cluster_trailers(emb, labels, vocab, cfg, layout.assignments(name),
                                     previous=previous_sub, before=latest_uri)

    faiss_uri = storage.join(snap, "faiss")
    with _timed(timings, "index", held):
        if kept:
            manifest = index.update_index(storage.join(prev.uri, "faiss"), emb, stale, fresh,
                                          cfg, faiss_uri, model_dir)
        else:
            manifest = index.build_index(emb, cfg, faiss_uri, model_dir)
        index_quality = index.measure_index(faiss_uri, emb, cfg)
        log.info("index: recall@10 %.3f (%s, nprobe %s; %s reaches %.2f)",
                 index_quality["recall_at_10"], index_quality["kind"], index_quality["nprobe"],
                 index_quality["nprobe_for_target"], cfg.index.recall_target)
        neighbours = index.find_neighbours(
            faiss_uri, emb, cfg,
            previous=storage.join(prev.uri, "neighbours.parquet") if kept else None,
            fresh=fresh, stale=stale)
        n_pairs = publish.write_neighbours(neighbours, storage.join(snap, "neighbours.parquet"),
                                           emb)
        log.info("neighbours: %d pairs", n_pairs)

    with _timed(timings, "publish", held):
        table_meta = _publish_meta(meta, labels, inputs, splits)
        killpoints.reached("publish:trailers")
        publish.write_trailers(table_meta, emb, layout.assignments(name), model_genres,
                               cfg.train.threshold, storage.join(snap, "trailers.parquet"))
        killpoints.reached("publish:scenes")
        publish.write_scenes(features_uri, storage.join(snap, "scenes.parquet"),
                             previous=storage.join(prev.uri, "scenes.parquet") if kept else None,
                             keep=reuse)
        publish.write_thumbnails(
            features_uri, storage.join(snap, report.THUMBNAILS_FILE),
            previous=storage.join(prev.uri, report.THUMBNAILS_FILE) if kept else None,
            keep=reuse)
        storage.write_table(sub.table, storage.join(snap, "subgenres.parquet"))
        storage.write_json(storage.join(snap, "genres.json"), model_genres)
        storage.write_json(storage.join(snap, changes.LABELS_FILE), archive.labels_record(labels))
        if prints:  # the metadata the embeddings were made with (the next run's diff)
            metadata.write_fingerprints(snap, prints)
        storage.write_json(storage.join(snap, "config.json"), cfg.to_dict())
        storage.write_json(storage.join(snap, "model.json"), model_info.to_dict())
    # metrics.json is the last file of the snapshot (it carries the publish timing too);
    # only then does LATEST move.
    status_counts = counts(meta["status"])
    metrics = {
        **train_metrics,
        "timings_s": timings,
        "counts": status_counts,
        "n_vectors": manifest["ntotal"],
        "subgenres": sub.quality,
        "index": index_quality,
        "mode": "incremental" if incremental else "full",
        "retrain": decision.to_dict(),
        "recomputed": {"embedded": len(fresh), "kept": len(reuse), "removed": len(stale)},
        "labels": {"digest": digest, "relabelled": len(relabel)},
    }
    if sidecar is not None:
        metrics["metadata"] = {**metadata.record(sidecar, prints), "experts": list(title_names),
                               "changed_titles": len(re_meta)}
    killpoints.reached("publish:metrics")
    storage.write_json(storage.join(snap, "metrics.json"), metrics)
    # the HTML report, before _COMPLETE; a failure to render is logged, never fails the run
    report.write_snapshot_report(
        snap, coarse=publish.coarse_sample(emb, report.MAX_MAP_POINTS),
        coarse_missing="this run computed no coarse embedding (no genre model, or every "
                       "embedding was reused from the previous snapshot)")
    storage.assert_writable(snap)  # sealed meanwhile by someone else: never publish over it
    held.check()  # a run whose lease was taken over must not publish
    storage.publish(cfg.out, name, expected=latest_uri)
    killpoints.reached("publish:latest")
    fs, path = storage.filesystem(pending)
    fs.rm(path)
    if cfg.keep_snapshots > 0:
        storage.prune(cfg.out, cfg.keep_snapshots, grace_s=cfg.snapshot_grace_days * 86400)
    _clean_work(layout, name, trained=not incremental)
    try:  # what no retained snapshot references any more (mmx.collect)
        collect.collect(cfg.out, name, ingest_key(cfg), fps,
                        titles_key=titles.titles_key(cfg, title_names) if title_names else "")
    except Exception as err:  # noqa: BLE001 - never fails a published run; the next collects
        log.warning("garbage collection failed (the next run tries again): %s", err)

    bad = meta.filter(pc.not_equal(meta["status"], "ok"))
    reasons = {t: f"{s}: {r}" for t, s, r in zip(bad["trailer_id"].to_pylist(),
                                                 bad["status"].to_pylist(),
                                                 bad["reason"].to_pylist(), strict=True)}
    summary = RunSummary(
        out=cfg.out,
        snapshot=snap,
        counts=status_counts,
        timings_s=timings,
        metrics=metrics,
        reasons=reasons,
        model=("trained anew: " if decision.retrain else "") + decision.reason,
        relabelled=len(relabel),
    )
    write_report(cfg, name, summary, diff, [ids[i] for i in todo], published=True,
                 retrain=decision.to_dict(), fingerprints=fingerprints, labels=labels_report)
    return summary


# the columns of the features store's metadata that the trailers table publishes
_META = ["trailer_id", "uri", "fingerprint", "size_bytes", "status", "reason", "n_clips",
         "duration_s"]


def _trailer_meta(stored: pa.Table, inputs: pa.Table, decided: dict[str, tuple[str, str]],
                  latest_uri: str | None, kept: set[str]) -> pa.Table:
    """Status and small metadata of every input: from the features store; for the files
    ``decided`` without a cached row (id → (status, reason): excluded before decoding by a
    name clash or duplicate bytes, or failed for a transient reason) from the inputs; and for
    the ``kept`` unchanged trailers from the latest snapshot's trailers table."""
    parts = [stored.select(_META)]
    if decided:
        rows = inputs.filter(pc.is_in(inputs["trailer_id"],
                                      value_set=pa.array(sorted(decided), pa.string())))
        n = rows.num_rows
        ids_ = rows["trailer_id"].to_pylist()
        parts.append(pa.table({
            "trailer_id": rows["trailer_id"], "uri": rows["uri"],
            "fingerprint": rows["fingerprint"], "size_bytes": rows["size_bytes"],
            "status": pa.array([decided[t][0] for t in ids_], pa.string()),
            "reason": pa.array([decided[t][1] for t in ids_], pa.string()),
            "n_clips": pa.nulls(n, pa.int32()), "duration_s": pa.nulls(n, pa.float64()),
        }))
    if kept:
        old = storage.read_table(storage.join(latest_uri, "trailers.parquet"),
                                 ["trailer_id", "status", "reason", "n_clips", "duration_s"])
        old = old.filter(pc.is_in(old["trailer_id"], value_set=pa.array(sorted(kept),
                                                                          pa.string())))
        now = inputs.filter(pc.is_in(inputs["trailer_id"], value_set=old["trailer_id"]))
        at = pc.index_in(now["trailer_id"], value_set=old["trailer_id"])
        parts.append(pa.table({
            "trailer_id": now["trailer_id"], "uri": now["uri"],
            "fingerprint": now["fingerprint"], "size_bytes": now["size_bytes"],
            **{c: old[c].take(at) for c in ("status", "reason", "n_clips", "duration_s")},
        }))
    types = pa.schema([(c, schema.FEATURES.field(c).type) for c in _META])
    return pa.concat_tables([p.select(_META).cast(types) for p in parts]).sort_by("trailer_id")


def _publish_meta(meta: pa.Table, labels: dict[str, list[str]], inputs: pa.Table,
                  splits: dict[str, str]) -> pa.Table:
    """The trailers table's per-trailer metadata (mmx.stages.publish.META): labels, split and
    the store's version tag of each file beside its status."""
    ids = meta["trailer_id"].to_pylist()
    genres = [labels.get(t, []) for t in ids]
    versions = dict(zip(inputs["trailer_id"].to_pylist(), inputs["version"].to_pylist(),
                        strict=True))
    return meta.append_column("genres", pa.array(genres, pa.list_(pa.string()))) \
        .append_column("split", pa.array([_split(g, splits.get(t))
                                          for t, g in zip(ids, genres, strict=True)]))\
        .append_column("source_version", pa.array([versions.get(t, "") for t in ids],
                                                  pa.string())) \
        .set_column(meta.schema.get_field_index("n_clips"), "n_clips",
                    pc.fill_null(meta["n_clips"], 0).cast(pa.int32()))


def _split(genres: list[str], trained_split: str | None) -> str:
    """A trailer's published split: ``unlabelled`` without labels, else its split when the
    model was trained, or ``unseen`` if the model never saw its labels."""
    if not genres:
        return "unlabelled"
    return trained_split if trained_split in ("train", "val", "test") else "unseen"


def _clean_work(layout: OutputLayout, name: str, trained: bool) -> None:
    """After publishing: the run's embeddings and sub-genre assignments are in the snapshot
    now; a run that reused the model drops its (partial) features store too. The features
    store a model was trained on stays (``mmx ablate`` reads it)."""
    doomed = [layout.embeddings(name), layout.assignments(name)]
    if not trained:
        doomed.append(layout.features(name))
    for uri in doomed:
        fs, path = storage.filesystem(uri)
        if fs.exists(path):
            fs.rm(path, recursive=True)
