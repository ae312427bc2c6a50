"""Scale benchmark: everything after ingest at 1k, 10k and 50k trailers, and a 1% night.

    .venv/bin/python benchmarks/scale.py                          # 1k, 10k, 50k + night, ~1 h here
    .venv/bin/python benchmarks/scale.py --sizes 500 2000 --out /tmp/scale.json   # quick look

Writes ``benchmarks/results/scale.json`` (not a timed test; the figures depend on the machine,
which the JSON records). What it does:

1. **Feature-level archives, no video.** For the largest size (+1% for the night) it writes
   one tiny distinct input file per trailer (its bytes name it, so fingerprints are real
   ``<size>-<sha256>``), a labels CSV (``--labelled`` share labelled with 1-3 of ``--genres``
   genres), and the trailer's features row straight into the ingest cache under the job's own
   cache key (:func:`mmx.pipeline.ingest_key`): ``--clips-lo``..``--clips-hi`` clips per
   trailer with the real expert widths (appearance 1280, scene 180, motion 30, audio 8 × 128
   frames: ~10 KB per clip), content drawn around per-sub-genre centres so training and
   clustering see structure. The job then decodes nothing: every stage after the decoder runs
   for real (fingerprints, features store, DDP training, embedding, sub-genres, sharded index,
   neighbours, tables, LATEST). Each smaller size reuses a prefix of the same trailers, its
   cache files hard-linked into its own output root.
2. **Full runs** at every ``--sizes`` value: the real job (:func:`mmx.pipeline.run`, local Ray
   on 127.0.0.1, ``--profile`` model, ``--workers`` DDP workers) in a fresh subprocess whose
   own peak resident memory (``ru_maxrss`` of the driver process: Ray's workers are other
   processes) and wall time are recorded with the run's per-stage seconds (``metrics.json``).
3. **A 1% night** at the largest size: ``--night`` share of new trailers (already featurised:
   ingest is excluded by construction, as in the issue) added to the archive, then the job in
   ``--mode incremental``: the model is reused, the unchanged trailers keep their published
   rows, their index shards are updated, only affected neighbour lists re-searched.
   ``incremental_vs_full`` = that night's wall time / the full run's at the largest size (both
   include Ray's start). ``--recompute-night`` also times the same night with ``--recompute``
   (the model reused, everything else recomputed).

Targets (issue 12): ``driver_rss_growth`` (largest / smallest peak driver RSS) ≤ 1.5,
``incremental_vs_full`` ≤ 0.1, seconds per trailer of each stage not growing with size beyond
the index's own log factors (``s_per_1k_trailers`` per size).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmx import schema

WIDTHS = {"appearance": 1280, "scene": 180, "motion": 30}
AUDIO_FRAMES, AUDIO_DIM = 8, 128
LATENT = 24  # per-clip content lives in a latent space mapped to every expert's width
TARGETS = {"driver_rss_growth": 1.5, "incremental_vs_full": 0.1}


# ------------------------------------------------------------------------ the synthetic archive
def trailer_id(i: int) -> str:
    return f"t{i:06d}"


def content(i: int) -> bytes:
    """The bytes of trailer ``i``'s input file: distinct per trailer, tiny."""
    return f"mmx scale benchmark trailer {i}\n".encode()


def fingerprint(i: int) -> str:
    data = content(i)
    return f"{len(data)}-{hashlib.sha256(data).hexdigest()}"


