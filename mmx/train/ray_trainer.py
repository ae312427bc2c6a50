"""Both training phases on Ray Train (the only ``ray.train`` import of mmx).

A ``TorchTrainer`` runs ``cfg.train.num_workers`` DDP workers (gloo on CPU, nccl on GPU).
Each worker runs :func:`train_phases`, the worker body, which needs no Ray and runs in-process
too (world size 1, e.g. the benchmark's "without Ray" baseline and the resume tests): read the
ids of the ok rows of the run's features store, split them, read the features of the trailers
this worker owns (every ``world_size``-th in trailer_id order; every worker knows the ids,
labels and splits of all), run the plain-PyTorch loop of :mod:`mmx.train.loop` (coarse BCE, then
contrastive NT-Xent) on batches of its own trailers, and score the test and val splits
together. A worker thus holds about 1/world_size of the features. Rank 0 writes, under
``<model_dir>/``::

    coarse-epoch-NNNN/   every coarse epoch: weights, optimizer, metrics (newest 2 kept)
    coarse-best/         weights of the best coarse epoch so far (early stopping)
    coarse/              the coarse model (best epoch): the phase is finished
    contrastive-epoch-NNNN/  every contrastive epoch (newest 2 kept)
    fine/                the contrastive model: the phase is finished
    result.json          test/val metrics, baseline, silhouettes, train_timings

Every checkpoint folder gets its ``meta.json`` last, so a folder without one is unfinished and
ignored. A killed run (a worker, the node, or the whole job) started again on the same
``model_dir`` resumes: finished phases are skipped, an unfinished phase continues after its
newest complete epoch checkpoint with the same weights, optimizer state, best score and
silhouettes, and (as every epoch's randomness is a function of the seed and epoch) reproduces
the uninterrupted run. Ray Train restarts a failed worker group up to ``MAX_FAILURES`` times,
which lands in the same resume path. Results travel through storage, not through Ray Train's
metrics (PITFALLS: Train V2).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmx import storage
from mmx.config import RunConfig, TrainConfig, config_from_dict

log = logging.getLogger(__name__)

MAX_FAILURES = 2  # worker-group restarts Ray Train attempts; each resumes from checkpoints
KEEP_EPOCH_CHECKPOINTS = 2  # newest complete epoch checkpoints kept per phase
PHASES = ("coarse", "contrastive")
FINAL = {"coarse": "coarse", "contrastive": "fine"}  # folder of each phase's final model
SPLITS_FILE = "splits.parquet"


@dataclass
class TrainResult:
    """Where the trained model lives and what it scored."""

    model_dir: str
    fine: str  # checkpoint of the contrastive (fine-grained) model
    coarse: str  # checkpoint of the coarse model (its genre head is the one to use)
    metrics: dict[str, Any]  # test, val, baseline, silhouette, epochs, timings


def train_model(
    features_uri: str,
    labels: dict[str, list[str]],
    vocab: list[str],
    cfg: RunConfig,
    model_dir: str,
) -> TrainResult:
    """Train coarse then contrastive with a Ray ``TorchTrainer``; return the checkpoints.

    Resumes from the checkpoints already in ``model_dir`` (see the module docstring); when
    ``model_dir`` holds a finished training (``fine/`` and ``result.json``) no worker starts.
    """
    result = TrainResult(
        model_dir=model_dir,
        fine=storage.join(model_dir, FINAL["contrastive"]),
        coarse=storage.join(model_dir, FINAL["coarse"]),
        metrics={},
    )
    result_uri = storage.join(model_dir, "result.json")
    _discard_stale(model_dir, inputs_digest(features_uri, labels, vocab, cfg))
    if _complete(result.fine) and storage.exists(result_uri):
        log.info("%s: training already finished, reusing it", model_dir)
        result.metrics = storage.read_json(result_uri)
        return result

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    t = cfg.train
    backend = t.backend if t.backend != "auto" else ("nccl" if t.use_gpu else "gloo")
    storage_path = storage.join(model_dir, "ray")
    if "://" not in storage_path:
        storage.makedirs(storage_path)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "features": features_uri,
            "labels": labels,
            "vocab": vocab,
            "model_dir": model_dir,
        },
        torch_config=TorchConfig(backend=backend),
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name="mmx-train",
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
        ),
    )
    trainer.fit()
    result.metrics = storage.read_json(result_uri)
    return result


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its rank, world size and device, then :func:`train_phases`."""
    import ray.train
    import ray.train.torch
    import torch

    cfg = config_from_dict(config["cfg"])
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    ctx = ray.train.get_context()
    train_phases(
        config,
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        report=ray.train.report,
    )


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of an epoch's metrics (what ``ray.train.report`` can chart)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)}


