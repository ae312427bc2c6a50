"""Both training phases on Ray Train (the only ``ray.train`` import of mmx).

A ``TorchTrainer`` runs ``cfg.train.num_workers`` DDP workers (gloo on CPU, nccl on GPU).
Each worker reads the ok rows of the ``features`` table, runs the plain-PyTorch loop of
:mod:`mmx.train.loop` (coarse BCE, then contrastive NT-Xent) on its shard of every global
batch, and rank 0 checkpoints every epoch under ``<model_dir>/`` and writes the final
``coarse``/``fine`` checkpoints and ``result.json`` (test metrics, silhouettes) there. Results
travel through storage, not through Ray Train's metrics (PITFALLS: Train V2).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from mmx import storage
from mmx.config import RunConfig, config_from_dict

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the trained model lives and what it scored."""

    model_dir: str
    fine: str  # checkpoint of the contrastive (fine-grained) model
    coarse: str  # checkpoint of the coarse model (its genre head is the one to use)
    metrics: dict[str, Any]  # test, val, baseline, silhouette, epochs


def train_model(
    features_uri: str,
    labels: dict[str, list[str]],
    vocab: list[str],
    cfg: RunConfig,
    model_dir: str,
) -> TrainResult:
    """Train coarse then contrastive with a Ray ``TorchTrainer``; return the checkpoints."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if not vocab:
        raise ValueError("no genre labels: give --labels with at least one labelled trailer")
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
        run_config=ray.train.RunConfig(name="mmx-train", storage_path=storage_path),
    )
    trainer.fit()
    result = storage.read_json(storage.join(model_dir, "result.json"))
    return TrainResult(
        model_dir=model_dir,
        fine=storage.join(model_dir, "fine"),
        coarse=storage.join(model_dir, "coarse"),
        metrics=result,
    )


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: both phases, rank 0 writes checkpoints and the result."""
    import ray.train
    import ray.train.torch
    import torch

    from mmx.model import MMXNetwork
    from mmx.train import loop
    from mmx.train.data import trailer_set_from_table
    from mmx.train.metrics import genre_metrics, label_frequency_baseline

    cfg: RunConfig = config_from_dict(config["cfg"])
    model_dir: str = config["model_dir"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))

    table = storage.read_table(config["features"])
    table = table.filter(pc.equal(table["status"], "ok"))
    data = trailer_set_from_table(table, config["labels"], config["vocab"])
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    if len(train) < 2:
        raise ValueError(f"only {len(train)} labelled training trailers: cannot train")
    labelled = data.subset([i for i in range(len(data)) if data.labelled[i]])

    loop.seed_everything(cfg.train.seed)
    model = MMXNetwork(data.expert_dims, data.audio_dim, len(data.genres), cfg.model)
    meta = {"run_config": cfg.to_dict(), "genres": list(data.genres)}

    def on_epoch(phase: str, epoch: int, module: Any, optimizer: Any, metrics: dict) -> None:
        if rank != 0:
            return
        info = {**meta, "phase": phase, "epoch": epoch, "metrics": metrics}
        loop.save_checkpoint(storage.join(model_dir, f"{phase}-last"), module, optimizer, info)
        log.info("%s epoch %d: %s", phase, epoch, _brief(metrics))

    coarse = loop.fit_coarse(
        model, train, val, cfg.train, rank=rank, world_size=world, device=device, on_epoch=on_epoch
    )
    coarse_model = copy.deepcopy(loop.unwrap(model)).cpu().eval()
    if rank == 0:
        loop.save_checkpoint(
            storage.join(model_dir, "coarse"),
            coarse_model,
            meta={**meta, "phase": "coarse", "epoch": coarse.best_epoch,
                  "best_metric": coarse.best_metric},
        )
    fine = loop.fit_contrastive(
        model, data, cfg.train, rank=rank, world_size=world, device=device,
        silhouette_set=labelled, on_epoch=on_epoch,
    )
    if rank != 0:
        return
    fine_model = loop.unwrap(model).cpu().eval()
    loop.save_checkpoint(
        storage.join(model_dir, "fine"),
        fine_model,
        meta={**meta, "phase": "contrastive", "epoch": cfg.train.contrastive_epochs - 1},
    )
    result: dict[str, Any] = {
        "silhouette": [float(s) for s in fine.silhouette],
        "coarse_best_epoch": coarse.best_epoch,
        "coarse_epochs": len(coarse.history),
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
    }
    for name, part in (("test", test), ("val", val)):
        if len(part) == 0:
            continue
        scores = loop.predict(coarse_model, part, cfg.resources.embed_batch).scores
        result[name] = {
            **genre_metrics(part.labels, scores, cfg.train.threshold, list(data.genres)),
            "n": len(part),
        }
        if name == "test":
            base = label_frequency_baseline(train.labels, len(part))
            result["baseline"] = {
                **genre_metrics(part.labels, base, cfg.train.threshold, list(data.genres)),
                "n": len(part),
            }
    storage.write_json(storage.join(model_dir, "result.json"), result)


def _brief(metrics: dict) -> str:
    keep = ("loss", "bce", "nt_xent", "au_prc_weighted", "silhouette", "lr")
    return ", ".join(
        f"{k}={v:.4f}" for k, v in metrics.items() if k in keep and isinstance(v, float)
    )
