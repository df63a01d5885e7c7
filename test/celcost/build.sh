#!/usr/bin/env bash
# Builds (or reuses) celcost: the apiserver's DRA selector compiler (k8s.io/dynamic-resource-allocation
# v0.37.2), printing each selector's estimated cost. The ground truth for src/cel/cost.ts.
#
#   test/celcost/build.sh [ANY]     the binary's path is the LAST line of stdout
#
# Cached in ${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/celcost/<hash>/celcost; about 30 s cold.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v go >/dev/null 2>&1; then
  for d in /usr/local/go/bin "$HOME/go/bin" /usr/lib/go/bin; do
    if [ -x "$d/go" ]; then PATH="$d:$PATH"; break; fi
  done
fi
command -v go >/dev/null 2>&1 || { echo "build.sh: go toolchain not found" >&2; exit 1; }
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
hash="$(cd "$here" && { go env GOVERSION; cat build.sh go.mod go.sum main.go; } | sha256sum | cut -c1-16)"
out="${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/celcost/$hash"
if [ -x "$out/celcost" ]; then
  echo "[celcost] using cached $out/celcost" >&2
  echo "$out/celcost"
  exit 0
fi
mkdir -p "$out"
echo "[celcost] building $out/celcost" >&2
(cd "$here" && go build -trimpath -ldflags="-s -w" -o "$out/celcost.tmp" .) >&2
mv "$out/celcost.tmp" "$out/celcost"
echo "$out/celcost"
