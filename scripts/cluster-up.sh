#!/usr/bin/env bash
# Brings up the whole platform on a local kind cluster: creates the cluster, installs Istio (with its
# CNI plugin) from manifests/base/istio/install/istiooperator.yaml, builds the images the overlay
# references and loads them into the nodes, applies the overlay (default manifests/overlays/dev) with
# server-side apply, and waits until every workload has rolled out. Safe to run again after a change.
#
# Needs Docker (kind runs nodes as containers; Podman with KIND_EXPERIMENTAL_PROVIDER=podman and
# CONTAINER_TOOL=podman) and Go. kubectl and istioctl come from `make tools`; kind from PATH, else
# `go install` at KIND_VERSION (scripts/versions.env).
#
# Environment: KIND_CLUSTER_NAME (meshplane), KIND_NODE_IMAGE (kind's default), OVERLAY
# (manifests/overlays/dev), ROLLOUT_TIMEOUT (300s), CONTAINER_TOOL (docker), SKIP_IMAGES=1 (use images
# already in the nodes or a registry).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=versions.env
source scripts/versions.env

cluster=${KIND_CLUSTER_NAME:-meshplane}
overlay=${OVERLAY:-manifests/overlays/dev}
timeout=${ROLLOUT_TIMEOUT:-300s}
container_tool=${CONTAINER_TOOL:-docker}
context="kind-$cluster"

say() { printf 'cluster-up: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v "$container_tool" >/dev/null || die "$container_tool is required: kind runs the cluster's nodes as containers"
command -v go >/dev/null || die "go is required (tools, kind)"

bin=$(scripts/tools.sh --print-bin)
if [[ ! -x $bin/kubectl || ! -x $bin/istioctl ]]; then
  say "building kubectl and istioctl (make tools)"
  make --no-print-directory tools
fi
kubectl=$bin/kubectl
istioctl=$bin/istioctl
kind=$(command -v kind || true)
if [[ -z $kind ]]; then
  kind=$bin/kind
  if [[ ! -x $kind ]]; then
    say "installing kind $KIND_VERSION into $bin"
    GOBIN=$bin go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
fi
k() { "$kubectl" --context "$context" "$@"; }

# 1. The cluster.
if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
  say "reusing kind cluster $cluster"
else
  say "creating kind cluster $cluster"
  args=(create cluster --name "$cluster" --wait 180s)
  if [[ -n ${KIND_NODE_IMAGE:-} ]]; then
    args+=(--image "$KIND_NODE_IMAGE")
  fi
  "$kind" "${args[@]}"
fi

# 2. The images the overlay references (meshplane/<name>:<tag>), built from this checkout and loaded
# into the nodes, so nothing is pulled from a registry.
rendered=$("$kubectl" kustomize "$overlay")
mapfile -t images < <(sed -n 's|^ *image: \(meshplane/[a-z0-9-]*:[^ ]*\)$|\1|p' <<<"$rendered" | sort -u)
if [[ ${SKIP_IMAGES:-} != 1 && ${#images[@]} -gt 0 ]]; then
  mapfile -t tags < <(printf '%s\n' "${images[@]##*:}" | sort -u)
  [[ ${#tags[@]} -eq 1 ]] || die "the overlay's meshplane images have several tags (${tags[*]}); make images builds one"
  names=$(printf '%s\n' "${images[@]}" | sed 's|^meshplane/||; s|:.*$||' | tr '\n' ' ')
  say "building ${images[*]}"
  make --no-print-directory images IMAGE_REGISTRY=meshplane IMAGE_TAG="${tags[0]}" IMAGES="$names" CONTAINER_TOOL="$container_tool"
  say "loading the images into kind cluster $cluster"
  "$kind" load docker-image --name "$cluster" "${images[@]}"
fi

# 3. Istio, with the mesh config the dashboards need (istioctl waits for its components).
say "installing Istio"
"$istioctl" install --context "$context" -y -f manifests/base/istio/install/istiooperator.yaml
k -n istio-system rollout status deployment/istiod --timeout "$timeout"
k -n istio-system rollout status daemonset/istio-cni-node --timeout "$timeout"

# 4. The CRD first, so the overlay's TrafficPolicies find it established; then everything.
say "applying $overlay"
k apply --server-side --field-manager=meshplane -k operator/config/crd
k wait --for condition=Established --timeout 60s crd/trafficpolicies.traffic.meshplane.dev
k apply --server-side --field-manager=meshplane -k "$overlay"

# 5. Every Deployment and StatefulSet of the platform rolled out.
mapfile -t workloads < <(k get deployments,statefulsets --all-namespaces -l app.kubernetes.io/part-of=meshplane \
  -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.kind}{"/"}{.metadata.name}{"\n"}{end}')
for w in "${workloads[@]}"; do
  read -r ns name <<<"$w"
  say "waiting for $ns $name"
  k -n "$ns" rollout status "${name,,}" --timeout "$timeout"
done

cat >&2 <<MSG
cluster-up: ready (context $context). Next:
  kubectl --context $context -n monitoring port-forward svc/grafana 3000:3000     # dashboards, folder Meshplane
  kubectl --context $context -n monitoring port-forward svc/prometheus 9090:9090
  kubectl --context $context -n shop port-forward svc/gateway 8080:8080            # curl localhost:8080/v1/products
  kubectl --context $context get trafficpolicies -A
  scripts/cluster-down.sh                                                          # delete the cluster
MSG
