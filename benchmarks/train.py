"""Training benchmark: the vectorised MMX network vs a loop implementation, and Ray Train overhead.

    python benchmarks/train.py                  # both parts, ~5–10 min on 2 busy CPU cores
    python benchmarks/train.py --skip-ray       # model part only
    python benchmarks/train.py --skip-model     # Ray part only

Writes ``benchmarks/results/train.json`` (``--out``). Two parts:

1. **Model speed** (``model``): forward+backward trailers/s of the ``paper`` profile
   (``build_config("paper")``: 9 shots/sequence, 40 sequences, 768-d projections, 2048-d
   bottleneck) at batch 32 on CPU, synthetic inputs of realistic shape (60 clips per trailer;
   appearance 1280-d, scene 180-d, motion 30-d, audio 8 frames × 128-d per clip, some audio
   frames and some motion clips missing). The baseline is :class:`LoopReference`, written only
   here: the *same* network (it shares the vectorised model's weights and is checked to give
   the same logits) coded the straightforward way, with Python loops over trailers, shots,
   experts, expert pairs (g on the concatenation ``[ψ_e; ψ_f]``), audio frames and sequence
   windows; each distinct shot is still encoded only once per trailer, so the speed-up comes
   from batching, not from avoiding re-encoding. The loop is timed on a few trailers of the
   batch (its cost is linear in the trailer count). Also reported: a per-trailer loop over the
   vectorised model (batch of 1), and peak RSS (``ru_maxrss``) right after the vectorised runs.
   ``speedup_vs_loop`` = vectorised trailers/s ÷ loop trailers/s (target ≥ 20).

2. **Ray Train overhead** (``ray``): the real training worker body
   (:func:`mmx.train.ray_trainer.train_phases`: reads the ``features`` table, coarse epochs
   then contrastive epochs, rank 0 checkpoints every epoch) on a synthetic ``features`` table
   of a few thousand small trailers with the ``demo`` model profile, run (a) in this process
   without Ray (world size 1; 1 torch thread by default, ``--plain-threads 1,2`` adds 2: on a
   busy 2-core box OpenMP's 2 threads were up to 20× *slower* on these small tensors), once
   before and once after the Ray runs, and (b) through
   :func:`mmx.train.ray_trainer.train_model` on ``TorchTrainer``s of 2 and of 1 gloo worker(s)
   (1 CPU thread each). Epoch times are measured inside the loop (training steps + validation
   or silhouette + rank 0's checkpoint). ``ray_epoch_overhead`` = median 2-worker coarse epoch
   ÷ the best plain median − 1 (target ≤ 0.25; negative = Ray's 2 workers are faster);
   ``ray_1_worker_epoch_overhead`` compares 1 worker with the 1-thread loop: Ray's own cost
   without DDP's parallelism. Ray's one-time costs (``ray.init``, TorchTrainer start-up until
   the worker function runs, tear-down) are reported separately as ``ray_startup_s``, the
   worker's data loading as ``data_load_s``.

Timings on a shared 2-core machine are noisy; each part records the load average (1, 5 and
15 min) before and after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor

from mmx.config import build_config
from mmx.model import MMXNetwork
from mmx.model.network import sequence_windows
from mmx.train.data import TrailerFeatures, collate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "train.json"
PAPER_DIMS = {"appearance": 1280, "scene": 180, "motion": 30}
AUDIO_DIM = 128
AUDIO_FRAMES = 8
N_GENRES = 20  # MMX-Trailer-20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------- synthetic data
def synthetic_trailers(
    n: int,
    clips: tuple[int, int],
    dims: dict[str, int],
    *,
    n_genres: int,
    seed: int,
) -> list[TrailerFeatures]:
    """``n`` trailers with ``clips[0]..clips[1]`` clips each, Gaussian expert features with a
    weak genre signal, 4–8 valid audio frames per clip, every 7th clip without motion."""
    rng = np.random.default_rng(seed)
    dirs = {k: rng.normal(size=(n_genres, d)).astype(np.float32) for k, d in dims.items()}
    items = []
    for i in range(n):
        c = int(rng.integers(clips[0], clips[1] + 1))
        y = np.zeros(n_genres, dtype=np.float32)
        y[rng.choice(n_genres, size=int(rng.integers(1, 4)), replace=False)] = 1.0
        feats = {
            k: (y @ dirs[k] * 0.3 + rng.normal(size=(c, d))).astype(np.float32)
            for k, d in dims.items()
        }
        if "motion" in feats:
            feats["motion"][::7] = np.nan  # missing clips travel as non-finite rows
        items.append(
            TrailerFeatures(
                trailer_id=f"bench-{i:05d}",
                features=feats,
                audio=rng.normal(size=(c, AUDIO_FRAMES, AUDIO_DIM)).astype(np.float32),
                audio_frames=rng.integers(4, AUDIO_FRAMES + 1, size=c),
                has_audio=True,
                labels=y,
            )
        )
    return items


# ----------------------------------------------------------------------- the loop baseline
class LoopReference:
    """The MMX network written the straightforward way, on the weights of ``net``.

    Python loops over trailers, shots, experts, expert pairs, audio frames and windows; every
    operation works on one vector. Each distinct shot is encoded once per trailer.
    """

    def __init__(self, net: MMXNetwork) -> None:
        self.net = net

    def encode_shot(self, batch: dict[str, Any], b: int, c: int) -> Tensor:
        """One shot → its L2-normalised (shot_dim,) vector."""
        net = self.net
        psi: list[Tensor] = []
        avail: list[bool] = []
        for e, name in enumerate(net.video_experts):
            x = batch["experts"][name][b, c]  # (D_e,)
            psi.append(net.proj[name](net.norms[name](x)))  # (P,)
            avail.append(bool(batch["expert_mask"][b, c, e]))
        if net.audio_dim:
            vlad = net.netvlad
            vec = torch.zeros(vlad.clusters, vlad.dim)  # (K, Da)
            n_frames = 0
            for a in range(batch["audio"].shape[2]):
                if not batch["audio_mask"][b, c, a]:
                    continue
                x = net.norms["audio"](batch["audio"][b, c, a])  # (Da,)
                weights = torch.softmax(vlad.assign(x), dim=-1)  # (K,)
                for k in range(vlad.clusters):
                    vec[k] = vec[k] + weights[k] * (x - vlad.centroids[k])
                n_frames += 1
            vec = F.normalize(vec, dim=-1).reshape(-1)  # (K*Da,)
            psi.append(net.proj["audio"](F.normalize(vec, dim=0)))  # (P,)
            avail.append(bool(batch["expert_mask"][b, c, -1]) and n_frames > 0)
        psi = [p if ok else torch.zeros_like(p) for p, ok in zip(psi, avail, strict=True)]

        units = []
        if net.cfg.gating:
            g = net.gating
            w_first = torch.cat([g.g_a.weight, g.g_b.weight], dim=1)  # g's layer on [ψ_e; ψ_f]
            geu = net.geu
            for e in range(len(psi)):
                acc = torch.zeros(g.g_out.out_features)
                for f in range(len(psi)):
                    if f == e or not avail[f]:
                        continue
                    pair = torch.cat([psi[e], psi[f]])  # (2P,)
                    acc = acc + g.g_out(F.relu(F.linear(pair, w_first, g.g_a.bias)))
                gated = psi[e] * torch.sigmoid(g.h(acc))  # (P,)
                y = gated @ geu.w1[e] + geu.b1[e]  # (shot_dim,)
                y = F.normalize(y * torch.sigmoid(y @ geu.w2[e] + geu.b2[e]), dim=0)
                units.append(y if avail[e] else torch.zeros_like(y))
        else:
            units = psi
        return F.normalize(net.fuse(torch.cat(units)), dim=0)  # (shot_dim,)

    def logits(self, batch: dict[str, Any], b: int) -> Tensor:
        """Genre logits (G,) of trailer ``b`` of ``batch``."""
        net, cfg = self.net, self.net.cfg
        n_clips = int(batch["n_clips"][b])
        shots = [self.encode_shot(batch, b, c) for c in range(n_clips)]
        windows = sequence_windows(batch["n_clips"][b : b + 1], cfg.n_seqs, cfg.shots_per_seq)[0]
        seqs = []
        for s in range(cfg.n_seqs):
            flat = torch.cat([shots[int(i)] for i in windows[s]])  # (n*shot_dim,)
            seqs.append(net.seq_mlp(flat))  # (seq_dim,)
        if cfg.aggregation == "concat":
            agg = torch.cat(seqs)
        else:
            agg = torch.stack(seqs).sum(dim=0)
        return net.head(net.trailer_mlp(agg))  # (G,)


# --------------------------------------------------------------------- part 1: model speed
def _slice(batch: dict[str, Any], rows: slice) -> dict[str, Any]:
    return {
        k: _slice(v, rows) if isinstance(v, dict) else v[rows] for k, v in batch.items()
    }


def _fwd_bwd(net: MMXNetwork, batch: dict[str, Any]) -> float:
    """One forward+backward of the vectorised model on ``batch``; seconds."""
    t0 = time.perf_counter()
    net.zero_grad(set_to_none=True)
    logits = net(batch)["logits"]  # (B, G)
    F.binary_cross_entropy_with_logits(logits, batch["labels"]).backward()
    return time.perf_counter() - t0


def _loop_fwd_bwd(ref: LoopReference, batch: dict[str, Any], n: int) -> float:
    """Forward+backward of the loop reference over the first ``n`` trailers; seconds."""
    t0 = time.perf_counter()
    ref.net.zero_grad(set_to_none=True)
    loss = torch.zeros(())
    for b in range(n):
        loss = loss + F.binary_cross_entropy_with_logits(ref.logits(batch, b), batch["labels"][b])
    (loss / n).backward()
    return time.perf_counter() - t0


def bench_model(args: argparse.Namespace) -> dict[str, Any]:
    """Part 1: vectorised vs loop forward+backward on the paper profile."""
    cfg = build_config("paper").model
    torch.manual_seed(0)
    net = MMXNetwork(PAPER_DIMS, AUDIO_DIM, N_GENRES, cfg)
    n_params = sum(p.numel() for p in net.parameters())
    items = synthetic_trailers(args.batch, (args.clips, args.clips), PAPER_DIMS,
                               n_genres=N_GENRES, seed=0)
    t0 = time.perf_counter()
    batch = collate(items, PAPER_DIMS, AUDIO_DIM, N_GENRES)
    collate_s = time.perf_counter() - t0

    # the loop is the same network: equal logits (eval mode) on two trailers, one shorter
    net.eval()
    check_items = synthetic_trailers(2, (args.clips // 2, args.clips), PAPER_DIMS,
                                     n_genres=N_GENRES, seed=1)
    check_items[1].features["scene"][3:9] = np.nan  # a few clips without the scene expert
    check = collate(check_items, PAPER_DIMS, AUDIO_DIM, N_GENRES)
    ref = LoopReference(net)
    with torch.no_grad():
        want = net(check)["logits"]
        got = torch.stack([ref.logits(check, b) for b in range(2)])
    max_abs_diff = float((want - got).abs().max())
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"loop reference differs from the network: {max_abs_diff}")

    net.train()  # dropout on, as in training
    _fwd_bwd(net, batch)  # warm-up (allocator, OpenMP pool)
    vec_times = [_fwd_bwd(net, batch) for _ in range(args.reps)]
    rss_after_vectorised = peak_rss_mb()
    vec_s = statistics.median(vec_times)

    n_loop = min(args.loop_trailers, args.batch)  # (warm: it ran in the equality check)
    loop_s = _loop_fwd_bwd(ref, batch, n_loop)

    per_trailer_t0 = time.perf_counter()
    for b in range(n_loop):
        _fwd_bwd(net, _slice(batch, slice(b, b + 1)))
    per_trailer_s = time.perf_counter() - per_trailer_t0

    vec_tps = args.batch / vec_s
    loop_tps = n_loop / loop_s
    per_trailer_tps = n_loop / per_trailer_s
    return {
        "profile": "paper",
        "batch": args.batch,
        "clips_per_trailer": args.clips,
        "expert_dims": {**PAPER_DIMS, "audio": [AUDIO_FRAMES, AUDIO_DIM]},
        "n_genres": N_GENRES,
        "n_params": n_params,
        "threads": torch.get_num_threads(),
        "collate_s": round(collate_s, 4),
        "vectorised_s_per_batch": [round(t, 4) for t in vec_times],
        "vectorised_trailers_per_s": round(vec_tps, 2),
        "loop_trailers_timed": n_loop,
        "loop_s": round(loop_s, 3),
        "loop_trailers_per_s": round(loop_tps, 3),
        "per_trailer_batch1_trailers_per_s": round(per_trailer_tps, 2),
        "speedup_vs_loop": round(vec_tps / loop_tps, 1),
        "speedup_vs_per_trailer_batch1": round(vec_tps / per_trailer_tps, 2),
        "loop_equals_network_max_abs_diff": max_abs_diff,
        "peak_rss_mb_after_vectorised": round(rss_after_vectorised, 1),
    }


# -------------------------------------------------------------------- part 2: Ray overhead
def synthetic_features_table(items: list[TrailerFeatures]) -> pa.Table:
    """The ``features`` table (schema.FEATURES) of synthetic trailers, all ``ok``."""
    from mmx import schema

    def flat(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1)

    cols: dict[str, list[Any]] = {f.name: [] for f in schema.FEATURES}
    for it in items:
        c = it.n_clips
        row = {
            "trailer_id": it.trailer_id,
            "uri": f"synthetic://{it.trailer_id}.mp4",
            "fingerprint": it.trailer_id,
            "size_bytes": 0,
            "status": "ok",
            "reason": "",
            "fps": 24.0,
            "n_frames": c * 48,
            "duration_s": c * 2.0,
            "has_audio": it.has_audio,
            "n_shots": c,
            "n_clips": c,
            "clip_start": list(range(0, c * 48, 48)),
            "clip_end": list(range(48, c * 48 + 1, 48)),
            "audio": flat(it.audio),
            "audio_frames": np.asarray(it.audio_frames, dtype=np.int32),
            "decode_s": 0.0,
        }
        for name in ("appearance", "scene", "motion"):
            row[name] = flat(it.features[name])
        for k, v in row.items():
            cols[k].append(v)
    return pa.Table.from_pydict(cols, schema=schema.FEATURES)


def _labels_of(items: list[TrailerFeatures], vocab: list[str]) -> dict[str, list[str]]:
    return {
        it.trailer_id: [vocab[g] for g in np.flatnonzero(it.labels)] for it in items
    }


def bench_ray(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Part 2: the same training epochs in-process vs on TorchTrainers of 1 and 2 workers."""
    from mmx import storage
    from mmx.train import ray_trainer

    dims = {"appearance": 1280, "scene": 180, "motion": 30}
    vocab = [f"genre{g:02d}" for g in range(8)]
    items = synthetic_trailers(args.ray_trailers, (12, 24), dims, n_genres=len(vocab), seed=2)
    table = synthetic_features_table(items)
    features = str(work / "features.parquet")
    storage.write_table(table, features)
    labels = _labels_of(items, vocab)
    del items, table
    base = build_config(
        "demo",
        overrides={
            "train": {
                "cpus_per_worker": 1.0,
                "coarse_epochs": args.ray_epochs,
                "patience": args.ray_epochs,
                "contrastive_epochs": 2,
                "warmup_epochs": 1,
            }
        },
    )
    out: dict[str, Any] = {
        "profile": "demo",
        "n_trailers": args.ray_trailers,
        "clips_per_trailer": [12, 24],
        "expert_dims": {**dims, "audio": [AUDIO_FRAMES, AUDIO_DIM]},
        "features_mb": round(os.path.getsize(features) / 2**20, 1),
        "global_batch": base.train.batch_size,
        "coarse_epochs": base.train.coarse_epochs,
        "contrastive_epochs": base.train.contrastive_epochs,
        "epoch_includes": "training steps + validation (coarse) or silhouette (contrastive) "
        "+ rank 0's epoch checkpoint",
    }
    spec = {"features": features, "labels": labels, "vocab": vocab}

    def plain(threads: int, tag: str) -> dict[str, Any]:
        torch.set_num_threads(threads)
        model_dir = str(work / f"plain-{tag}")
        t0 = time.perf_counter()
        ray_trainer.train_phases(
            {**spec, "cfg": base.to_dict(), "model_dir": model_dir},
            rank=0, world_size=1, device=torch.device("cpu"),
        )
        summary = _epoch_summary(storage.read_json(f"{model_dir}/result.json"),
                                 time.perf_counter() - t0, base.train.batch_size)
        summary["threads"] = threads
        summary["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        return summary

    runs = {f"plain_{t}_thread": plain(t, f"{t}a") for t in args.plain_threads}

    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1",
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_init_s = time.perf_counter() - t0
    try:
        for workers in (2, 1):
            cfg = dataclasses.replace(
                base, train=dataclasses.replace(base.train, num_workers=workers)
            )
            model_dir = str(work / f"ray-{workers}")
            started = time.time()
            ray_trainer.train_model(features, labels, vocab, cfg, model_dir)
            fit_s = time.time() - started
            result = storage.read_json(f"{model_dir}/result.json")
            summary = _epoch_summary(result, fit_s, cfg.train.batch_size)
            timings = result["train_timings"]
            # TorchTrainer start-up: fit() until the worker function runs (wall clock, one host)
            summary["trainer_startup_s"] = round(timings["worker_start_unix"] - started, 2)
            summary["trainer_teardown_s"] = round(started + fit_s - timings["worker_end_unix"], 2)
            summary["load_avg"] = [round(x, 2) for x in os.getloadavg()]
            runs[f"ray_{workers}_worker{'s' if workers > 1 else ''}"] = summary
    finally:
        ray.shutdown()
    # the plain loop again, to see how much the shared machine drifted meanwhile
    runs[f"plain_{args.plain_threads[0]}_thread_again"] = plain(args.plain_threads[0], "b")
    torch.set_num_threads(args.threads)
    out.update(runs)

    plains = [r for name, r in runs.items() if name.startswith("plain")]
    best_coarse = min(r["coarse_epoch_s_median"] for r in plains)
    best_contrastive = min(r["contrastive_epoch_s_median"] for r in plains)
    two, one = runs["ray_2_workers"], runs["ray_1_worker"]
    out["ray_init_s"] = round(ray_init_s, 2)
    out["ray_epoch_overhead"] = round(two["coarse_epoch_s_median"] / best_coarse - 1.0, 3)
    out["ray_contrastive_epoch_overhead"] = round(
        two["contrastive_epoch_s_median"] / best_contrastive - 1.0, 3
    )
    # 1 worker, 1 CPU vs the plain loop on 1 thread: Ray's cost alone, without DDP's speed-up
    one_thread = [r for n, r in runs.items() if n.startswith("plain_1_thread")]
    if one_thread:
        out["ray_1_worker_epoch_overhead"] = round(
            one["coarse_epoch_s_median"] / min(r["coarse_epoch_s_median"] for r in one_thread)
            - 1.0, 3
        )
    out["ray_startup_s"] = round(
        ray_init_s + two["trainer_startup_s"] + two["trainer_teardown_s"], 2
    )
    return out


def _epoch_summary(result: dict[str, Any], total_s: float, batch: int) -> dict[str, Any]:
    t = result["train_timings"]
    return {
        "total_s": round(total_s, 2),
        "data_load_s": round(t["data_load_s"], 2),
        "steps_per_epoch": -(-result["n_train"] // batch),
        "coarse_epoch_s": [round(s, 3) for s in t["coarse_epoch_s"]],
        "coarse_epoch_s_median": round(statistics.median(t["coarse_epoch_s"]), 3),
        "contrastive_epoch_s": [round(s, 3) for s in t["contrastive_epoch_s"]],
        "contrastive_epoch_s_median": round(statistics.median(t["contrastive_epoch_s"]), 3),
    }


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--threads", type=int, default=2, help="torch threads of the model part")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--clips", type=int, default=60)
    p.add_argument("--reps", type=int, default=3, help="timed vectorised batches")
    p.add_argument("--loop-trailers", type=int, default=2, help="trailers timed in the loop")
    p.add_argument("--ray-trailers", type=int, default=3000)
    p.add_argument("--ray-epochs", type=int, default=3, help="coarse epochs per run")
    p.add_argument("--plain-threads", type=lambda v: [int(x) for x in v.split(",")],
                   default=[1], help="torch threads of the runs without Ray, e.g. 1,2")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--skip-ray", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
    }
    if not args.skip_model:
        load_before = [round(x, 2) for x in os.getloadavg()]
        report["model"] = bench_model(args)
        report["model"]["load_avg"] = [load_before, [round(x, 2) for x in os.getloadavg()]]
        report["speedup_vs_loop"] = report["model"]["speedup_vs_loop"]
        report["peak_rss_mb"] = report["model"]["peak_rss_mb_after_vectorised"]
        print(json.dumps(report["model"], indent=2), flush=True)
    if not args.skip_ray:
        load_before = [round(x, 2) for x in os.getloadavg()]
        work = Path(tempfile.mkdtemp(prefix="mmx-bench-train-"))
        try:
            report["ray"] = bench_ray(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report["ray"]["load_avg"] = [load_before, [round(x, 2) for x in os.getloadavg()]]
        report["ray_epoch_overhead"] = report["ray"]["ray_epoch_overhead"]
        report["ray_startup_s"] = report["ray"]["ray_startup_s"]
        print(json.dumps(report["ray"], indent=2), flush=True)
    report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["peak_rss_mb_process"] = round(peak_rss_mb(), 1)
    report["benchmark_s"] = round(time.perf_counter() - started, 1)

    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.skip_model or args.skip_ray:  # keep the other part's last numbers
        report = {**previous, **report, "benchmark_s": None}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