def genre_training(n_labelled: int, n_genres: int, cfg: TrainConfig) -> str:
    """Why no genre head can be trained on ``n_labelled`` labelled ok trailers ("" if one can):
    the job then publishes a self-supervised embedding, sub-genres and neighbours only."""
    if n_genres == 0 or n_labelled == 0:
        return "the archive has no genre labels"
    if n_labelled < cfg.min_labelled:
        return (f"only {n_labelled} labelled trailers (train.min_labelled = {cfg.min_labelled}): "
                "too few to train and test a genre model")
    return ""


def write_splits(model_dir: str, trailer_ids: list[str], splits: Any) -> None:
    """``<model_dir>/splits.parquet``: the split of every trailer the model was trained with
    (labelled: train/val/test; unlabelled: ``unlabelled``), for the published trailers table."""
    import pyarrow as pa

    values = [s or "unlabelled" for s in splits]
    storage.write_table(pa.table({"trailer_id": trailer_ids, "split": values}),
                        storage.join(model_dir, SPLITS_FILE))


def read_splits(model_dir: str) -> dict[str, str]:
    """trailer_id → split of the model in ``model_dir`` ({} for a model from before splits
    were stored)."""
    uri = storage.join(model_dir, SPLITS_FILE)
    if not storage.exists(uri):
        return {}
    table = storage.read_table(uri)
    return dict(zip(table["trailer_id"].to_pylist(), table["split"].to_pylist(), strict=True))


# ------------------------------------------------------------------------------ checkpoints
def _complete(uri: str) -> bool:
    """A checkpoint folder is complete when its ``meta.json`` (written last) is valid and
    names files that exist (:func:`mmx.train.loop.checkpoint_complete`)."""
    from mmx.train import loop

    return loop.checkpoint_complete(uri)


INPUTS_FILE = "inputs.json"  # in a model directory: the digest of what it is trained on


def inputs_digest(features_uri: str, labels: dict[str, list[str]], vocab: list[str],
                  cfg: RunConfig) -> str:
    """SHA-256 of what a training depends on: the ok trailers of the features store and their
    content fingerprints, their labels, the genre vocabulary, and the model and training
    settings (placement and resources aside)."""
    import hashlib

    table = storage.read_table(features_uri, ["trailer_id", "fingerprint", "status"])
    rows = sorted((t, f) for t, f, s in zip(table["trailer_id"].to_pylist(),
                                            table["fingerprint"].to_pylist(),
                                            table["status"].to_pylist(), strict=True)
                  if s == "ok")
    settings = cfg.to_dict()
    train = {k: v for k, v in settings["train"].items()
             if k not in ("num_workers", "use_gpu", "cpus_per_worker", "backend")}
    body = {"trailers": rows, "labels": {t: sorted(labels.get(t, [])) for t, _ in rows},
            "vocab": list(vocab), "model": settings["model"], "train": train}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _discard_stale(model_dir: str, digest: str) -> None:
    """Make ``model_dir`` a training of inputs ``digest``: checkpoints there of other inputs (a
    run killed mid-training, resumed after its labels, trailers or settings changed) are deleted
    rather than resumed or reused, so a resumed model is never a model of stale inputs."""
    stamp = storage.join(model_dir, INPUTS_FILE)
    fs, root = storage.filesystem(model_dir)
    found = storage.read_json(stamp).get("digest") if storage.exists(stamp) else None
    if found == digest:
        return
    # (a directory without the stamp predates it, or was trained by train_phases directly:
    # adopted as it is)
    if found is not None and fs.exists(root):
        log.warning("%s holds checkpoints of other inputs (labels, trailers or settings changed "
                    "since that training started): training from scratch", model_dir)
        fs.rm(root, recursive=True)
    storage.write_json(stamp, {"digest": digest})


