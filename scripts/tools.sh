#!/usr/bin/env bash
# Builds or installs every real component Meshplane's tests and local platform run, at the versions pinned
# in scripts/versions.env, into one cache directory. Idempotent: a warm run only checks stamps.
#
#   scripts/tools.sh              build everything
#   scripts/tools.sh consul loki  build only these (names: kube consul prometheus loki istio nats
#                                 controller-gen golangci-lint protoc-gen debian)
#   scripts/tools.sh --print-bin  print the directory holding the binaries
#
# Each Go component is built in a throw-away module under $MESHPLANE_CACHE/build/<name>; its go.mod text is
# the cache key, so changing a pin rebuilds exactly that component. Nothing built here is committed.
#
# Runs at once (`make up` in one terminal, `make test` in another) share the cache, so each component is
# checked and built while holding $MESHPLANE_CACHE/locks/<name>.lock (flock(1), util-linux): without it both
# rebuilt into the same directory and removed each other's work. A second run waits, printing which run holds
# the lock (its PID, arguments and start, recorded in the lock file) and a reminder every minute, then finds
# the stamp fresh and builds nothing. The kernel drops the lock when its holder exits, even if killed; a lock
# file left behind is harmless (never delete one while a run may hold it: the next run would lock a new file).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$root/scripts/versions.env"

cache=${MESHPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshplane}
bin=$cache/bin

if [[ ${1:-} == --print-bin ]]; then
  echo "$bin"
  exit 0
fi

command -v flock >/dev/null || {
  echo "tools.sh: flock not found: install util-linux (it takes a lock per component in $cache/locks)" >&2
  exit 1
}
mkdir -p "$bin" "$cache/build" "$cache/locks"

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# What the lock file says about this run, for a run waiting on it.
holder_text="pid $$ (scripts/tools.sh${*:+ $*})"

# locked NAME CMD...
# Runs CMD holding $cache/locks/NAME.lock, so another tools.sh run cannot build NAME at the same time. While
# that run holds it, waits, saying so once and again every minute.
locked() {
  local name=$1
  shift
  local lock=$cache/locks/$name.lock fd since=$SECONDS
  # >> creates the file without truncating what the holder wrote.
  exec {fd}>>"$lock"
  if ! try_lock "$fd" -n; then
    log "$name: waiting for another tools.sh run, which holds $lock: $(holder "$lock")"
    until try_lock "$fd" -w 60; do
      log "$name: still waiting after $((SECONDS - since))s for $(holder "$lock")"
    done
    log "$name: lock taken after waiting $((SECONDS - since))s"
  fi
  printf '%s since %s\n' "$holder_text" "$(date +%H:%M:%S)" >"$lock"
  "$@"
  exec {fd}>&-
}

# try_lock FD FLOCK_OPTION...
# Locks FD exclusively; false if another process still holds the lock when the option's limit (-n: none,
# -w SECONDS) runs out. Any other flock failure ends the script.
try_lock() {
  local fd=$1 rc=0
  shift
  flock "$@" -E 75 "$fd" || rc=$?
  case $rc in
    0) return 0 ;;
    75) return 1 ;;
    *)
      echo "tools.sh: flock $* on fd $fd failed with status $rc" >&2
      exit 1
      ;;
  esac
}

# holder LOCKFILE prints who holds the lock, as that run recorded it.
holder() {
  local text
  text=$(<"$1")
  echo "${text:-a run that has not recorded its pid yet}"
}

