#!/usr/bin/env bash
# Enforces the dependency direction between Meshplane's modules:
#   - mesh imports nothing from k8s.io, meshplane.dev/services or meshplane.dev/operator;
#   - no module imports another module's internal/ packages (Go's own rule allows it for nested module
#     paths such as operator/api -> operator/internal, so it is checked here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail=0
mapfile -t modules < <(go list -m -f '{{.Path}} {{.Dir}}')

for entry in "${modules[@]}"; do
  mod=${entry%% *}
  dir=${entry#* }
  # Every package the module's code and tests import, with the importing module's own path.
  deps=$(cd "$dir" && go list -deps -test -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./... | sort -u)
  if [[ $mod == meshplane.dev/mesh ]]; then
    bad=$(grep -E '^(k8s\.io/|sigs\.k8s\.io/controller-runtime|meshplane\.dev/(services|operator))' <<<"$deps" || true)
    if [[ -n $bad ]]; then
      echo "check-deps: mesh must not import k8s.io, services or operator, but imports:" >&2
      while read -r line; do echo "  $line" >&2; done <<<"$bad"
      fail=1
    fi
  fi
  while read -r pkg; do
    [[ -n $pkg ]] || continue
    # The internal package's owning module is the longest workspace module path that prefixes it.
    owner=""
    for other in "${modules[@]}"; do
      o=${other%% *}
      if [[ $pkg == "$o"/* && ${#o} -gt ${#owner} ]]; then owner=$o; fi
    done
    if [[ -n $owner && $owner != "$mod" ]]; then
      echo "check-deps: $mod imports $pkg, internal to $owner" >&2
      fail=1
    fi
  done < <(grep -E '^meshplane\.dev/.*/internal(/|$)' <<<"$deps" || true)
done

# Every direct requirement must be pinned in scripts/versions.env at the same version.
declare -A pinned
while IFS='=' read -r _ spec; do
  pinned[${spec%@*}]=${spec#*@}
done < <(grep -E '^LIB_[A-Z0-9_]+=' scripts/versions.env)
for entry in "${modules[@]}"; do
  dir=${entry#* }
  while read -r path version; do
    [[ $path == meshplane.dev/* ]] && continue
    if [[ -z ${pinned[$path]:-} ]]; then
      echo "check-deps: ${dir#"$PWD"/}/go.mod requires $path $version, not pinned in scripts/versions.env" >&2
      fail=1
    elif [[ ${pinned[$path]} != "$version" ]]; then
      echo "check-deps: ${dir#"$PWD"/}/go.mod requires $path $version, scripts/versions.env pins ${pinned[$path]}" >&2
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
