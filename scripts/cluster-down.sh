#!/usr/bin/env bash
# Deletes the kind cluster scripts/cluster-up.sh created (KIND_CLUSTER_NAME, default meshplane), with
# everything in it. Deleting a cluster that does not exist succeeds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cluster=${KIND_CLUSTER_NAME:-meshplane}
bin=$(scripts/tools.sh --print-bin)
kind=$(command -v kind || true)
if [[ -z $kind ]]; then
  kind=$bin/kind
fi
if [[ ! -x $kind ]]; then
  echo "cluster-down: kind not found (on PATH or in $bin); nothing to delete" >&2
  exit 0
fi
"$kind" delete cluster --name "$cluster"
