#!/usr/bin/env bash
# Tests scripts/tools.sh's per-component lock the way it broke: two runs at once on a stale stamp (`make up`
# in one terminal, `make test` in another) must build the component once, the second run waiting and then
# finding it up to date, both succeeding. Before the lock both rebuilt into the same directory and one failed
# with "mv: cannot stat .../X.new".
#
#   tools-test.sh              test scripts/tools.sh
#   tools-test.sh OTHER.sh     test another copy (e.g. an older version, placed in scripts/ so it finds
#                              versions.env)
#
# Uses its own temporary MESHPLANE_CACHE, never the shared one, and the cheapest real component, protoc-gen
# (two small go builds, about 1 s with a warm Go build cache). GOPROXY=off: it builds from the Go module cache,
# which `make tools` (run first by `make test` and CI) has filled, so it needs no network.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${1:-$root/scripts/tools.sh}
work=$(mktemp -d "${TMPDIR:-/tmp}/meshplane-tools-test.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

export MESHPLANE_CACHE=$work/cache GOPROXY=off
# A stale stamp: protoc-gen was built once under other pins.
mkdir -p "$MESHPLANE_CACHE/build/protoc-gen"
touch "$MESHPLANE_CACHE/build/protoc-gen/.stamp-0000000000000000"

runs=(a b)
start=$SECONDS
for run in "${runs[@]}"; do
  # A deadline, so a run stuck on the lock fails the test instead of hanging it.
  timeout 300 "$tools" protoc-gen >"$work/$run.log" 2>&1 &
  pids+=($!)
done
rcs=()
for pid in "${pids[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  rcs+=("$rc")
done
pids=()
took=$((SECONDS - start))

failures=()
builders=0
for i in "${!runs[@]}"; do
  run=${runs[i]}
  log=$work/$run.log
  case ${rcs[i]} in
    0) ;;
    124) failures+=("run $run timed out after 300s") ;;
    *) failures+=("run $run exited ${rcs[i]}") ;;
  esac
  if grep -q 'protoc-gen: building' "$log"; then
    builders=$((builders + 1))
  # The run that did not build must have waited for the lock and then found the stamp fresh, in that order.
  elif ! grep -q 'protoc-gen: waiting for another tools.sh run' "$log"; then
    failures+=("run $run neither built protoc-gen nor said it waited for the other run")
  elif ! sed -n '/protoc-gen: waiting/,$p' "$log" | grep -q 'protoc-gen: up to date'; then
    failures+=("run $run waited but did not then report protoc-gen up to date")
  fi
done
[[ $builders == 1 ]] || failures+=("$builders runs built protoc-gen, want exactly 1")
for b in protoc-gen-go protoc-gen-go-grpc; do
  if ! out=$("$MESHPLANE_CACHE/bin/$b" --version 2>&1); then
    failures+=("$b --version failed: ${out:-binary missing}")
  fi
done

if [[ ${#failures[@]} -gt 0 ]]; then
  for run in "${runs[@]}"; do
    echo "--- run $run output:" >&2
    cat "$work/$run.log" >&2
  done
  printf 'tools-test: %s\n' "${failures[@]}" >&2
  if grep -q 'GOPROXY=off' "$work"/*.log; then
    echo "tools-test: the Go module cache lacks protoc-gen's modules: run 'make tools' first" >&2
  fi
  echo "tools-test: FAIL (two concurrent 'tools.sh protoc-gen' runs, ${took}s)" >&2
  exit 1
fi
echo "tools-test: ok (two concurrent 'tools.sh protoc-gen' runs on a stale stamp: one built, one waited and found it up to date; ${took}s)"
