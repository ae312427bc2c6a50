"""Ray adapter for the per-title experts (plot text, poster, metadata) over the sidecar.

``read_parquet(the titles to describe) → map_batches(TitleExpertsActor pool) → one cache row per
title``: each actor builds the run's title experts once (the MiniLM text model, the poster CNN)
and describes a batch of titles at a time, batched across titles (:func:`mmx.titles.
describe_titles`). Rows are cached by the title's *metadata* fingerprint under
``cache/titles-<key>/`` (:func:`mmx.titles.titles_key`; the layout and compaction of
:mod:`mmx.stages.cache`), so only titles whose metadata is new or edited are described again,
and none of them decodes its trailer. The features store picks the cached vectors up when it is
assembled (:func:`mmx.stages.store.assemble`, ``titles=``).
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc
import ray

from mmx import metadata, storage, titles
from mmx.config import RunConfig
from mmx.stages import cache as title_cache
from mmx.stages import dataset

log = logging.getLogger(__name__)


def cache_uri(out: str, key: str) -> str:
    """The title vectors' cache of settings ``key`` (beside the features caches)."""
    return storage.join(out, "cache", f"titles-{key}")


class TitleExpertsActor:
    """The run's title experts, built once per actor."""

    def __init__(self, cfg: RunConfig, names: tuple[str, ...], archive_uri: str) -> None:
        import inspect

        import torch

        from mmx.experts.registry import expert_class, get_expert

        torch.set_num_threads(max(1, int(cfg.resources.title_cpus)))
        gpu = cfg.resources.title_gpus > 0 and torch.cuda.is_available()

        def device(name: str) -> dict[str, str]:  # the CNN and the text model take a device
            takes = "device" in inspect.signature(expert_class(name).__init__).parameters
            return {"device": "cuda"} if gpu and takes else {}

        self.experts = {n: get_expert(n, cfg.experts, **device(n)) for n in names}
        self.archive = archive_uri

    def __call__(self, batch: pa.Table) -> pa.Table:
        return titles.describe_titles(self.experts, batch, self.archive)


def _write_rows(batch: pa.Table, cache: str) -> pa.Table:
    """Each title's row to its own loose cache file (atomic), keyed by metadata fingerprint."""
    for i, fingerprint in enumerate(batch["fingerprint"].to_pylist()):
        storage.write_table(batch.slice(i, 1), title_cache.cached_path(cache, fingerprint))
    return batch.select(["fingerprint"])


def describe(sidecar: metadata.MetadataTable, ids: list[str], prints: dict[str, str],
             cfg: RunConfig, names: tuple[str, ...], cache: str, todo_uri: str) -> int:
    """Describe the titles of ``ids`` whose metadata fingerprint (``prints``) is not cached in
    ``cache`` yet; ``todo_uri`` is a scratch file for their sidecar rows. Returns how many
    distinct fingerprints were described."""
    have = set(title_cache.locate(cache))
    todo: dict[str, str] = {}  # fingerprint → one title with it (same fields: same vectors)
    for t in ids:
        fp = prints.get(t)
        if fp is not None and fp not in have:
            todo.setdefault(fp, t)
    if not todo:
        return 0
    order = sorted(todo)
    rows = sidecar.select([todo[fp] for fp in order]).drop_columns(["has_metadata"])
    rows = rows.append_column("fingerprint", pa.array(order, pa.string()))
    storage.write_table(rows, todo_uri)
    res = cfg.resources
    ds = dataset.read(todo_uri).map_batches(
        TitleExpertsActor,
        batch_size=res.title_batch,
        batch_format="pyarrow",
        fn_constructor_kwargs={"cfg": cfg, "names": names, "archive_uri": sidecar.archive},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=res.title_pool),
        num_cpus=res.title_cpus,
        num_gpus=res.title_gpus,
    ).map_batches(_write_rows, batch_size=None, batch_format="pyarrow",
                  fn_kwargs={"cache": cache}, num_cpus=0)
    n = sum(part.num_rows for part in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    title_cache.compact(cache, res.store_rows_per_file, titles.vectors_schema(names))
    log.info("title experts %s: %d titles described (metadata new or edited), %d cached",
             list(names), n, len(set(prints.values()) & have))
    return n


def lookup(cache: str, names: tuple[str, ...], ids: list[str], prints: dict[str, str]
           ) -> titles.TitleVectors:
    """Where the features store finds the title vectors of ``ids`` (small tables: ids, digests
    and paths only)."""
    known = [t for t in ids if t in prints]
    owners = pa.table({"trailer_id": pa.array(known, pa.string()),
                       "fingerprint": pa.array([prints[t] for t in known], pa.string())})
    where = title_cache.locate(cache)
    fps = sorted(set(pc.unique(owners["fingerprint"]).to_pylist()) & set(where))
    files = pa.table({"fingerprint": pa.array(fps, pa.string()),
                      "file": pa.array([where[fp] for fp in fps], pa.string())})
    return titles.TitleVectors(names, owners, files)
