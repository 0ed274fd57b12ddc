#!/usr/bin/env bash
# Regenerates every generated file. `make test` runs it and then fails if git sees a difference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# go.mod/go.sum of every module, each tidy on its own (GOWORK=off), as `GOWORK=off go test` needs them.
while read -r dir; do
  (cd "$dir" && GOWORK=off go mod tidy)
done < <(go list -m -f '{{.Dir}}')
# --- Dashboards and alert rules: Grafana dashboards (JSON) and Prometheus rules (YAML) generated from
# the Go model in dashboards/ into dashboards/generated/, committed and diffed in CI ---
go run ./dashboards/cmd/generate -out dashboards/generated

echo "generate: ok"
