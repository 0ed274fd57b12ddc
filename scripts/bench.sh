#!/usr/bin/env bash
# `make bench`: builds the real binaries and runs bench/cmd/bench, which measures the service hot path,
# order placement over a real PostgreSQL (beside the same SQL from a bare client),
# `meshplane render`, the operator at 1,000 and 5,000 TrafficPolicies and the Consul sync of 2,000
# Services, each against a floor measured in the same run, and prints one table. The table also goes to
# bench/out/<UTC date and time>.md (git-ignored) and bench/results/latest.md (committed: the results of
# record; only a full run, without arguments, writes it). Extra arguments go to bench/cmd/bench, e.g.
#   scripts/bench.sh -quick                       # a one-minute check that every section runs
#   scripts/bench.sh -sections operator -sizes 2000 -steady 5s   # one section, one size
#   scripts/bench.sh -profile                     # CPU profiles in the work directory
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin=$(mktemp -d "${TMPDIR:-/tmp}/meshplane-bench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/manager" ./operator/cmd/manager
go build -o "$bin/meshplane" ./operator/cmd/meshplane
go build -o "$bin/operator-bench" ./operator/test/bench
go build -o "$bin/bench" ./bench/cmd/bench
for svc in catalog payments orders; do
  go build -o "$bin/$svc" "./services/$svc"
done

out="bench/out/$(date -u +%Y-%m-%dT%H%MZ).md"
"$bin/bench" -operator-bench "$bin/operator-bench" -manager "$bin/manager" -meshplane "$bin/meshplane" -services "$bin" -out "$out" "$@"
# The results of record (docs/benchmarks.md links them): a full run's table as it printed it. A run with
# arguments (a quick one, a section) leaves them alone.
if [[ $# == 0 ]]; then
  { echo '<!-- Written by make bench (scripts/bench.sh) from its table; commit it to change the results of record. -->'
    cat "$out"; } >bench/results/latest.md
fi