def _epoch_dir(model_dir: str, phase: str, epoch: int) -> str:
    return storage.join(model_dir, f"{phase}-epoch-{epoch:04d}")


def epoch_checkpoints(model_dir: str, phase: str) -> list[tuple[int, str]]:
    """Complete epoch checkpoints of ``phase`` in ``model_dir``: [(epoch, uri)], oldest first."""
    fs, root = storage.filesystem(model_dir)
    found = []
    for meta in fs.glob(f"{root}/{phase}-epoch-*/meta.json"):
        name = meta.rstrip("/").split("/")[-2]  # "<phase>-epoch-NNNN"
        suffix = name.rsplit("-", 1)[-1]
        uri = storage.join(model_dir, name)
        if suffix.isdigit() and _complete(uri):
            found.append((int(suffix), uri))
    return sorted(found)


def _save_epoch(
    model_dir: str, phase: str, epoch: int, model: Any, optimizer: Any, meta: dict[str, Any]
) -> None:
    """Write this epoch's checkpoint, then drop all but the newest complete ones."""
    from mmx.train import loop

    loop.save_checkpoint(_epoch_dir(model_dir, phase, epoch), model, optimizer, meta)
    old = epoch_checkpoints(model_dir, phase)[:-KEEP_EPOCH_CHECKPOINTS]
    fs, _ = storage.filesystem(model_dir)
    for _, uri in old:
        fs.rm(storage.filesystem(uri)[1], recursive=True)


def _check_compatible(meta: dict[str, Any], model: Any, vocab: list[str], uri: str) -> None:
    """Refuse to resume from a checkpoint of another model shape or genre vocabulary."""
    want = json.loads(json.dumps(model.init_args()))
    if meta.get("model") != want or list(meta.get("genres", [])) != list(vocab):
        raise ValueError(
            f"{uri}: checkpoint of a different model or genre vocabulary; "
            "train into a new model directory or delete the old checkpoints"
        )


