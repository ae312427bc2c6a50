"""Nightly job: index an archive of trailers and publish a snapshot (DESIGN §3).

    python jobs/index_archive.py [--archive DIR|s3://…] [--labels FILE] [--out DIR|s3://…]
                                 [--config FILE] [--mode full|incremental] [--profile NAME]
                                 [--section.key=value …]

With no arguments it generates the embedded demo archive once and indexes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from mmx.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job(argv)


if __name__ == "__main__":
    sys.exit(main())