# build_go NAME ETA GOMOD_TEXT PKG=BIN...
# Builds each PKG into $bin/BIN inside a throw-away module whose go.mod is GOMOD_TEXT, with extra linker
# flags from $ldflags if set.
build_go() {
  local name=$1 eta=$2 gomod=$3
  shift 3
  local dir=$cache/build/$name
  local stamp key
  key=$(printf '%s\n%s\n%s\n%s\n' "$gomod" "$*" "${ldflags:-}" "$(go env GOVERSION)" | sha256sum | cut -c1-16)
  stamp=$dir/.stamp-$key
  local missing=0 spec
  for spec in "$@"; do
    [[ -x $bin/${spec#*=} ]] || missing=1
  done
  if [[ -f $stamp && $missing == 0 ]]; then
    log "$name: up to date ($key)"
    return 0
  fi
  log "$name: building (cold build takes about $eta on 2 cores)"
  local start=$SECONDS
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '%s\n' "$gomod" >"$dir/go.mod"
  # A tool directive per package keeps every dependency in the build list through `go mod tidy`.
  (
    cd "$dir"
    for spec in "$@"; do
      go mod edit -tool="${spec%%=*}"
    done
    go mod tidy
    for spec in "$@"; do
      CGO_ENABLED=0 go build -trimpath -ldflags="-s -w ${ldflags:-}" -o "$bin/${spec#*=}.new" "${spec%%=*}"
      mv "$bin/${spec#*=}.new" "$bin/${spec#*=}"
    done
  )
  touch "$stamp"
  log "$name: built in $((SECONDS - start))s"
}

tool_kube() {
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client
    cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
    kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
    sample-apiserver sample-controller streaming)
  local gomod m
  gomod="module meshplane.local/tools/kube

go 1.26.0

require (
	k8s.io/kubernetes $KUBERNETES_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
"
  for m in "${staging[@]}"; do
    gomod+="replace k8s.io/$m => k8s.io/$m $KUBERNETES_STAGING_VERSION"$'\n'
  done
  # Without these the apiserver reports v0.0.0-master, which version-checking clients (istiod) reject.
  local v=${KUBERNETES_VERSION#v} pkg
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=${v%%.*} -X $pkg.gitMinor=$(cut -d. -f2 <<<"$v")"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # kube-controller-manager runs the garbage collector in tests (envtest has none); kubectl matches the
  # apiserver's minor, the machine's may be several minors older (outside kubectl's supported skew).
  build_go kube "10-16 minutes" "$gomod" \
    k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl=kubectl \
    go.etcd.io/etcd/server/v3=etcd
}

tool_consul() {
  build_go consul "8-11 minutes" "module meshplane.local/tools/consul

go 1.26.0

require github.com/hashicorp/consul $CONSUL_VERSION

// Copied from Consul's own go.mod: excludes of a dependency are ignored, so the build must repeat them.
exclude (
	github.com/hashicorp/go-msgpack v1.1.5
	github.com/hashicorp/go-msgpack v1.1.6
)
" github.com/hashicorp/consul=consul
}

tool_prometheus() {
  build_go prometheus "15 minutes" "module meshplane.local/tools/prometheus

go 1.26.0

require github.com/prometheus/prometheus $PROMETHEUS_VERSION

// Copied from Prometheus' go.mod.
replace cloud.google.com/go => cloud.google.com/go v0.123.0

exclude (
	github.com/linode/linodego v1.0.0
	github.com/grpc-ecosystem/grpc-gateway v1.14.7
	google.golang.org/api v0.30.0
)
" github.com/prometheus/prometheus/cmd/prometheus=prometheus \
    github.com/prometheus/prometheus/cmd/promtool=promtool
}

tool_loki() {
  build_go loki "12 minutes" "module meshplane.local/tools/loki

go 1.26.0

require github.com/grafana/loki/v3 $LOKI_VERSION

// Copied from Loki's go.mod (its local ./pkg/push replace resolves to the published module instead).
replace (
	github.com/Azure/azure-sdk-for-go => github.com/Azure/azure-sdk-for-go v68.0.0+incompatible
	github.com/Azure/azure-storage-blob-go => github.com/MasslessParticle/azure-storage-blob-go v0.14.1-0.20240322194317-344980fda573
	github.com/gocql/gocql => github.com/grafana/gocql v0.0.0-20200605141915-ba5dc39ece85
	github.com/hashicorp/memberlist => github.com/grafana/memberlist v0.3.1-0.20251126142931-6f9f62ab6f86
	github.com/grafana/regexp => github.com/grafana/regexp v0.0.0-20240518133315-a468a5bfb3bc
	github.com/influxdata/go-syslog/v3 => github.com/leodido/go-syslog/v4 v4.3.0
	github.com/thanos-io/objstore => github.com/grafana/objstore v0.0.0-20250728171719-b5d3b766d1b0
)

exclude k8s.io/client-go v8.0.0+incompatible
" github.com/grafana/loki/v3/cmd/loki=loki
}

# istiod (pilot-discovery), istioctl and the istio-agent (pilot-agent) from one module, so the agent beside each
# local workload speaks exactly the istiod it talks to. pilot-agent's own tool directive makes `go mod tidy`
# add the CNI and nftables modules its iptables subcommand links (unused here; CGO stays off).
tool_istio() {
  build_go istio "9 minutes" "module meshplane.local/tools/istio

go 1.26.0

// The versions istio.io/istio asks for are refused by the proxy; these are the served ones.
require (
	istio.io/istio $ISTIO_VERSION
	istio.io/api ${LIB_ISTIO_API#*@}
	istio.io/client-go ${LIB_ISTIO_CLIENT_GO#*@}
	github.com/envoyproxy/go-control-plane/envoy $ENVOY_GO_CONTROL_PLANE_VERSION
	github.com/envoyproxy/go-control-plane/contrib $ENVOY_GO_CONTROL_PLANE_CONTRIB_VERSION
)
" istio.io/istio/istioctl/cmd/istioctl=istioctl \
    istio.io/istio/pilot/cmd/pilot-discovery=pilot-discovery \
    istio.io/istio/pilot/cmd/pilot-agent=pilot-agent
}

tool_nats() {
  build_go nats "3 minutes" "module meshplane.local/tools/nats

go 1.26.0

require github.com/nats-io/nats-server/v2 $NATS_SERVER_VERSION
" github.com/nats-io/nats-server/v2=nats-server
}

tool_controller_gen() {
  build_go controller-gen "2 minutes" "module meshplane.local/tools/controller-gen

go 1.26.0

require sigs.k8s.io/controller-tools $CONTROLLER_TOOLS_VERSION
" sigs.k8s.io/controller-tools/cmd/controller-gen=controller-gen
}

tool_golangci_lint() {
  build_go golangci-lint "3 minutes" "module meshplane.local/tools/golangci-lint

go 1.26.0

require github.com/golangci/golangci-lint/v2 $GOLANGCI_LINT_VERSION
" github.com/golangci/golangci-lint/v2/cmd/golangci-lint=golangci-lint
}

tool_protoc_gen() {
  build_go protoc-gen "1 minute" "module meshplane.local/tools/protoc-gen

go 1.26.0

require (
	google.golang.org/protobuf $PROTOC_GEN_GO_VERSION
	google.golang.org/grpc/cmd/protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION
)
" google.golang.org/protobuf/cmd/protoc-gen-go=protoc-gen-go \
    google.golang.org/grpc/cmd/protoc-gen-go-grpc=protoc-gen-go-grpc
}

# Debian packages: protoc for the gRPC contracts, shellcheck for scripts/.
tool_debian() {
  local want=() pkg cmd
  for pkg in protobuf-compiler:protoc shellcheck:shellcheck; do
    cmd=${pkg#*:}
    command -v "$cmd" >/dev/null || want+=("${pkg%%:*}")
  done
  # PostgreSQL (orders' and payments' store; mesh/devkit/devserver runs it): Debian keeps the server's
  # binaries off PATH, in /usr/lib/postgresql/<major>/bin.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || want+=(postgresql)
  if [[ ${#want[@]} == 0 ]]; then
    log "debian: protoc, shellcheck and postgresql present"
    return 0
  fi
  log "debian: installing ${want[*]} with apt-get"
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  # Debian's package would create and start a cluster of its own on port 5432, where `make up` runs its
  # PostgreSQL: the dev servers initdb their own, so ask for none.
  "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' | "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/meshplane.conf >/dev/null
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

check_kubectl() {
  if command -v kubectl >/dev/null; then
    log "kubectl on PATH: $(kubectl version --client 2>/dev/null | head -1); tests use $bin/kubectl ($KUBERNETES_VERSION)"
  else
    log "kubectl: not on PATH; tests use $bin/kubectl ($KUBERNETES_VERSION)"
  fi
}

all=(debian protoc-gen controller-gen kube istio prometheus loki consul nats golangci-lint)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

start=$SECONDS
check_kubectl
for t in "${targets[@]}"; do
  case $t in
    kube | consul | prometheus | loki | istio | nats | debian) locked "$t" "tool_$t" ;;
    controller-gen) locked "$t" tool_controller_gen ;;
    golangci-lint) locked "$t" tool_golangci_lint ;;
    protoc-gen) locked "$t" tool_protoc_gen ;;
    *)
      echo "tools.sh: unknown tool $t (known: ${all[*]})" >&2
      exit 2
      ;;
  esac
done
log "all tools ready in $bin ($((SECONDS - start))s)"