# ------------------------------------------------------------------------------ the worker
def train_phases(
    config: dict[str, Any], *, rank: int = 0, world_size: int = 1, device: Any = "cpu",
    report: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Both training phases on one worker (call it on every worker of a process group).

    ``report`` (every worker calls it, once per epoch, with the same numbers) receives each
    epoch's scalar metrics with its phase and number: ``ray.train.report`` under Ray Train, so
    Ray's Train view and the driver see the training's progress.

    ``config``: ``cfg`` (RunConfig as a dict), ``features`` (URI of the features store),
    ``labels`` {trailer_id: [genre, …]}, ``vocab`` [genre, …], ``model_dir`` (URI). With
    ``world_size > 1`` a ``torch.distributed`` process group must be initialised; each worker
    then reads the features of the trailers it owns only (:func:`mmx.train.data.plan_owners`).
    Resumes from the checkpoints in ``model_dir`` (module docstring); rank 0 writes checkpoints
    and ``result.json``.
    """
    import torch

    from mmx.features import title_experts
    from mmx.model import MMXNetwork
    from mmx.train import loop
    from mmx.train.data import (
        TrailerSet,
        plan_owners,
        read_ok_ids,
        store_audio_dim,
        store_experts,
    )
    from mmx.train.metrics import label_frequency_baseline, split_metrics

    worker_start = time.time()
    cfg: RunConfig = config_from_dict(config["cfg"])
    model_dir: str = config["model_dir"]
    vocab: list[str] = list(config["vocab"])
    device = torch.device(device)

    t0 = time.perf_counter()
    # the run's features store (a folder of parts, or one file): the ids of its ok rows, in
    # trailer order, then only the features of the trailers this worker owns
    store: str = config["features"]
    ids = read_ok_ids(store)
    labels: dict[str, list[str]] = config["labels"]
    known = set(vocab)
    n_labelled = sum(1 for t in ids if any(g in known for g in labels.get(t, ())))
    no_genre_head = genre_training(n_labelled, len(vocab), cfg.train)
    if no_genre_head:  # too few labels: a self-supervised model without a genre head
        log.info("no genre head: %s", no_genre_head)
        vocab, labels = [], {}
    plan = TrailerSet.from_metadata(ids, labels, vocab, audio_dim=store_audio_dim(store))
    splits = plan.assign_splits(cfg.train.split_fractions)  # ids and labels only: same everywhere
    owner = plan_owners(plan, world_size)
    data = plan.load_features(store, owner, rank)
    del plan
    rows_loaded = int(data.held.sum())
    data_load_s = time.perf_counter() - t0
    log.info("worker %d/%d: features of %d of %d trailers loaded in %.1f s", rank, world_size,
             rows_loaded, len(data), data_load_s)
    # one collective: what every worker loaded, and the expert dims all of them agree on (a
    # worker's own rows may all lack an expert, but every model must have the same shape)
    names = store_experts(store)  # the same list on every worker
    gathered = loop.gather_values(
        [rows_loaded, data_load_s, *_dims_vector(data.expert_dims, names)], world_size, device
    )  # (W, 2 + experts)
    data.expert_dims = _agreed_dims(gathered[:, 2:], store, names)
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    labelled = data.subset(np.flatnonzero(data.labelled))
    if rank == 0:
        write_splits(model_dir, data.trailer_ids, splits)

    loop.seed_everything(cfg.train.seed)
    model = MMXNetwork(data.expert_dims, data.audio_dim, len(data.genres), cfg.model,
                       title_experts(data.expert_dims))
    meta = {"run_config": cfg.to_dict(), "genres": list(data.genres)}
    epoch_s: dict[str, list[float]] = {phase: [] for phase in PHASES}

    def on_epoch(phase: str, epoch: int, module: Any, optimizer: Any, metrics: dict) -> None:
        if report is not None:
            report({"phase": phase, "epoch": epoch, **_scalars(metrics)})
        if rank != 0:
            return
        started = time.perf_counter()
        info = {**meta, "phase": phase, "epoch": epoch, "metrics": metrics}
        _save_epoch(model_dir, phase, epoch, module, optimizer, info)
        if phase == "coarse" and metrics.get("improved"):
            # after the epoch checkpoint: a kill in between leaves best_epoch == its epoch,
            # whose weights are the epoch checkpoint's own
            loop.save_checkpoint(storage.join(model_dir, "coarse-best"), module, meta=info)
        epoch_s[phase].append(metrics["seconds"] + time.perf_counter() - started)
        log.info("%s epoch %d: %s", phase, epoch, _brief(metrics))

    coarse_model = None
    coarse_epochs = coarse_best_epoch = None
    title_fusion: dict[str, Any] = {}
    if not vocab:  # self-supervised: the contrastive phase starts from scratch
        model.set_input_stats(loop.input_stats(data, world_size=world_size, device=device))
    else:
        # ---- coarse phase: skip when finished, continue after the newest epoch checkpoint
        coarse_uri = storage.join(model_dir, FINAL["coarse"])
        if _complete(coarse_uri):
            ckpt = loop.load_checkpoint(coarse_uri)
            _check_compatible(ckpt.meta, model, vocab, coarse_uri)
            model.load_state_dict(ckpt.model_state)
            coarse_best_epoch = ckpt.meta["epoch"]
            coarse_epochs = ckpt.meta.get("epochs_run")
            title_fusion = ckpt.meta.get("title_fusion") or {}
            log.info("coarse phase already finished (%s)", coarse_uri)
        else:
            resume: dict[str, Any] = {}
            done = False
            last = epoch_checkpoints(model_dir, "coarse")
            if last:
                ckpt = loop.load_checkpoint(last[-1][1])
                _check_compatible(ckpt.meta, model, vocab, last[-1][1])
                model.load_state_dict(ckpt.model_state)
                metrics = ckpt.meta["metrics"]
                best_state = None  # None: the loaded epoch is the best one
                if metrics["best_epoch"] != ckpt.meta["epoch"]:
                    best = loop.load_checkpoint(storage.join(model_dir, "coarse-best"))
                    if best.meta["epoch"] != metrics["best_epoch"]:
                        raise ValueError(f"{model_dir}: coarse-best is not the best epoch's")
                    best_state = best.model_state
                resume = {
                    "start_epoch": ckpt.meta["epoch"] + 1,
                    "optimizer_state": ckpt.optimizer_state,
                    "best": loop.Best(metrics["best_metric"], metrics["best_epoch"], best_state),
                }
                done = bool(metrics["done"])
                coarse_epochs = ckpt.meta["epoch"] + 1
                log.info("coarse phase resumes after epoch %d", ckpt.meta["epoch"])
            if done:  # finished, but killed before writing the final checkpoint
                best = resume["best"]
                if best.state is not None:
                    model.load_state_dict(best.state)
                best_metric, coarse_best_epoch = best.metric, best.epoch
            else:
                fit = loop.fit_coarse(
                    model, train, val, cfg.train, rank=rank, world_size=world_size, device=device,
                    on_epoch=on_epoch, **resume,
                )
                best_metric, coarse_best_epoch = fit.best_metric, fit.best_epoch
                coarse_epochs = fit.history[-1]["epoch"] + 1 if fit.history else coarse_epochs
            title_fusion = loop.fit_title_fusion(
                model, train, val, cfg.train, batch_size=cfg.resources.embed_batch, rank=rank,
                world_size=world_size, device=device,
            )
            if title_fusion:
                log.info("title experts fused late: weights %s (%s)",
                         {k: round(v, 3) for k, v in title_fusion["weights"].items()},
                         title_fusion["reason"])
            if rank == 0:
                loop.save_checkpoint(
                    coarse_uri,
                    model,
                    meta={**meta, "phase": "coarse", "epoch": coarse_best_epoch,
                          "best_metric": best_metric, "epochs_run": coarse_epochs,
                          "title_fusion": title_fusion},
                )
        coarse_model = copy.deepcopy(loop.unwrap(model)).cpu().eval()

    # ---- contrastive phase: the same, from the coarse model
    fine_uri = storage.join(model_dir, FINAL["contrastive"])
    if _complete(fine_uri):
        ckpt = loop.load_checkpoint(fine_uri)
        _check_compatible(ckpt.meta, model, vocab, fine_uri)
        model.load_state_dict(ckpt.model_state)
        silhouettes = list(ckpt.meta.get("silhouettes", []))
        log.info("contrastive phase already finished (%s)", fine_uri)
    else:
        resume = {}
        done = False
        last = epoch_checkpoints(model_dir, "contrastive")
        if last:
            ckpt = loop.load_checkpoint(last[-1][1])
            _check_compatible(ckpt.meta, model, vocab, last[-1][1])
            model.load_state_dict(ckpt.model_state)
            resume = {
                "start_epoch": ckpt.meta["epoch"] + 1,
                "optimizer_state": ckpt.optimizer_state,
                "silhouettes": ckpt.meta["metrics"]["silhouettes"],
            }
            done = bool(ckpt.meta["metrics"]["done"])
            log.info("contrastive phase resumes after epoch %d", ckpt.meta["epoch"])
        if done:
            silhouettes = list(resume["silhouettes"])
        else:
            fine = loop.fit_contrastive(
                model, data, cfg.train, rank=rank, world_size=world_size, device=device,
                silhouette_set=labelled, on_epoch=on_epoch, **resume,
            )
            silhouettes = list(fine.silhouette)
        if rank == 0:
            loop.save_checkpoint(
                fine_uri,
                loop.unwrap(model).cpu().eval(),
                meta={**meta, "phase": "contrastive", "epoch": cfg.train.contrastive_epochs - 1,
                      "silhouettes": [float(s) for s in silhouettes]},
            )
    # test/val genre scores of the coarse model (its head matches its bottleneck): every worker
    # scores the rows it holds, all get the gathered scores; rank 0 computes the metrics
    scores: dict[str, np.ndarray] = {}
    if coarse_model is not None:
        coarse_model.to(device)
        for name, part in (("test", test), ("val", val)):
            if len(part):
                _, scores[name] = loop.infer_rows(
                    coarse_model, part, np.arange(len(part)), batch_size=cfg.resources.embed_batch,
                    rank=rank, world_size=world_size, device=device,
                )
    if rank != 0:
        return

    result: dict[str, Any] = {
        "genre_model": {"trained": coarse_model is not None,
                        "reason": no_genre_head or f"{n_labelled} labelled trailers"},
        "silhouette": [float(s) for s in silhouettes],
        "coarse_best_epoch": coarse_best_epoch,
        "coarse_epochs": coarse_epochs,
        "n_labelled": int(data.labelled.sum()),
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
    }
    if title_fusion:  # only a model with title experts has one (metrics.json as before)
        result["title_fusion"] = title_fusion
    for name, part in (("test", test), ("val", val)):
        if name not in scores:
            continue
        result[name] = split_metrics(part.labels, scores[name], cfg.train.threshold,
                                     list(data.genres))
        if name == "test":
            base = label_frequency_baseline(train.labels, len(part))
            result["baseline"] = split_metrics(part.labels, base, cfg.train.threshold,
                                               list(data.genres))
    # this attempt's timings (a resumed run lists only the epochs it ran)
    result["train_timings"] = {
        "worker_start_unix": worker_start,
        "worker_end_unix": time.time(),
        "data_load_s": data_load_s,  # rank 0's: ids, splits and its features
        "data_load_s_per_worker": [float(x) for x in gathered[:, 1]],
        "rows_loaded": [int(x) for x in gathered[:, 0]],  # trailers whose features each holds
        "n_trailers": len(data),
        "coarse_epoch_s": epoch_s["coarse"],
        "contrastive_epoch_s": epoch_s["contrastive"],
        "world_size": world_size,
    }
    storage.write_json(storage.join(model_dir, "result.json"), result)


def _dims_vector(dims: dict[str, int], names: tuple[str, ...]) -> list[int]:
    """Expert dims in ``names`` order (the store's experts), 0 for an expert not seen."""
    return [int(dims.get(name, 0)) for name in names]


def _agreed_dims(per_worker: np.ndarray, store: str, names: tuple[str, ...]) -> dict[str, int]:
    """The expert dims of all workers' rows from (W, experts) :func:`_dims_vector` rows: an
    expert seen by any worker is in, with the one dim they all saw."""
    dims = {}
    for name, seen in zip(names, per_worker.T.astype(np.int64), strict=True):
        found = set(seen[seen > 0].tolist())
        if len(found) > 1:
            raise ValueError(f"{store}: workers read {name} features of dims {sorted(found)}")
        if found:
            dims[name] = found.pop()
    return dims


def _brief(metrics: dict) -> str:
    keep = ("loss", "bce", "nt_xent", "cross_modal", "au_prc_weighted", "silhouette", "lr")
    return ", ".join(
        f"{k}={v:.4f}" for k, v in metrics.items() if k in keep and isinstance(v, float)
    )
