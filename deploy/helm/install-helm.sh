#!/usr/bin/env bash
# Installs the `helm` CLI for the chart test (test/unit/deploy.test.ts) when it is not on PATH:
# Debian does not package helm, so it is built from its Go module (needs Go; a few minutes on
# 2 cores, cached afterwards). The binary lands in ${GPU_DRA_CACHE:-~/.cache/gpu-dra}/bin/helm,
# where the test looks for it.
set -euo pipefail
version="${HELM_VERSION:-v3.19.0}"
bin="${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/bin"
if command -v helm >/dev/null 2>&1; then command -v helm; exit 0; fi
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "install-helm: neither helm nor go found" >&2; exit 1; }
mkdir -p "$bin"
GOBIN="$bin" go install "helm.sh/helm/v3/cmd/helm@${version}"
echo "$bin/helm"
