"""Garbage collection of an output root: what no retained snapshot needs any more.

Snapshots are pruned by age (:func:`mmx.storage.prune`); what they pointed at stays unless
collected here, after a run has published:

- ``models/<name>/`` that no complete snapshot's ``model.json`` names (a model a retrain
  replaced once its last snapshot was pruned, or one of a run that never published);
- ``work/<name>/`` of runs that are neither in progress (``work/PENDING``), nor this run, nor
  the training run of a complete snapshot (its features store stays for ``mmx ablate``);
- ``cache/features-<key>/`` of feature settings no complete snapshot was made with, and
  ``cache/titles-<key>/`` of title-expert settings none was made with (a snapshot whose
  settings list title experts keeps their cache, sidecar or not);
- in the current cache, the rows of contents no complete snapshot and no current input has
  (files deleted from the archive, or replaced), and every attempt-ledger marker (markers of
  finished runs count for nothing: :class:`mmx.stages.ingest.AttemptLedger`).

Only what is unreferenced is deleted, and the lease guarantees no other run is writing. A
failure here is logged and never fails the run (the next run collects again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mmx import storage
from mmx.layout import OutputLayout

log = logging.getLogger(__name__)


def _dirs(uri: str) -> list[str]:
    """Names of the folders directly under ``uri``."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1]
                  for e in fs.ls(path, detail=True) if e["type"] == "directory")


def _rm(uri: str) -> None:
    fs, path = storage.filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def collect(out: str, run: str, cache_key: str, inputs: Iterable[str],
            titles_key: str = "") -> dict[str, int]:
    """Delete what no complete snapshot of ``out`` references (module doc). ``run`` is the run
    that just published, ``cache_key`` its cache key, ``inputs`` the content fingerprints
    of its inputs and ``titles_key`` its title-vector cache key ("" without title experts).
    Returns how many models, work folders, caches and cache rows went."""
    from mmx.config import config_from_dict
    from mmx.experts.registry import plan
    from mmx.pipeline import ingest_key
    from mmx.stages import cache as features_cache
    from mmx.titles import titles_key as key_of_titles

    layout = OutputLayout(out)
    snapshots = storage.list_complete_snapshots(out)
    pending = (storage.read_text(layout.pending).strip()
               if storage.exists(layout.pending) else "")
    models: set[str] = set()
    keys: set[str] | None = {cache_key}
    title_keys: set[str] = {titles_key} - {""}
    fingerprints = set(inputs)
    for name in snapshots:
        snap = layout.snapshot(name)
        model = storage.read_json(storage.join(snap, "model.json"))
        models.add(str(model["model_dir"]).rstrip("/").rsplit("/", 1)[-1])
        try:
            settings = config_from_dict(storage.read_json(storage.join(snap, "config.json")))
            if keys is not None:
                keys.add(ingest_key(settings))
                names = plan(settings.experts.names).title
                if names:
                    title_keys.add(key_of_titles(settings, names))
        except Exception as err:  # noqa: BLE001 - a config of another version: keep all caches
            log.info("collect: cannot tell the cache key of snapshot %s (%s): caches kept",
                     name, err)
            keys = None
        table = storage.read_table(storage.join(snap, "trailers.parquet"), ["fingerprint"])
        fingerprints.update(table["fingerprint"].to_pylist())
    alive = {run, pending} - {""}
    done = {"models": 0, "work": 0, "caches": 0, "cache_rows": 0}
    for name in _dirs(storage.join(out, "models")):
        if name not in models | alive:
            _rm(layout.model_dir(name))
            done["models"] += 1
    for name in _dirs(storage.join(out, "work")):
        if name not in models | alive:
            _rm(layout.work(name))
            done["work"] += 1
    for name in _dirs(storage.join(out, "cache")) if keys is not None else []:
        kind, _, key = name.partition("-")
        if kind == "features" and key not in keys or kind == "titles" and key not in title_keys:
            _rm(storage.join(out, "cache", name))
            done["caches"] += 1
    cache = layout.cache(cache_key)
    orphans = sorted(set(features_cache.locate(cache)) - fingerprints)
    if orphans:
        done["cache_rows"] = features_cache.forget(cache, orphans)
    _rm(storage.join(cache, "_attempts"))
    if any(done.values()):
        log.info("collected: %d models, %d work folders, %d caches of other settings, %d cache "
                 "rows of contents no snapshot has", done["models"], done["work"],
                 done["caches"], done["cache_rows"])
    return done
