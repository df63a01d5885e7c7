#!/usr/bin/env bash
# Builds the gpu-dra-peers multi-call binary (etcd, kube-apiserver,
# kube-scheduler, kube-controller-manager, kubelet-dra harness) for one
# Kubernetes version and caches it outside the repository.
#
#   test/peers/build.sh [VERSION]      VERSION: v1.37.2 (default) or v1.34.4
#
# The cache key is the version plus a hash of the module files and sources:
#   ${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/peers/<version>-<hash>/gpu-dra-peers
# A cached binary is reused. The binary path is the LAST line of stdout;
# progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${1:-v1.37.2}"

case "$version" in
  v1.37.*) modfile="go.mod"; tags="" ;;
  v1.34.*) modfile="go.k8s-1.34.mod"; tags="k8s134" ;;
  *) echo "build.sh: unsupported Kubernetes version $version (supported: v1.37.x, v1.34.x)" >&2; exit 2 ;;
esac
sumfile="${modfile%.mod}.sum"

if ! command -v go >/dev/null 2>&1; then
  for d in /usr/local/go/bin "$HOME/go/bin" /usr/lib/go/bin; do
    if [ -x "$d/go" ]; then PATH="$d:$PATH"; break; fi
  done
fi
command -v go >/dev/null 2>&1 || { echo "build.sh: go toolchain not found" >&2; exit 1; }

pinned="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2; exit} $1 == "require" && $2 == "k8s.io/kubernetes" {print $3; exit}' "$here/$modfile")"
if [ "$pinned" != "$version" ]; then
  echo "build.sh: $modfile pins k8s.io/kubernetes $pinned, not $version" >&2
  exit 2
fi

# Hash everything that affects the binary.
hash="$(
  cd "$here"
  {
    printf 'go=%s tags=%s\n' "$(go env GOVERSION)" "$tags"
    for f in build.sh "$modfile" "$sumfile" $(ls *.go | LC_ALL=C sort); do
      printf '== %s\n' "$f"
      cat "$f"
    done
  } | sha256sum | cut -c1-16
)"
cache_root="${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/peers"
out_dir="$cache_root/$version-$hash"
bin="$out_dir/gpu-dra-peers"

if [ -x "$bin" ]; then
  echo "[peers] using cached $bin" >&2
  echo "$bin"
  exit 0
fi

minor="$(echo "$version" | cut -d. -f2)"
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly"
cd "$here"

start=$(date +%s)
echo "[peers] go mod download ($modfile)" >&2
go mod download -modfile="$modfile" >&2
dl_done=$(date +%s)
echo "[peers] downloaded modules in $((dl_done - start))s" >&2

mkdir -p "$cache_root"
tmp="$(mktemp -d "$cache_root/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "[peers] go build $version (tags: ${tags:-none}); a cold build takes a long time" >&2
go build -modfile="$modfile" ${tags:+-tags "$tags"} -p "${GPU_DRA_BUILD_JOBS:-2}" -trimpath \
  -ldflags "$ldflags" -o "$tmp/gpu-dra-peers" . >&2
end=$(date +%s)
echo "[peers] built $version in $((end - dl_done))s (total $((end - start))s)" >&2

mkdir -p "$out_dir"
mv "$tmp/gpu-dra-peers" "$bin"
echo "$bin"