class Generator:
    """Deterministic features rows: trailer i's genre, sub-genre and clips depend on (seed, i)."""

    def __init__(self, seed: int, n_genres: int, subgenres_per_genre: int, clips: tuple[int, int]):
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.n_genres = n_genres
        self.k = subgenres_per_genre
        self.clips = clips
        n_sub = n_genres * subgenres_per_genre
        genre_centres = rng.normal(size=(n_genres, LATENT))
        self.centres = (np.repeat(genre_centres, subgenres_per_genre, axis=0)
                        + 0.6 * rng.normal(size=(n_sub, LATENT))).astype(np.float32)
        self.maps = {name: (rng.normal(size=(LATENT, d)) / np.sqrt(LATENT)).astype(np.float32)
                     for name, d in {**WIDTHS, "audio": AUDIO_DIM}.items()}
        # a bank of full-width noise rows (drawing fresh noise at full width would cost more
        # than everything else the generator does)
        self.noise = {name: (0.3 * rng.normal(size=(4096, m.shape[1]))).astype(np.float32)
                      for name, m in self.maps.items()}

    def truth(self, i: int) -> tuple[int, list[int]]:
        """(sub-genre, genres) of trailer ``i``: the primary genre is its sub-genre's."""
        rng = np.random.default_rng([self.seed, i, 1])
        sub = int(rng.integers(self.n_genres * self.k))
        primary = sub // self.k
        extra = rng.choice(self.n_genres, size=int(rng.integers(0, 3)), replace=False)
        return sub, [primary, *[int(g) for g in extra if g != primary]]

    def row(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        sub, _ = self.truth(i)
        c = int(rng.integers(self.clips[0], self.clips[1] + 1))
        z = self.centres[sub] + 0.8 * rng.normal(size=(c, LATENT)).astype(np.float32)  # (C, L)

        def expert(name: str, rows: int) -> np.ndarray:
            base = z if rows == c else np.repeat(z, rows // c, axis=0)
            pick = rng.integers(len(self.noise[name]), size=rows)
            return (base @ self.maps[name] + self.noise[name][pick]).astype(np.float32)

        fps = 24.0
        lengths = rng.integers(24, 120, size=c)
        ends = np.cumsum(lengths)
        data = content(i)
        return {
            "trailer_id": trailer_id(i), "uri": "", "fingerprint": fingerprint(i),
            "size_bytes": len(data), "status": "ok", "reason": "", "fps": fps,
            "n_frames": int(ends[-1]), "duration_s": float(ends[-1] / fps), "has_audio": True,
            "n_shots": c, "n_clips": c,
            "clip_start": (ends - lengths).astype(np.int64), "clip_end": ends.astype(np.int64),
            **{name: expert(name, c).ravel() for name in WIDTHS},
            "audio": expert("audio", c * AUDIO_FRAMES).ravel(),
            "audio_frames": np.full(c, AUDIO_FRAMES, np.int32),
            "decode_s": 0.0,
        }


ROWS_PER_PART = 256  # resources.store_rows_per_file's default: parts of the compacted cache


def _table(gen: Generator, ids: range) -> pa.Table:
    """Features rows of trailers ``ids``, built column-wise (no Python conversion per value)."""
    rows = [gen.row(i) for i in ids]
    cols: dict[str, Any] = {}
    for f in schema.FEATURES:
        values = [r[f.name] for r in rows]
        if pa.types.is_list(f.type):
            flat = np.concatenate([np.asarray(v) for v in values])
            offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
            cols[f.name] = pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(flat, f.type.value_type))
        else:
            cols[f.name] = pa.array(values, f.type)
    return pa.table(cols, schema=schema.FEATURES)


def _write_part(args: tuple[Generator, str, int, int]) -> int:
    """Trailers lo..hi-1 as one part of the compacted cache (as mmx.stages.cache writes it)."""
    gen, path, lo, hi = args
    if not os.path.exists(path):
        pq.write_table(_table(gen, range(lo, hi)), path + ".tmp", compression="zstd")
        os.replace(path + ".tmp", path)  # zstd, as mmx.storage.write_table
    return hi - lo


def _write_loose(args: tuple[Generator, str, int, int]) -> int:
    """Trailers lo..hi-1 as loose rows, one file each (as ingest leaves them)."""
    gen, folder, lo, hi = args
    for i in range(lo, hi):
        _write_part((gen, os.path.join(folder, f"{fingerprint(i)}.parquet"), i, i + 1))
    return hi - lo


def part_name(j: int) -> str:
    return f"bench-{j:05d}.parquet"


def write_features(gen: Generator, shared: Path, n_base: int, n_total: int, procs: int) -> float:
    """Features rows: trailers 0..n_base-1 compacted into parts (an archive ingested before),
    n_base..n_total-1 loose (ingested tonight). Returns seconds."""
    (shared / "parts").mkdir(parents=True, exist_ok=True)
    (shared / "loose").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(_write_part, (gen, str(shared / "parts" / part_name(j)), lo,
                           min(n_base, lo + ROWS_PER_PART)))
            for j, lo in enumerate(range(0, n_base, ROWS_PER_PART))]
    jobs += [(_write_loose, (gen, str(shared / "loose"), lo, min(n_total, lo + 100)))
             for lo in range(n_base, n_total, 100)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        done = 0
        for m in pool.imap_unordered(_call, jobs):
            done += m
            if done % 5000 < ROWS_PER_PART:
                print(f"  features rows: {done}/{n_total}", flush=True)
    return time.perf_counter() - t0


def _call(job: tuple[Any, Any]) -> int:
    fn, args = job
    return fn(args)


def write_archive(gen: Generator, root: Path, ids: range, labelled: float, genres: list[str],
                  seed: int) -> None:
    """Input files and labels.csv for trailers ``ids`` under ``root`` (files already there stay:
    their mtime, and so the job's reused fingerprints, do not change)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    with open(root / "labels.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["trailer_id", "genres"])
        for i in ids:
            path = root / f"{trailer_id(i)}.mp4"
            if not path.exists():
                path.write_bytes(content(i))
            if rng.random() < labelled:
                out.writerow([trailer_id(i), "|".join(genres[g] for g in gen.truth(i)[1])])


def link_cache(shared: Path, cache: Path, n_base: int, ids: range) -> None:
    """An output root's cache of trailers ``ids``: hard links of the parts holding trailers
    below ``n_base`` (with an index naming just those) and of the loose rows above."""
    from mmx.stages import cache as features_cache

    parts = cache / features_cache.PARTS
    parts.mkdir(parents=True, exist_ok=True)
    base = [i for i in ids if i < n_base]
    for j in sorted({i // ROWS_PER_PART for i in base}):
        if not (parts / part_name(j)).exists():
            os.link(shared / "parts" / part_name(j), parts / part_name(j))
    index = pa.table({"fingerprint": [fingerprint(i) for i in base],
                      "part": [part_name(i // ROWS_PER_PART) for i in base]},
                     schema=features_cache.INDEX_SCHEMA)
    if base and not (parts / features_cache.INDEX).exists():
        pq.write_table(index, parts / features_cache.INDEX)
    for i in ids:
        name = f"{fingerprint(i)}.parquet"
        if i >= n_base and not (cache / name).exists():
            os.link(shared / "loose" / name, cache / name)


# ------------------------------------------------------------------------ one job, measured
def _child(spec: dict[str, Any]) -> None:
    """Run the job once in this (fresh) process; print its figures as the last line."""
    import logging

    from mmx import pipeline
    from mmx.config import build_config, parse_overrides

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    cfg = build_config(profile=spec["profile"], overrides=parse_overrides(spec["overrides"]))
    t0 = time.perf_counter()
    summary = pipeline.run(cfg)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"wall_s": round(wall, 2), "driver_peak_rss_mb": round(peak_kb / 1024, 1),
                      "metrics": summary.metrics, "published": summary.published}))


def run_job(spec: dict[str, Any], log: Path, saved: Path | None = None) -> dict[str, Any]:
    """The job in a fresh process; its figures are kept in ``saved`` and, when that file
    exists (``--resume``), read from it instead of running again."""
    if saved is not None and saved.exists():
        print(f"  (figures from {saved})", flush=True)
        return json.loads(saved.read_text())
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=fh, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"job failed ({proc.returncode}): see {log}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(figures, indent=1))
    return figures


def overrides(args: argparse.Namespace, archive: Path, out: Path, mode: str,
              recompute: bool = False) -> list[str]:
    return [
        f"archive={archive}", f"labels={archive / 'labels.csv'}", f"out={out}", f"mode={mode}",
        f"recompute={str(recompute).lower()}", f"train.num_workers={args.workers}",
        f"train.coarse_epochs={args.coarse_epochs}",
        f"train.contrastive_epochs={args.contrastive_epochs}",
        f"train.patience={args.coarse_epochs}", "train.warmup_epochs=1",
        "keep_snapshots=0",
    ]


def cache_key(args: argparse.Namespace) -> str:
    from mmx.config import build_config
    from mmx.pipeline import ingest_key

    return ingest_key(build_config(profile=args.profile))


def machine() -> dict[str, Any]:
    import ray
    import torch

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
            "torch": torch.__version__, "load_avg_at_start": list(os.getloadavg())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--night", type=float, default=0.01, help="share of new trailers in the night")
    p.add_argument("--recompute-night", action="store_true")
    p.add_argument("--clips-lo", type=int, default=12)
    p.add_argument("--clips-hi", type=int, default=24)
    p.add_argument("--genres", type=int, default=12)
    p.add_argument("--subgenres-per-genre", type=int, default=4)
    p.add_argument("--labelled", type=float, default=0.6)
    p.add_argument("--profile", default="tiny")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--coarse-epochs", type=int, default=2)
    p.add_argument("--contrastive-epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/mmx-scale"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs of --workdir that finished (their figures are saved)")
    p.add_argument("--prepare-only", action="store_true",
                   help="write the synthetic features rows and stop")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return

    sizes = sorted(args.sizes)
    largest = sizes[-1]
    n_night = max(1, round(largest * args.night))
    genres = [f"genre{g:02d}" for g in range(args.genres)]
    gen = Generator(args.seed, args.genres, args.subgenres_per_genre,
                    (args.clips_lo, args.clips_hi))
    key = cache_key(args)
    shared = args.workdir / "features"
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "archive": {"clips_per_trailer": [args.clips_lo, args.clips_hi],
                    "expert_widths": {**WIDTHS, "audio": [AUDIO_FRAMES, AUDIO_DIM]},
                    "genres": args.genres, "subgenres": args.genres * args.subgenres_per_genre,
                    "labelled_share": args.labelled, "profile": args.profile,
                    "train_workers": args.workers, "coarse_epochs": args.coarse_epochs,
                    "contrastive_epochs": args.contrastive_epochs},
        "sizes": sizes,
    }
    n_rows = largest + n_night * (2 if args.recompute_night else 1)
    print(f"writing features rows for {n_rows} trailers into {shared}", flush=True)
    result["archive"]["features_write_s"] = round(
        write_features(gen, shared, largest, n_rows, procs=os.cpu_count() or 2), 1)
    if args.prepare_only:
        return

    runs: dict[str, Any] = {}
    for n in sizes:
        root = args.workdir / f"n{n}"
        saved = args.workdir / "figures" / f"full-{n}.json"
        if not (args.resume and saved.exists()):
            saved.unlink(missing_ok=True)
            if root.exists():
                shutil.rmtree(root)
        archive, out = root / "archive", root / "out"
        write_archive(gen, archive, range(n), args.labelled, genres, args.seed)
        link_cache(shared, out / "cache" / f"features-{key}", largest, range(n))
        print(f"full run, {n} trailers …", flush=True)
        runs[str(n)] = run_job({"profile": args.profile,
                                "overrides": overrides(args, archive, out, "full")},
                               root / "full.log", saved)
        print(f"  {runs[str(n)]['wall_s']} s, driver peak {runs[str(n)]['driver_peak_rss_mb']} MB",
              flush=True)

    root = args.workdir / f"n{largest}"
    archive, out = root / "archive", root / "out"
    write_archive(gen, archive, range(largest + n_night), args.labelled, genres, args.seed)
    link_cache(shared, out / "cache" / f"features-{key}", largest,
               range(largest, largest + n_night))
    print(f"night: {n_night} new trailers on {largest} …", flush=True)
    figures = args.workdir / "figures"
    night = run_job({"profile": args.profile,
                     "overrides": overrides(args, archive, out, "incremental")}, root / "night.log",
                    figures / "night.json")
    recompute = None
    if args.recompute_night:
        # a second night of as many new trailers, everything recomputed with the reused model
        total = largest + 2 * n_night
        write_archive(gen, archive, range(total), args.labelled, genres, args.seed)
        link_cache(shared, out / "cache" / f"features-{key}", largest,
                   range(largest + n_night, total))
        print(f"night with --recompute: {n_night} more new trailers …", flush=True)
        again = run_job({"profile": args.profile,
                         "overrides": overrides(args, archive, out, "incremental", True)},
                        root / "night-recompute.log", figures / "night-recompute.json")
        recompute = {"n_base": largest + n_night, "n_new": n_night, "wall_s": again["wall_s"],
                     "driver_peak_rss_mb": again["driver_peak_rss_mb"],
                     "stage_s": again["metrics"]["timings_s"],
                     "recomputed": again["metrics"]["recomputed"]}

    full = runs[str(largest)]
    stage_s = {n: r["metrics"]["timings_s"] for n, r in runs.items()}
    result.update({
        "driver_peak_rss_mb": {n: r["driver_peak_rss_mb"] for n, r in runs.items()},
        "wall_s": {n: r["wall_s"] for n, r in runs.items()},
        "stage_s": stage_s,
        "s_per_1k_trailers": {n: {s: round(1000 * v / int(n), 3) for s, v in t.items()}
                              for n, t in stage_s.items()},
        "n_vectors": {n: r["metrics"]["n_vectors"] for n, r in runs.items()},
        "night": {"n_base": largest, "n_new": n_night, "wall_s": night["wall_s"],
                  "driver_peak_rss_mb": night["driver_peak_rss_mb"],
                  "stage_s": night["metrics"]["timings_s"], "mode": night["metrics"]["mode"],
                  "recomputed": night["metrics"]["recomputed"],
                  "n_vectors": night["metrics"]["n_vectors"]},
        "driver_rss_growth": round(full["driver_peak_rss_mb"]
                                   / runs[str(sizes[0])]["driver_peak_rss_mb"], 3),
        "incremental_vs_full": round(night["wall_s"] / full["wall_s"], 4),
    })
    if recompute is not None:
        result["night"]["recompute"] = recompute
    result["targets"] = {
        "driver_rss_growth": {"value": result["driver_rss_growth"],
                              "max": TARGETS["driver_rss_growth"],
                              "met": result["driver_rss_growth"] <= TARGETS["driver_rss_growth"]},
        "incremental_vs_full": {"value": result["incremental_vs_full"],
                                "max": TARGETS["incremental_vs_full"],
                                "met": result["incremental_vs_full"]
                                <= TARGETS["incremental_vs_full"]},
    }
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["targets"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
