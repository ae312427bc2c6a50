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

from mmx import archive, schema, storage
from mmx.config import DEFAULT_WORKDIR, RunConfig

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

    def render(self) -> str:
        """A one-screen, human-readable summary."""
        lines = [f"snapshot: {self.snapshot}"]
        total = sum(self.counts.values())
        counts = ", ".join(f"{k} {self.counts.get(k, 0)}" for k in schema.STATUSES)
        lines.append(f"trailers: {total} ({counts})")
        for tid, reason in sorted(self.reasons.items())[:8]:
            lines.append(f"  {tid}: {reason}")
        if len(self.reasons) > 8:
            lines.append(f"  … {len(self.reasons) - 8} more (see the trailers table)")
        test = self.metrics.get("test", {})
        if test:
            lines.append(
                "test split: AU(PRC) weighted {:.3f} (baseline {:.3f}), F1w {:.3f}, "
                "Pw {:.3f}, Rw {:.3f} on {} trailers".format(
                    test.get("au_prc_weighted", float("nan")),
                    self.metrics.get("baseline", {}).get("au_prc_weighted", float("nan")),
                    test.get("f1_weighted", float("nan")),
                    test.get("precision_weighted", float("nan")),
                    test.get("recall_weighted", float("nan")),
                    test.get("n", 0),
                )
            )
        sil = self.metrics.get("silhouette") or []
        if sil:
            lines.append(f"genre silhouette: coarse {sil[0]:.3f} → fine {sil[-1]:.3f}")
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


def run(cfg: RunConfig) -> RunSummary:
    """Run the whole job for ``cfg`` and publish a snapshot. Returns its summary."""
    from mmx.stages import session

    cfg = resolve_paths(cfg)
    if cfg.mode != "full":
        raise NotImplementedError("--mode incremental is not implemented yet; use --mode full")
    started = session.connect(cfg)
    try:
        return _run(cfg)
    finally:
        if started:
            import ray

            ray.shutdown()


def _run(cfg: RunConfig) -> RunSummary:
    from mmx.stages import embed, index, ingest
    from mmx.train import ray_trainer

    timings: dict[str, float] = {}
    name = storage.new_snapshot_name()
    snap = storage.snapshot_uri(cfg.out, name)
    work = storage.join(cfg.out, "work", name)
    labels = archive.read_labels(cfg.labels) if cfg.labels else {}
    vocab = archive.genre_vocabulary(labels)
    log.info("archive %s: %d labelled trailers, %d genres", cfg.archive, len(labels), len(vocab))

    with _timed(timings, "discover"):
        files = archive.list_inputs(cfg.archive)
        if not files:
            raise FileNotFoundError(f"no input files under {cfg.archive}")
        inputs = ingest.fingerprint_inputs(files, cfg)
        dupes = archive.find_duplicates(
            zip(inputs["trailer_id"].to_pylist(), inputs["fingerprint"].to_pylist(), strict=True)
        )
        ids = inputs["trailer_id"].to_pylist()
        inputs = inputs.append_column("duplicate_of", pa.array([dupes.get(t, "") for t in ids]))
        log.info("%d input files (%d duplicates)", len(files), len(dupes))

    features_uri = storage.join(work, "features")
    with _timed(timings, "ingest"):
        ingest.extract_features(inputs, cfg, features_uri)
    features = storage.read_table(features_uri)

    ok = features.filter(pc.equal(features["status"], "ok"))
    model_dir = storage.join(cfg.out, "models", name)
    with _timed(timings, "train"):
        result = ray_trainer.train_model(features_uri, labels, vocab, cfg, model_dir)

    with _timed(timings, "embed"):
        emb = embed.embed_trailers(ok, result.fine, result.coarse, cfg)

    with _timed(timings, "cluster"):
        sub = index.cluster_trailers(emb, labels, vocab, cfg)

    with _timed(timings, "index"):
        manifest = index.build_index(
            emb["trailer_id"], emb["embedding"], cfg, storage.join(snap, "faiss"), name
        )
        neigh = index.find_neighbours(storage.join(snap, "faiss"), emb, cfg)

    with _timed(timings, "publish"):
        trailers = _trailers_table(features, emb, sub.labels, labels, vocab, cfg)
        storage.write_table(trailers, storage.join(snap, "trailers.parquet"))
        storage.write_table(_scenes_table(ok), storage.join(snap, "scenes.parquet"))
        storage.write_table(sub.table, storage.join(snap, "subgenres.parquet"))
        storage.write_table(neigh, storage.join(snap, "neighbours.parquet"))
        storage.write_json(storage.join(snap, "genres.json"), vocab)
        storage.write_json(storage.join(snap, "config.json"), cfg.to_dict())
    # metrics.json is the last file of the snapshot (it carries the publish timing too);
    # only then does LATEST move.
    metrics = {
        **result.metrics,
        "timings_s": timings,
        "counts": _counts(features),
        "n_vectors": manifest["ntotal"],
    }
    storage.write_json(storage.join(snap, "metrics.json"), metrics)
    storage.publish(cfg.out, name)

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
    )
    storage.write_json(storage.join(cfg.out, "runs", f"{name}.json"), summary.__dict__)
    return summary


def _counts(features: pa.Table) -> dict[str, int]:
    values = features["status"].to_pylist()
    return {s: values.count(s) for s in schema.STATUSES}


def _trailers_table(
    features: pa.Table,
    emb: pa.Table,
    subgenres: np.ndarray,
    labels: dict[str, list[str]],
    vocab: list[str],
    cfg: RunConfig,
) -> pa.Table:
    """One row per input file: status, labels, predictions, sub-genre, embedding, split."""
    from mmx.train.data import split_of

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
        s = scores[i] if i is not None else None
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
                "split": split_of(tid) if genres else "unlabelled",
            }
        )
    table = pa.Table.from_pylist(rows, schema=schema.TRAILERS)
    return table.replace_schema_metadata(schema.with_vocab(schema.TRAILERS, vocab).metadata)


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
