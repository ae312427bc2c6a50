#!/usr/bin/env bash
# Nightly submission (cron / scheduler) to the `ray up ray_cluster.yaml` cluster. Credentials
# come from the standard AWS chain of the machine or role running this; nothing secret is passed
# on the command line. (On Kubernetes the schedule is infra/kuberay/nightly.yaml instead.)
#
# The cluster's dashboard listens on the head's loopback only: run this on a machine where
# `ray dashboard ray_cluster.yaml` forwards it (RAY_ADDRESS=http://127.0.0.1:8265), or on the head.
# Ray's token authentication: the token comes from the environment, never from an argument, and
# is never printed: RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH (default
# ~/.ray/mmx-cluster/auth_token, the file ray_cluster.yaml copies to the nodes).
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://127.0.0.1:8265 (ray dashboard ray_cluster.yaml)}"
: "${MMX_ARCHIVE:?s3:// prefix of the trailer archive}"
: "${MMX_OUT:?s3:// output root}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" ]]; then
  export RAY_AUTH_TOKEN_PATH="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/mmx-cluster/auth_token}"
  if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
    echo "nightly.sh: no Ray token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to the cluster's" \
      "token file (default ~/.ray/mmx-cluster/auth_token; it is missing or empty)" >&2
    exit 2
  fi
fi
cd "$(dirname "$0")/.."
exec ray job submit --address "$RAY_ADDRESS" --working-dir . -- \
  python jobs/index_archive.py --config infra/production.yaml \
  --archive "$MMX_ARCHIVE" --out "$MMX_OUT" ${MMX_LABELS:+--labels "$MMX_LABELS"} "$@"
