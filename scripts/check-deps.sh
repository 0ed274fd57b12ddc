#!/usr/bin/env bash
# Enforces Meshplane's module and layout rules (docs/contributing.md, "Layout"):
#   mesh-deps      mesh imports nothing from k8s.io, meshplane.dev/services or meshplane.dev/operator, not even
#                  through a library;
#   internal       no module imports another module's internal/ packages (Go's own rule allows it for nested
#                  module paths such as operator/api -> operator/internal, so it is checked here);
#   devkit         mesh/devkit (what tests, benchmarks and the local platform use) is imported by no production
#                  code of the mesh library or of a service, only by their tests;
#   operator-room  operator/internal holds the operator and its CLI and nothing else: every package there is
#                  built into cmd/manager or into what cmd/meshplane imports from operator/internal, and none
#                  of it (nor cmd/manager) imports the local platform, test support or devkit;
#   localplatform  the local platform (operator/localplatform) imports no test support (operator/test);
#   operator-api   outside the operator module, only operator/api is imported;
#   pins           every direct requirement of every go.mod is pinned in scripts/versions.env.
#
#   check-deps.sh              check the workspace
#   check-deps.sh --self-test  feed the layout rules an import list with one violation per rule; fail unless
#                              each is caught and the allowed imports pass
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# judge reads facts on stdin and prints one line per violation, each starting with its rule's name:
#   module <module path>
#   pkg <package> <module>          a package of the workspace
#   built <package>                 built into the operator's binaries
#   edge <module> <package> <import> prod|test
judge() {
  awk '
    function owner(p,   m, best) {
      best = ""
      for (m in modules) if ((p == m || index(p, m "/") == 1) && length(m) > length(best)) best = m
      return best
    }
    function under(p, prefix) { return p == prefix || index(p, prefix "/") == 1 }
    $1 == "module" { modules[$2] = 1; next }
    $1 == "pkg"    { pkgs[$2] = $3; next }
    $1 == "built"  { built[$2] = 1; next }
    $1 == "edge"   { n++; emod[n] = $2; efrom[n] = $3; eto[n] = $4; ekind[n] = $5; next }
    END {
      for (i = 1; i <= n; i++) {
        mod = emod[i]; from = efrom[i]; to = eto[i]; prod = ekind[i] == "prod"
        if (to ~ /^meshplane\.dev\/.*\/internal(\/|$)/ && owner(to) != mod)
          printf "internal: %s (module %s) imports %s, internal to %s\n", from, mod, to, owner(to)
        if (prod && under(to, "meshplane.dev/mesh/devkit") &&
            ((under(from, "meshplane.dev/mesh") && !under(from, "meshplane.dev/mesh/devkit")) ||
             (under(from, "meshplane.dev/services") && !under(from, "meshplane.dev/services/shoptest"))))
          printf "devkit: %s imports %s outside its tests; devkit is for tests, benchmarks and the local platform\n", from, to
        if (prod && (under(from, "meshplane.dev/operator/internal") || from == "meshplane.dev/operator/cmd/manager") &&
            (under(to, "meshplane.dev/operator/localplatform") || under(to, "meshplane.dev/operator/test") || under(to, "meshplane.dev/mesh/devkit")))
          printf "operator-room: %s imports %s; the operator does not depend on the local platform, test support or devkit\n", from, to
        if (prod && under(from, "meshplane.dev/operator/localplatform") && under(to, "meshplane.dev/operator/test"))
          printf "localplatform: %s imports test support %s\n", from, to
        if (mod != "meshplane.dev/operator" && mod != "meshplane.dev/operator/api" &&
            under(to, "meshplane.dev/operator") && !under(to, "meshplane.dev/operator/api"))
          printf "operator-api: %s (module %s) imports %s; only operator/api is for other modules\n", from, mod, to
      }
      for (p in pkgs)
        if (under(p, "meshplane.dev/operator/internal") && !(p in built))
          printf "operator-room: %s is in operator/internal but built into neither cmd/manager nor the CLI; test support belongs in operator/test, the local platform in operator/localplatform\n", p
    }'
}

