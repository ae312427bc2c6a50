#!/usr/bin/env bash
# Nightly submission (cron / scheduler). Credentials come from the standard AWS chain of the
# machine or role running this; nothing secret is passed on the command line.
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://head:8265}"
: "${MMX_ARCHIVE:?s3:// prefix of the trailer archive}"
: "${MMX_OUT:?s3:// output root}"
cd "$(dirname "$0")/.."
exec ray job submit --address "$RAY_ADDRESS" --working-dir . -- \
  python jobs/index_archive.py --config infra/production.yaml \
  --archive "$MMX_ARCHIVE" --out "$MMX_OUT" ${MMX_LABELS:+--labels "$MMX_LABELS"} "$@"
