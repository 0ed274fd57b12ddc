#!/usr/bin/env bash
# Regenerates every generated file. `make test` runs it and then fails if git sees a difference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# go.mod/go.sum of every module, each tidy on its own (GOWORK=off), as `GOWORK=off go test` needs them.
while read -r dir; do
  (cd "$dir" && GOWORK=off go mod tidy)
done < <(go list -m -f '{{.Dir}}')

# --- Operator: deepcopy, TrafficPolicy CRD and RBAC from kubebuilder markers (controller-gen) ---
# The CRD comes from operator/api (types and validation markers), the ClusterRole (and the leader
# election Role) from the +kubebuilder:rbac markers in operator/cmd/manager, operator/internal/controller and operator/internal/consulsync.
# Never edit the outputs by hand.
controller_gen="$(scripts/tools.sh --print-bin)/controller-gen"
(cd operator/api && "$controller_gen" object paths=./... &&
  "$controller_gen" crd:crdVersions=v1 paths=./... output:crd:artifacts:config=../config/crd/bases)
(cd operator && "$controller_gen" rbac:roleName=meshplane-operator paths="{./cmd/manager/...,./internal/controller/...,./internal/consulsync/...}" \
  output:rbac:artifacts:config=config/rbac)

# --- Shop services: protobuf contracts (services/proto/*/v1/*.proto) -> Go (protoc-gen-go, -go-grpc) ---
# protoc from Debian's protobuf-compiler; the plugins are pinned in versions.env and built by tools.sh.
proto_bin="$(scripts/tools.sh --print-bin)"
mapfile -t protos < <(cd services/proto && find . -name '*.proto' | sort)
(cd services/proto && protoc -I . \
  --plugin=protoc-gen-go="$proto_bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$proto_bin/protoc-gen-go-grpc" \
  --go_out=. --go_opt=module=meshplane.dev/services/proto \
  --go-grpc_out=. --go-grpc_opt=module=meshplane.dev/services/proto \
  "${protos[@]}")

# --- Shop services: settings tables in docs/services.md, from each service's Config (`<service> -config-doc`) ---
{
  for svc in gateway catalog orders payments fulfillment loadgen; do
    printf '\n### %s\n\n' "$svc"
    (cd "services/$svc" && go run . -config-doc)
  done
  echo
} > .services-config.md.tmp
awk -v gen=.services-config.md.tmp '
  /^<!-- BEGIN GENERATED services-config/ { print; while ((getline line < gen) > 0) print line; skip = 1; next }
  /^<!-- END GENERATED services-config/ { skip = 0 }
  !skip { print }' docs/services.md > docs/services.md.tmp
mv docs/services.md.tmp docs/services.md
rm -f .services-config.md.tmp

# --- TrafficPolicy field reference in docs/trafficpolicy.md, from the generated CRD ---
go run ./operator/test/docs/apiref operator/config/crd/bases/traffic.meshplane.dev_trafficpolicies.yaml docs/trafficpolicy.md

# --- Dashboards and alert rules: Grafana dashboards (JSON) and Prometheus rules (YAML) generated from
# the Go model in dashboards/ into dashboards/generated/, committed and diffed in CI ---
go run ./dashboards/cmd/generate -out dashboards/generated

echo "generate: ok"