# facts prints what judge reads, from `go list` over every module of the workspace.
facts() {
  local entry mod dir
  for entry in "${modules[@]}"; do
    mod=${entry%% *}
    dir=${entry#* }
    echo "module $mod"
    # shellcheck disable=SC2016 # a Go template, not shell
    (cd "$dir" && go list -f '{{$p := .ImportPath}}pkg {{$p}} {{.Module.Path}}
{{range .Imports}}edge {{$.Module.Path}} {{$p}} {{.}} prod
{{end}}{{range .TestImports}}edge {{$.Module.Path}} {{$p}} {{.}} test
{{end}}{{range .XTestImports}}edge {{$.Module.Path}} {{$p}} {{.}} test
{{end}}' ./...) | awk '$1 == "pkg" || $4 ~ /^meshplane\.dev\//'
  done
  # What the operator's binaries run: the manager, and what the CLI imports from operator/internal.
  local cli
  mapfile -t cli < <(cd operator && go list -f '{{range .Imports}}{{.}}{{"\n"}}{{end}}' ./cmd/meshplane |
    grep '^meshplane.dev/operator/internal/')
  (cd operator && go list -deps "${cli[@]}" ./cmd/manager | grep '^meshplane.dev/operator/internal/' | sed 's/^/built /')
}

self_test() {
  local base case want got fail=0
  base='module meshplane.dev/mesh
module meshplane.dev/operator
module meshplane.dev/operator/api
module meshplane.dev/services/orders
module meshplane.dev/services/shoptest
module meshplane.dev/bench
pkg meshplane.dev/operator/internal/controller meshplane.dev/operator
built meshplane.dev/operator/internal/controller
edge meshplane.dev/mesh meshplane.dev/mesh/rpc meshplane.dev/mesh/devkit/wait test
edge meshplane.dev/mesh meshplane.dev/mesh/devkit/devservertest meshplane.dev/mesh/devkit/devserver prod
edge meshplane.dev/services/orders meshplane.dev/services/orders/internal/server meshplane.dev/mesh/devkit/metricstest test
edge meshplane.dev/services/shoptest meshplane.dev/services/shoptest meshplane.dev/mesh/devkit/devservertest prod
edge meshplane.dev/operator meshplane.dev/operator/internal/controller meshplane.dev/operator/test/envtest test
edge meshplane.dev/operator meshplane.dev/operator/localplatform meshplane.dev/operator/internal/inforce prod
edge meshplane.dev/operator meshplane.dev/operator/localplatform meshplane.dev/mesh/devkit/devserver prod
edge meshplane.dev/bench meshplane.dev/bench/cmd/bench meshplane.dev/operator/api/v1alpha1 prod'
  if got=$(judge <<<"$base") && [[ -n $got ]]; then
    echo "check-deps self-test: the allowed imports were judged violations:" >&2
    echo "$got" >&2
    fail=1
  fi
  while IFS='|' read -r want case; do
    got=$(printf '%s\n%s\n' "$base" "$case" | judge)
    if [[ $got != "$want:"* ]]; then
      echo "check-deps self-test: '$case' should violate rule $want; judged: ${got:-nothing}" >&2
      fail=1
    fi
  done <<'EOF'
internal|edge meshplane.dev/operator/api meshplane.dev/operator/api/v1alpha1 meshplane.dev/operator/internal/desiredstate test
devkit|edge meshplane.dev/services/orders meshplane.dev/services/orders/internal/server meshplane.dev/mesh/devkit/wait prod
devkit|edge meshplane.dev/mesh meshplane.dev/mesh/rpc meshplane.dev/mesh/devkit/load prod
operator-room|edge meshplane.dev/operator meshplane.dev/operator/internal/controller meshplane.dev/operator/localplatform/controlplane prod
operator-room|edge meshplane.dev/operator meshplane.dev/operator/cmd/manager meshplane.dev/mesh/devkit/wait prod
operator-room|pkg meshplane.dev/operator/internal/testenv meshplane.dev/operator
localplatform|edge meshplane.dev/operator meshplane.dev/operator/localplatform/scenario meshplane.dev/operator/test/policytest prod
operator-api|edge meshplane.dev/bench meshplane.dev/bench/cmd/bench meshplane.dev/operator/test/bench prod
EOF
  if [[ $fail == 0 ]]; then echo "check-deps self-test: ok (every rule catches its violation)"; fi
  return $fail
}

if [[ ${1:-} == --self-test ]]; then
  self_test
  exit
fi

fail=0
mapfile -t modules < <(go list -m -f '{{.Path}} {{.Dir}}')

# mesh-deps: the whole dependency graph of mesh, libraries included.
deps=$(cd mesh && go list -deps -test -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./... | sort -u)
bad=$(grep -E '^(k8s\.io/|sigs\.k8s\.io/controller-runtime|meshplane\.dev/(services|operator))' <<<"$deps" || true)
if [[ -n $bad ]]; then
  echo "check-deps: mesh-deps: mesh must not import k8s.io, services or operator, but imports:" >&2
  while read -r line; do echo "  $line" >&2; done <<<"$bad"
  fail=1
fi

violations=$(facts | judge)
if [[ -n $violations ]]; then
  while read -r line; do echo "check-deps: $line" >&2; done <<<"$violations"
  fail=1
fi

# pins: every direct requirement must be pinned in scripts/versions.env at the same version.
declare -A pinned
while IFS='=' read -r _ spec; do
  pinned[${spec%@*}]=${spec#*@}
done < <(grep -E '^LIB_[A-Z0-9_]+=' scripts/versions.env)
for entry in "${modules[@]}"; do
  dir=${entry#* }
  while read -r path version; do
    [[ $path == meshplane.dev/* ]] && continue
    if [[ -z ${pinned[$path]:-} ]]; then
      echo "check-deps: pins: ${dir#"$PWD"/}/go.mod requires $path $version, not pinned in scripts/versions.env" >&2
      fail=1
    elif [[ ${pinned[$path]} != "$version" ]]; then
      echo "check-deps: pins: ${dir#"$PWD"/}/go.mod requires $path $version, scripts/versions.env pins ${pinned[$path]}" >&2
      fail=1
    fi
  done < <(awk '/^require \(/ {block = 1; next}
      block && /^\)/ {block = 0; next}
      /\/\/ indirect/ {next}
      block {print $1, $2}
      /^require [^(]/ {print $2, $3}' "$dir/go.mod")
done

if [[ $fail == 0 ]]; then
  echo "check-deps: ok (${#modules[@]} modules)"
fi
exit $fail
