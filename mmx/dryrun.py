"""``--dry-run``: what a run would do, found without doing it.

Resolves the configuration, probes both stores from this process (the archive is listed, the
output root read; nothing is written, no lease taken, no Ray started, no file hashed), lists
the inputs and says which would be decoded, which are already featurised, which are excluded
before decoding and whether the model would be trained anew. Files whose version tag (S3
ETag, local mtime) changed since the latest snapshot cannot be classified without reading
them: they are counted as ``to_hash`` and, unless their bytes turn out unchanged, decoded.
"""

from __future__ import annotations

import time
from typing import Any

from mmx import archive, changes, lease, metadata, policy, storage, titles
from mmx.config import RunConfig
from mmx.layout import OutputLayout


def plan(cfg: RunConfig, retrain: bool = False) -> dict[str, Any]:
    """The dry run's findings, JSON-safe. ``cfg`` has its paths resolved already.

    Raises what a real run would raise before writing anything: an unreadable labels file
    (:class:`mmx.archive.LabelsError`) or metadata sidecar (:class:`mmx.metadata.MetadataError`),
    an archive that cannot be listed or is empty
    (:class:`FileNotFoundError`), store errors (credentials, endpoint) as they come.
    """
    from mmx.pipeline import ingest_key, oversize_reasons  # one rule for both
    from mmx.stages import cache as features_cache

    labels = archive.read_labels(cfg.labels) if cfg.labels else {}
    sidecar = metadata.read_metadata(cfg.archive)
    title_names = titles.active_title_experts(cfg, sidecar)
    t0 = time.perf_counter()
    files = _listed(cfg.archive)
    storage.exists(cfg.out)  # the output root answers (credentials, endpoint, bucket)
    probe_s = time.perf_counter() - t0
    latest_uri = storage.latest(cfg.out)
    latest = changes.latest_files(latest_uri)
    holder = lease.read(cfg.out)

    reused = archive.reuse_fingerprints(files, {} if cfg.rehash else latest.known)
    oversize = oversize_reasons(files, cfg.video.max_bytes)
    excluded = {f.trailer_id: f.clash for f in files if f.clash} | oversize
    known = {f.trailer_id: reused[f.uri] for f in files
             if f.uri in reused and f.trailer_id not in excluded}
    excluded |= {t: f"duplicate of {o} (same bytes)" for t, o in archive.find_duplicates(
        known.items(), owners=latest.ok).items()}
    cached = set(features_cache.locate(OutputLayout(cfg.out).cache(ingest_key(cfg))))
    to_hash = sorted(f.trailer_id for f in files
                     if f.trailer_id not in excluded and f.uri not in reused)
    to_decode = sorted(t for t, fp in known.items() if t not in excluded and fp not in cached)
    featurised = sorted(t for t, fp in known.items() if t not in excluded and fp in cached)
    removed = sorted(set(latest.ledger) - {f.trailer_id for f in files})
    ids = [f.trailer_id for f in files]
    if sidecar is not None:
        sidecar = sidecar.restrict(ids)
    prints = (metadata.fingerprints(sidecar, metadata.poster_versions(cfg.archive))
              if title_names and sidecar is not None else {})
    re_meta = metadata.changed_titles([t for t in ids if t not in excluded],
                                      metadata.read_fingerprints(latest_uri), prints)

    vocab = archive.genre_vocabulary(labels)
    prev = (changes.previous(latest_uri, latest)
            if cfg.mode == "incremental" and latest_uri is not None else None)
    model: dict[str, Any] = {"train": True, "reason": "full run" if prev is None or
                             cfg.mode != "incremental" else ""}
    if prev is not None:
        genres = prev.model.genres or []
        unknown = policy.unknown_genres(vocab, genres) if prev.model.genres is not None else []
        n_ok = len(latest.ok - set(removed)) + len(to_hash)
        decision = policy.decide_retrain(
            mode=cfg.mode, forced=retrain, model=prev.model, n_ok=n_ok, now=time.time(),
            every_days=cfg.train.retrain_every_days, growth=cfg.train.retrain_growth,
            unknown=unknown,
        )
        model = {"train": decision.retrain, "reason": decision.reason,
                 "previous_model_run": prev.model.trained_run}
    return {
        "config": {"archive": cfg.archive, "out": cfg.out, "labels": cfg.labels or None,
                   "mode": cfg.mode, "profile": cfg.profile, "ingest_key": ingest_key(cfg)},
        "storage": {"archive": storage.store_kind(cfg.archive),
                    "out": storage.store_kind(cfg.out), "probe_s": round(probe_s, 3),
                    "note": "probed from this process only; Ray workers are probed by the run"},
        "latest": latest_uri,
        "lease": None if holder is None else {
            "run": holder.run, "host": holder.host, "expired": holder.expired(),
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.expires))},
        "inputs": len(files),
        "labelled": sum(1 for f in files if labels.get(f.trailer_id)),
        "genres": vocab,
        "excluded": excluded,
        "to_hash": to_hash,
        "to_decode": to_decode,
        "featurised": featurised,
        "removed": removed,
        "model": model,
        "metadata": {**metadata.record(sidecar, prints), "experts": list(title_names),
                     "changed_titles": re_meta},
    }


def _listed(uri: str) -> list[archive.InputFile]:
    files = archive.list_inputs(uri)
    if not files:
        raise FileNotFoundError(f"no input files under {uri}")
    return files


def render(found: dict[str, Any], limit: int = 10) -> str:
    """The plan as a few readable lines (ids listed up to ``limit`` per group)."""

    def ids(values: list[str]) -> str:
        more = f" … and {len(values) - limit} more" if len(values) > limit else ""
        return ", ".join(values[:limit]) + more

    c, s = found["config"], found["storage"]
    lines = [
        "dry run: nothing written, no lease taken, no file decoded or hashed",
        (f"archive  {c['archive']} ({s['archive']}): {found['inputs']} input files, "
         f"{found['labelled']} labelled, {len(found['genres'])} genres"),
        f"out      {c['out']} ({s['out']}); LATEST {found['latest'] or '(none yet)'}",
        f"mode     {c['mode']}, profile {c['profile']}, features key {c['ingest_key']}",
    ]
    if found["lease"]:
        held = found["lease"]
        state = "expired" if held["expired"] else f"held until {held['expires']}"
        lines.append(f"lease    run {held['run']} on {held['host']}: {state}")
    groups = (("to decode (content not featurised yet)", found["to_decode"]),
              ("to hash (new, or version tag changed; decoded unless the bytes are unchanged)",
               found["to_hash"]),
              ("already featurised (cache)", found["featurised"]),
              ("gone from the archive since LATEST", found["removed"]))
    for what, values in groups:
        lines.append(f"{len(values):>6}  {what}" + (f": {ids(values)}" if values else ""))
    excluded = sorted(found["excluded"].items())
    lines.append(f"{len(excluded):>6}  excluded before decoding")
    lines += [f"        {t}: {why}" for t, why in excluded[:limit]]
    meta = found["metadata"]
    if meta["sidecar"]:
        lines.append(f"metadata {meta['sidecar']}: {meta['n_titles']} titles, experts "
                     f"{', '.join(meta['experts']) or '(none)'}; "
                     f"{len(meta['changed_titles'])} titles new or edited since LATEST")
    model = found["model"]
    lines.append("model    " + ("train anew" if model["train"] else "reuse") +
                 (f" ({model['reason']})" if model["reason"] else ""))
    return "\n".join(lines)
