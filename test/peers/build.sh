#!/usr/bin/env bash
# Builds the gpu-dra-peers multi-call binary (etcd, kube-apiserver,
# kube-scheduler, kube-controller-manager, kubelet-dra harness) for one
# Kubernetes version and caches it outside the repository.
#
#   test/peers/build.sh [VERSION]      VERSION: v1.37.2 (default), v1.36.3, v1.35.4 or v1.34.4
#
# The cache key is the version plus a hash of what goes into the binary (the Go version, the build
# tags and flags, the module files and the sources those tags select):
#   ${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/peers/<version>-<hash>/gpu-dra-peers
# A cached binary is reused. The binary path is the LAST line of stdout;
# progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${1:-v1.37.2}"

case "$version" in
  v1.37.*) modfile="go.mod"; tags="" ;;
  # Each older minor has its own module file and a tag that picks its adapter_k8s1XX.go (plus
  # adapter_pre137.go) instead of adapter_current.go.
  v1.36.*) modfile="go.k8s-1.36.mod"; tags="k8s136" ;;
  v1.35.*) modfile="go.k8s-1.35.mod"; tags="k8s135" ;;
  v1.34.*) modfile="go.k8s-1.34.mod"; tags="k8s134" ;;
  *) echo "build.sh: unsupported Kubernetes version $version (supported: v1.37.x, v1.36.x, v1.35.x, v1.34.x)" >&2; exit 2 ;;
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

minor="$(echo "$version" | cut -d. -f2)"
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"

build_flags=(-trimpath -ldflags "$ldflags")
export CGO_ENABLED=0

# Hash everything that affects the binary, and only that: the Go version, the tags and flags, the
# module files and the Go files the tags select (`go list -find` reads build constraints without
# loading dependencies). build.sh itself and the other versions' adapters are left out, so adding
# a version here does not throw away the binaries already built for the others.
srcs="$(cd "$here" && go list -find -modfile="$modfile" ${tags:+-tags "$tags"} -f '{{join .GoFiles "\n"}}' . | LC_ALL=C sort)"
hash="$(
  cd "$here"
  {
    printf 'go=%s tags=%s cgo=%s\n' "$(go env GOVERSION)" "$tags" "$CGO_ENABLED"
    printf 'flags=%s\n' "${build_flags[*]}"
    for f in "$modfile" "$sumfile" $srcs; do
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

export GOFLAGS="${GOFLAGS:-} -mod=readonly"
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
go build -modfile="$modfile" ${tags:+-tags "$tags"} -p "${GPU_DRA_BUILD_JOBS:-2}" "${build_flags[@]}" \
  -o "$tmp/gpu-dra-peers" . >&2
end=$(date +%s)
echo "[peers] built $version in $((end - dl_done))s (total $((end - start))s)" >&2

mkdir -p "$out_dir"
mv "$tmp/gpu-dra-peers" "$bin"
echo "$bin"
