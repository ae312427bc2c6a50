"""Expert ablation of the coarse genre model: a table shaped like Table 2 of Fish et al.

``mmx ablate`` trains the coarse model (plain PyTorch loop, one process, no Ray) on a
``features`` table once per *variant*: each single expert (every expert the table holds: the
built-in four and any registered one, per-title experts included; see
:mod:`mmx.experts.registry`), each pair of experts, with per-title
experts beside the trailer's the trailer experts only and the per-title (metadata) experts
only, the naive
concatenation of all experts without collaborative gating (``ModelConfig.gating=False``) and the
full gated model, plus the label-frequency baseline for reference. A variant restricted to some
experts sees only their inputs (the other experts are dropped from the batch, not zeroed).
Early stopping uses the validation split; the table reports, per variant, the AP of every
genre, F1w, AU(PRC)w, Pw and Rw (threshold ``train.threshold``) on the evaluation split
(default val+test, the labelled trailers outside training), averaged over ``seeds`` runs.

Inputs default to the latest run: the features it trained on (:mod:`mmx.layout`) with the
labels the run published (the ``genres`` of ``<out>/snapshots/<LATEST>/trailers.parquet``). Outputs:
``ablation.md`` and ``ablation.parquet`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mmx import schema, storage
from mmx.config import (
    ConfigError,
    RunConfig,
    build_config,
    config_from_dict,
    parse_args_with_overrides,
    parse_overrides,
)
from mmx.experts.registry import kind_of
from mmx.features import title_experts
from mmx.layout import OutputLayout, name_of
from mmx.model.network import AUDIO, MMXNetwork
from mmx.train import loop
from mmx.train.data import TrailerSet, trailer_set_from_table
from mmx.train.metrics import genre_metrics, label_frequency_baseline

log = logging.getLogger(__name__)

SUMMARY = ("f1_weighted", "au_prc_weighted", "precision_weighted", "recall_weighted",
           "au_prc_micro", "au_prc_macro", "au_prc_samples")
HEADERS = {  # the paper's column names, then the AP averages of the multimodal genre work
    "f1_weighted": "F1w",
    "au_prc_weighted": "AU(PRC)w",
    "precision_weighted": "Pw",
    "recall_weighted": "Rw",
    "au_prc_micro": "AU(PRC)micro",
    "au_prc_macro": "AU(PRC)macro",
    "au_prc_samples": "AU(PRC)samples",
}
BASELINE = "label frequency"
EVAL_SPLITS = {"val+test": ("val", "test"), "test": ("test",), "val": ("val",)}


@dataclass(frozen=True)
class Variant:
    """One row of the table: the experts the model sees and whether it gates them."""

    name: str
    experts: tuple[str, ...]
    gating: bool


TRAILER_ONLY = "trailer only"
METADATA_ONLY = "metadata only"


def variants(experts: Sequence[str], pairs: bool = True) -> list[Variant]:
    """Singles (each modality alone), pairs (optional), then, when per-title (metadata)
    experts are present beside the trailer's, the trailer experts only and the metadata
    experts only, then naive concatenation of all and gated all (in this order)."""
    experts = tuple(experts)
    rows = [Variant(e, (e,), True) for e in experts]
    if pairs and len(experts) > 2:
        rows += [Variant(f"{a}+{b}", (a, b), True) for a, b in itertools.combinations(experts, 2)]
    title = tuple(e for e in experts if kind_of(e) == "title")
    trailer = tuple(e for e in experts if e not in title)
    if title and trailer:
        if len(trailer) > 1:
            rows.append(Variant(TRAILER_ONLY, trailer, True))
        if len(title) > 1:
            rows.append(Variant(METADATA_ONLY, title, True))
    if len(experts) > 1:
        rows.append(Variant("concat (no gating)", experts, False))
        rows.append(Variant("gated (all)", experts, True))
    return rows


def available_experts(data: TrailerSet) -> tuple[str, ...]:
    """Experts present in ``data``: its per-clip experts, then audio if any trailer has it."""
    names = tuple(data.expert_dims)
    if data.audio_dim and any(t.has_audio and t.audio is not None for t in data.trailers):
        names += (AUDIO,)
    return names


def restrict(data: TrailerSet, experts: Sequence[str]) -> TrailerSet:
    """The same trailers, seen through ``experts`` only (others dropped from every batch)."""
    dims = {k: d for k, d in data.expert_dims.items() if k in experts}
    audio_dim = data.audio_dim if AUDIO in experts else None
    return TrailerSet(data.trailers, dims, audio_dim, data.genres)


def _rows_in(data: TrailerSet, splits: Sequence[str]) -> np.ndarray:
    """Rows of the labelled trailers in any of ``splits`` (stratified as the job does)."""
    assigned = data.splits if data.splits is not None else data.assign_splits()
    return np.flatnonzero(data.labelled & np.isin(assigned, list(splits))).astype(np.int64)


def run_ablation(
    data: TrailerSet,
    cfg: RunConfig,
    *,
    seeds: int = 1,
    eval_split: str = "val+test",
    pairs: bool = True,
    rows: Sequence[Variant] | None = None,
    progress: Callable[[str], None] | None = None,
) -> pa.Table:
    """Train and evaluate every variant; one table row per variant (see :func:`to_markdown`).

    Columns: ``variant``, ``experts`` list<string>, ``gating`` bool, ``ap_<genre>`` float64 per
    genre (vocabulary order), ``f1_weighted``, ``au_prc_weighted``, ``precision_weighted``,
    ``recall_weighted``, ``au_prc_micro``, ``au_prc_macro``, ``au_prc_samples`` (means over
    seeds), ``au_prc_weighted_std``, ``best_epoch`` (mean),
    ``n_train``, ``n_eval``, ``seeds``, ``train_s``. The baseline row has ``gating`` null.
    """
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval_split must be one of {sorted(EVAL_SPLITS)}, got {eval_split!r}")
    data.assign_splits(cfg.train.split_fractions)  # the job's stratified split
    train, val = data.split("train"), data.split("val")
    evaluation = data.subset(_rows_in(data, EVAL_SPLITS[eval_split]))
    if len(train) < 2 or len(evaluation) == 0:
        raise ValueError(
            f"{len(train)} labelled training and {len(evaluation)} {eval_split} trailers: "
            "too few to ablate (label more trailers)"
        )
    if rows is None:
        rows = variants(available_experts(data), pairs=pairs)
    genres = list(data.genres)
    records: list[dict[str, Any]] = []

    base_scores = label_frequency_baseline(train.labels, len(evaluation))
    base = genre_metrics(evaluation.labels, base_scores, cfg.train.threshold, genres)
    records.append(_record(BASELINE, (), None, [base], [], len(train), len(evaluation), 0.0))

    for variant in rows:
        started = time.perf_counter()
        runs, best_epochs = [], []
        for seed in range(seeds):
            tcfg = dataclasses.replace(cfg.train, seed=cfg.train.seed + seed)
            mcfg = dataclasses.replace(cfg.model, gating=variant.gating)
            view = restrict(data, variant.experts)
            loop.seed_everything(tcfg.seed)
            model = MMXNetwork(view.expert_dims, view.audio_dim, len(genres), mcfg,
                               title_experts(view.expert_dims))
            v_train, v_val = restrict(train, variant.experts), restrict(val, variant.experts)
            fit = loop.fit_coarse(model, v_train, v_val, tcfg)
            loop.fit_title_fusion(model, v_train, v_val, tcfg,
                                  batch_size=cfg.resources.embed_batch)
            runs.append(
                loop.evaluate(
                    model,
                    restrict(evaluation, variant.experts),
                    threshold=tcfg.threshold,
                    batch_size=cfg.resources.embed_batch,
                )
            )
            best_epochs.append(fit.best_epoch)
        elapsed = time.perf_counter() - started
        records.append(
            _record(variant.name, variant.experts, variant.gating, runs, best_epochs,
                    len(train), len(evaluation), elapsed)
        )
        if progress is not None:
            progress(
                f"{variant.name}: AU(PRC)w {records[-1]['au_prc_weighted']:.3f} "
                f"({elapsed:.1f} s)"
            )

    table = pa.Table.from_pylist(records, schema=ablation_schema(genres))
    meta = {
        "mmx.genre_vocab": json.dumps(genres),
        "mmx.eval_split": eval_split,
        "mmx.threshold": str(cfg.train.threshold),
        "mmx.genre_loss_weights": cfg.train.genre_loss_weights,
        "mmx.profile": cfg.profile,
    }
    return table.replace_schema_metadata(meta)


def ablation_schema(genres: Sequence[str]) -> pa.Schema:
    """Schema of the ablation table for a genre vocabulary."""
    fields = [
        ("variant", pa.string()),
        ("experts", pa.list_(pa.string())),
        ("gating", pa.bool_()),
        *[(f"ap_{g}", pa.float64()) for g in genres],
        *[(name, pa.float64()) for name in SUMMARY],
        ("au_prc_weighted_std", pa.float64()),
        ("best_epoch", pa.float64()),
        ("n_train", pa.int64()),
        ("n_eval", pa.int64()),
        ("seeds", pa.int64()),
        ("train_s", pa.float64()),
    ]
    return pa.schema(fields)


def _record(
    name: str,
    experts: Sequence[str],
    gating: bool | None,
    runs: Sequence[dict[str, Any]],
    best_epochs: Sequence[int | None],
    n_train: int,
    n_eval: int,
    elapsed: float,
) -> dict[str, Any]:
    """Mean of the metrics of ``runs`` (one per seed) as one table row."""
    row: dict[str, Any] = {"variant": name, "experts": list(experts), "gating": gating}
    for genre in runs[0]["ap_per_genre"]:
        row[f"ap_{genre}"] = float(np.mean([r["ap_per_genre"][genre] for r in runs]))
    for key in SUMMARY:
        row[key] = float(np.mean([r[key] for r in runs]))
    row["au_prc_weighted_std"] = float(np.std([r["au_prc_weighted"] for r in runs]))
    epochs = [e for e in best_epochs if e is not None]
    row["best_epoch"] = float(np.mean(epochs)) if epochs else None
    row.update(n_train=n_train, n_eval=n_eval, seeds=len(best_epochs), train_s=elapsed)
    return row


def to_markdown(table: pa.Table) -> str:
    """The table as Markdown: one row per variant, per-genre AP, then F1w, AU(PRC)w, Pw, Rw and
    AU(PRC) micro, macro and samples."""
    genres = json.loads((table.schema.metadata or {}).get(b"mmx.genre_vocab", b"[]"))
    if not genres:
        genres = [c[3:] for c in table.column_names if c.startswith("ap_")]
    header = ["Model", *genres, *HEADERS.values()]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in table.to_pylist():
        cells = [row["variant"]]
        cells += [_fmt(row[f"ap_{g}"]) for g in genres]
        cells += [_fmt(row[k]) for k in HEADERS]
        lines.append("| " + " | ".join(cells) + " |")
    meta = table.schema.metadata or {}
    split = meta.get(b"mmx.eval_split", b"?").decode()
    threshold = meta.get(b"mmx.threshold", b"?").decode()
    first = table.to_pylist()[0] if table.num_rows else {}
    lines.append("")
    lines.append(
        f"AP per genre, weighted F1/AU(PRC)/P/R (threshold {threshold}) and AU(PRC) micro, "
        f"macro and samples (per-trailer AP over genres, averaged) on the {split} "
        f"split ({first.get('n_eval', '?')} trailers; {first.get('n_train', '?')} trained on), "
        f"mean over {max((r['seeds'] for r in table.to_pylist()), default=0)} seed(s). "
        "Single experts and pairs use collaborative gating among the experts they have."
        + (" The val split also picks each run's early-stopping epoch." if "val" in split else "")
    )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def write_ablation(table: pa.Table, out_dir: str) -> tuple[str, str]:
    """Write ``ablation.parquet`` and ``ablation.md`` under ``out_dir``; return both URIs."""
    parquet = storage.join(out_dir, "ablation.parquet")
    markdown = storage.join(out_dir, "ablation.md")
    storage.write_table(table, parquet)
    storage.write_text(markdown, to_markdown(table))
    return parquet, markdown


# ------------------------------------------------------------------------------- inputs
def latest_features(out: str) -> tuple[str, str | None]:
    """The features table of the latest run under ``out`` and its snapshot URI (or None).

    The features of the run LATEST names when it trained (an incremental run that reused a
    model trained none: then the run that trained that model, named by ``model.json``), else
    the newest run that left features (its snapshot if it published).
    """
    layout = OutputLayout(out)
    snapshot = layout.latest()
    if snapshot:
        candidates = [name_of(snapshot)]
        pointer = storage.join(snapshot, "model.json")
        if storage.exists(pointer):
            candidates.append(storage.read_json(pointer).get("trained_run", ""))
        for name in filter(None, candidates):
            if storage.exists(layout.features(name)):
                return layout.features(name), snapshot
    found = layout.runs_with_features()
    if not found:
        raise FileNotFoundError(
            f"no features under {out}/work: run the job first or give --features"
        )
    snap = layout.snapshot(found[-1])
    complete = storage.exists(storage.join(snap, storage.COMPLETE))
    return layout.features(found[-1]), snap if complete else None


def snapshot_labels(snapshot: str) -> dict[str, list[str]]:
    """The labels a published snapshot was trained with (its trailers' ``genres``)."""
    table = storage.read_table(
        storage.join(snapshot, "trailers.parquet"), columns=["trailer_id", "genres"]
    )
    return {
        t: list(g or [])
        for t, g in zip(table["trailer_id"].to_pylist(), table["genres"].to_pylist(), strict=True)
    }


def load_trailers(features: str, labels: dict[str, list[str]]) -> TrailerSet:
    """A :class:`TrailerSet` of the ok rows of a features table; genres = the labels' vocabulary."""
    from mmx.archive import genre_vocabulary
    from mmx.experts.registry import kind_of

    table = storage.read_table(features)
    table = table.filter(pc.equal(table["status"], "ok"))
    unknown = [f.name for f in table.schema
               if schema.is_vector_column(table.schema, f.name) and kind_of(f.name) is None]
    if unknown:
        log.warning("%s: columns %s hold vectors but no registered expert has their name "
                    "(import the module that registers it, or name it mmx.experts.<name>): "
                    "left out", features, unknown)
    vocab = genre_vocabulary(labels)
    if not vocab:
        raise ValueError("no genre labels: give --labels with labelled trailers")
    return trailer_set_from_table(table, labels, vocab)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmx ablate",
        description="Train the coarse model per expert subset (singles, pairs, concatenation "
        "without gating, gated) and write a Table-2-style comparison as Markdown and Parquet. "
        "Extra options --section.key=value override the config (e.g. --train.coarse_epochs=20).",
    )
    p.add_argument("--features", default="", help="features table (default: the latest run's)")
    p.add_argument("--labels", default="", help="CSV/Parquet labels (default: the snapshot's)")
    p.add_argument("--out", default="", help="where to write (default <root>/ablation)")
    p.add_argument("--root", default="", help="job output root to find the latest run "
                   "(default .mmx/out)")
    p.add_argument("--profile", default=None, help="config profile (default: the run's config)")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--seeds", type=int, default=1, help="runs per variant, averaged")
    p.add_argument("--eval-split", default="val+test", choices=sorted(EVAL_SPLITS))
    p.add_argument("--no-pairs", action="store_true", help="skip the expert pairs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _config(args: argparse.Namespace, extra: list[str], snapshot: str | None) -> RunConfig:
    """The run's saved config (when there is a snapshot and no --profile/--config) or the
    profile's, with ``--section.key=value`` overrides on top."""
    overrides = parse_overrides(extra)
    saved = storage.join(snapshot, "config.json") if snapshot else None
    if args.profile or args.config or saved is None or not storage.exists(saved):
        return build_config(args.profile, args.config, overrides)
    values = storage.read_json(saved)
    for section, updates in overrides.items():
        if isinstance(updates, dict) and isinstance(values.get(section), dict):
            values[section] = {**values[section], **updates}
        else:
            values[section] = updates
    return config_from_dict(values)


def cli(argv: list[str] | None = None) -> int:
    """``mmx ablate``: resolve the inputs, run the ablation, write and print the table."""
    from mmx import logs
    from mmx.archive import read_labels

    parser = _parser()
    args, extra = parse_args_with_overrides(parser, argv)
    logs.setup(args.verbose)
    root = args.root or ".mmx/out"
    try:
        snapshot = None
        features = args.features
        if not features:
            features, snapshot = latest_features(root)
        if args.labels:
            labels = read_labels(args.labels)
        elif snapshot is not None:
            labels = snapshot_labels(snapshot)
        else:
            parser.error(f"no published snapshot for {features}: give --labels")
        cfg = _config(args, extra, snapshot)
    except (ConfigError, OSError, ValueError) as err:
        parser.error(str(err))
    torch.set_num_threads(max(1, args.threads))
    data = load_trailers(features, labels)
    log.info("ablating %s: %d trailers, experts %s, profile %s", features, len(data),
             ", ".join(available_experts(data)), cfg.profile)
    table = run_ablation(
        data, cfg, seeds=args.seeds, eval_split=args.eval_split, pairs=not args.no_pairs,
        progress=log.info,
    )
    parquet, markdown = write_ablation(table, args.out or OutputLayout(root).ablation)
    print(to_markdown(table))
    print(f"wrote {markdown} and {parquet}")
    return 0
