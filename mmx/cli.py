"""The ``mmx`` command: run the job, make a synthetic archive, and query snapshots.

    mmx run [job options]                  same as jobs/index_archive.py
    mmx synth --n 48 --out DIR             write a synthetic trailer archive
    mmx similar TRAILER_ID [--k 10]        nearest trailers in the latest snapshot
    mmx similar-video PATH [--k 10]        nearest trailers to a video outside the archive
    mmx sql "SELECT …"                     DuckDB over the snapshot tables
    mmx subgenres                          the sub-genre clusters
    mmx ablate [--features T] [--out DIR]  expert ablation table (paper Table 2) of a run
    mmx report [--snapshot N] [--html F]   the snapshot's HTML report (one self-contained page)

Exit codes of ``mmx run`` (and ``jobs/index_archive.py``): see :data:`EXIT_CODES`.

``sql``, ``similar`` and ``subgenres`` need only the query install (``pip install mmx[query]``:
no torch, no Ray; this module imports neither at the top); ``run``, ``ablate``, ``synth`` and
``similar-video`` need the ``job`` extra and say so (exit 2) when it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mmx import logs
from mmx.config import ConfigError, build_config, parse_args_with_overrides, parse_overrides

# What the job's exit status means (also in `mmx run --help` and the README). A scheduler can
# tell "another run is on it" (3) from a run that broke (1).
EXIT_CODES = {
    0: "published a snapshot, or nothing changed (incremental)",
    1: "the run failed (an error with its traceback)",
    2: "bad arguments, config or labels file, or an output root without conditional writes",
    3: "another run holds the output root's lease, also after --lease-wait (nothing written)",
    4: "this run's lease lapsed and another run took it over (nothing published)",
    5: "another run published meanwhile: LATEST moved (nothing published)",
    6: "refused to write into a snapshot that is already complete (nothing published)",
    7: "incremental: the labels name genres the model does not know and "
       "train.retrain_on_new_genres is off (nothing written; --retrain, or fix the labels)",
    8: "published, but more than max_failed_fraction of this run's inputs failed",
}
EXIT_LEASE_HELD, EXIT_LEASE_LOST, EXIT_LATEST_MOVED, EXIT_SNAPSHOT_SEALED = 3, 4, 5, 6
EXIT_UNKNOWN_GENRES = 7
EXIT_TOO_MANY_FAILED = 8


def _job_parser(prog: str = "index_archive.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Index an archive of movie trailers and publish a snapshot. "
        "Extra options of the form --section.key=value override the config "
        "(e.g. --train.num_workers=4 --resources.appearance_gpus=0.5).",
        epilog="exit codes: " + "; ".join(f"{code} = {what}" for code, what in EXIT_CODES.items()),
    )
    p.add_argument("--archive", default="", help="folder or s3:// prefix (default: demo)")
    p.add_argument("--labels", default="", help="CSV trailer_id,genres or Parquet")
    p.add_argument("--out", default="", help="output root, local or s3:// (default .mmx/out)")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--mode", default=None, choices=["full", "incremental"])
    p.add_argument("--profile", default=None, help="demo (default), paper or tiny")
    p.add_argument(
        "--retrain", action="store_true",
        help="with --mode incremental: train a new model and re-cluster anyway",
    )
    p.add_argument(
        "--rehash", action="store_true",
        help="read and hash every file again, even those whose size and version tag (S3 ETag, "
        "local mtime) are unchanged since the latest snapshot",
    )
    p.add_argument(
        "--recompute", action="store_true",
        help="with --mode incremental and the model reused: embed, index and find neighbours "
        "for every trailer again instead of only the new and changed ones",
    )
    p.add_argument(
        "--max-failed-fraction", type=float, default=None, metavar="F",
        help="exit with code 8 (after publishing) when more than this fraction of the inputs "
        "failed (default 1: never; config key max_failed_fraction)",
    )
    p.add_argument(
        "--retry-failed", action="store_true",
        help="decode again the trailers whose cached result is 'failed' (transient failures, "
        "reason 'transient: ...', are retried by every run anyway)",
    )
    p.add_argument(
        "--lease-wait", type=float, default=None, metavar="SECONDS",
        help="when another run holds the output root, wait up to this long for it to end "
        "(default 0: exit at once with code 3; config key lease_wait_s)",
    )
    p.add_argument(
        "--dry-run", action="store_true",
        help="resolve the config, probe the archive and the output root, list the inputs and "
        "what would be decoded or trained, then exit (nothing written, no Ray started)",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run_job(argv: list[str] | None = None) -> int:
    """Parse job arguments, build the config, run the pipeline and print the summary."""
    parser = _job_parser()
    args, extra = parse_args_with_overrides(parser, argv)
    logs.setup(args.verbose)
    try:
        overrides: dict[str, Any] = parse_overrides(extra)
        for key in ("archive", "labels", "out", "mode", "rehash", "recompute", "retry_failed"):
            value = getattr(args, key)
            if value:
                overrides[key] = value
        if args.lease_wait is not None:
            overrides["lease_wait_s"] = args.lease_wait
        if args.max_failed_fraction is not None:
            overrides["max_failed_fraction"] = args.max_failed_fraction
        cfg = build_config(args.profile, args.config, overrides)
    except (ConfigError, OSError) as err:
        parser.error(str(err))
    if args.dry_run:
        return _dry_run(parser, cfg, args.retrain, args.json)
    from mmx import pipeline
    from mmx.archive import LabelsError
    from mmx.lease import LeaseError, LeaseHeld, LeaseLost
    from mmx.metadata import MetadataError
    from mmx.policy import UnknownGenres
    from mmx.storage import LatestMoved, SnapshotSealed

    try:
        summary = pipeline.run(cfg, retrain=args.retrain)
    except (LabelsError, MetadataError) as err:  # before Ray starts or anything is written
        parser.error(str(err))
    # one line each, no traceback: another run is (or was) writing the same output root
    except LeaseHeld as err:
        return _stopped(parser, err, EXIT_LEASE_HELD)
    except LeaseLost as err:
        return _stopped(parser, err, EXIT_LEASE_LOST)
    except LatestMoved as err:
        return _stopped(parser, err, EXIT_LATEST_MOVED)
    except SnapshotSealed as err:
        return _stopped(parser, err, EXIT_SNAPSHOT_SEALED)
    except LeaseError as err:  # no lease possible on this output root
        return _stopped(parser, err, 2)
    except UnknownGenres as err:  # stopped before decoding
        return _stopped(parser, err, EXIT_UNKNOWN_GENRES)
    print(summary.render())
    print(f"\noutputs: {summary.out} (LATEST → {summary.snapshot})")
    total = sum(summary.counts.values())
    failed = summary.counts.get("failed", 0)
    if total and failed / total > cfg.max_failed_fraction:
        print(f"{parser.prog}: {failed} of {total} inputs failed, more than "
              f"max_failed_fraction {cfg.max_failed_fraction:g}", file=sys.stderr)
        return EXIT_TOO_MANY_FAILED
    return 0


def _dry_run(parser: argparse.ArgumentParser, cfg: Any, retrain: bool, as_json: bool) -> int:
    from mmx import dryrun, pipeline
    from mmx.archive import LabelsError
    from mmx.metadata import MetadataError

    try:
        found = dryrun.plan(pipeline.resolve_paths(cfg), retrain)
    except (LabelsError, MetadataError, FileNotFoundError) as err:
        parser.error(str(err))
    print(json.dumps(found, indent=2) if as_json else dryrun.render(found))
    return 0


def _stopped(parser: argparse.ArgumentParser, err: Exception, code: int) -> int:
    print(f"{parser.prog}: {err}", file=sys.stderr)
    return code


def _print_table(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        print("(no rows)")
        return
    cols = list(rows[0])
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        text = ", ".join(_fmt(v) for v in value[:8])
        return f"[{text}{', …' if len(value) > 8 else ''}]"
    return str(value)


def _report(out: str, snapshot: str | None, html_file: str) -> int:
    """``mmx report``: render the snapshot (with its run's report JSON when still there)."""
    from mmx import report, storage
    from mmx.layout import OutputLayout

    try:
        uri = report.resolve_snapshot(out or None, snapshot)
        root = uri.rstrip("/").rsplit("/", 2)[0]  # <out>/snapshots/<name>
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        page = report.render_snapshot(uri, run_report=OutputLayout(root).run_report(name))
    except report.ReportError as err:
        print(f"mmx: {err}", file=sys.stderr)
        return 2
    storage.write_text(html_file, page)
    print(f"wrote {html_file} ({len(page) // 1024} KiB) for snapshot {uri}")
    return 0


def _similar_video(snap: Any, path: str, k: int, as_json: bool) -> int:
    """Embed ``path`` with the snapshot's ingest + model and print its nearest trailers."""
    from mmx.query import query_of

    table = snap.similar_to_video(path, k=k)
    query = query_of(table)
    if as_json:
        print(json.dumps({"query": query, "neighbours": table.to_pylist()}, indent=2))
        return 0
    genres = ", ".join(query.get("predicted_genres") or []) or "none"
    print(f"query: {path} ({query.get('n_clips')} shots, predicted genres: {genres})")
    _print_table(table.to_pylist(), False)
    return 0


# what the slim install (`pip install mmx[query]`: sql, similar, subgenres) lacks for the others
JOB_MODULES = ("torch", "ray", "av")
JOB_COMMANDS = ("run", "ablate", "synth", "similar-video")


def missing_job_install() -> str | None:
    """None when the `job` extra is installed, else the name of a module it would bring."""
    import importlib.util

    return next((m for m in JOB_MODULES if importlib.util.find_spec(m) is None), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in JOB_COMMANDS and (missing := missing_job_install()):
        print(f"mmx {argv[0]}: needs the full install, pip install 'mmx[job]' (torch, Ray, "
              f"the decoders); this one is the query install (no module {missing!r}). "
              "sql, similar and subgenres work without it.", file=sys.stderr)
        return 2
    if argv and argv[0] == "run":
        return run_job(argv[1:])
    if argv and argv[0] == "ablate":
        from mmx.ablate import cli as ablate_cli

        return ablate_cli(argv[1:])
    p = argparse.ArgumentParser(prog="mmx", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the indexing job (see `mmx run --help`)")
    sub.add_parser("ablate", help="expert ablation table (see `mmx ablate --help`)")
    s = sub.add_parser("synth", help="write a synthetic trailer archive")
    s.add_argument("--n", type=int, default=48)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--subgenres", action="store_true",
                   help="hidden fine-grained sub-genres (genre combination x content style), "
                   "noisy labels, some unlabelled; truth in truth.json (the quality benchmark's)")
    s.add_argument("--combos", type=int, default=None,
                   help="with --subgenres: genre combinations (default: the generator's)")
    s.add_argument("--styles-per-combo", type=int, default=None,
                   help="with --subgenres: content styles per genre combination")
    s.add_argument("--workers", type=int, default=1, help="encoding processes")
    s.add_argument("--metadata", action="store_true",
                   help="also write the metadata sidecar: metadata.csv (titles, plots, years, "
                   "runtimes) and posters/*.jpg, correlated with the genres but noisy")
    for name, helptext in (
        ("similar", "nearest trailers to one in the archive"),
        ("similar-video", "nearest trailers to a video file that is not in the archive"),
        ("sql", "run DuckDB SQL over the snapshot tables"),
        ("subgenres", "list the sub-genre clusters"),
    ):
        q = sub.add_parser(name, help=helptext)
        if name == "similar":
            q.add_argument("trailer_id")
            q.add_argument("--k", type=int, default=10)
        if name == "similar-video":
            q.add_argument("path", help="local video file")
            q.add_argument("--k", type=int, default=10)
        if name == "sql":
            q.add_argument("query")
        q.add_argument("--out", default="", help="output root (default .mmx/out)")
        q.add_argument("--snapshot", default=None, help="snapshot name (default LATEST)")
        q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r = sub.add_parser("report", help="write a snapshot's HTML report (self-contained page)")
    r.add_argument("--out", default="", help="output root (default .mmx/out)")
    r.add_argument("--snapshot", default=None, help="snapshot name (default LATEST)")
    r.add_argument("--html", default="report.html", help="file to write (default report.html)")
    args = p.parse_args(argv)
    logs.setup()

    if args.cmd == "report":
        return _report(args.out, args.snapshot, args.html)

    if args.cmd == "synth":
        from mmx.synth import generate_archive, generate_subgenre_archive

        if args.subgenres:
            sizes = {"n_combos": args.combos, "styles_per_combo": args.styles_per_combo}
            trailers = generate_subgenre_archive(
                args.out, n=args.n, seed=args.seed, workers=args.workers,
                metadata=args.metadata, **{k: v for k, v in sizes.items() if v is not None})
        else:
            trailers = generate_archive(args.out, n=args.n, seed=args.seed,
                                        metadata=args.metadata)
        print(f"wrote {len(trailers)} trailers to {args.out}")
        return 0

    from mmx.query import Snapshot, SnapshotError

    try:
        snap = Snapshot.open(args.out or None, args.snapshot)
        if args.cmd == "similar":
            rows = snap.similar(args.trailer_id, k=args.k).to_pylist()
        elif args.cmd == "similar-video":
            return _similar_video(snap, args.path, args.k, args.json)
        elif args.cmd == "sql":
            rows = snap.sql(args.query).to_pylist()
        else:
            rows = snap.subgenres().to_pylist()
    except SnapshotError as err:
        print(f"mmx: {err}", file=sys.stderr)
        return 2
    _print_table(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
