#!/usr/bin/env bash
# Builds the Go code gpu-dra is compared against (issue 12), the "anchors":
#   nvidia    NVIDIA's gpu-kubelet-plugin (kubernetes-sigs/dra-driver-nvidia-gpu; vendored, cgo)
#   example   the example driver's dra-example-kubeletplugin (kubernetes-sigs/dra-example-driver)
#   mocknvml  NVIDIA's mock NVML (NVIDIA/k8s-test-infra pkg/gpu/mocknvml; vendored, cgo): a
#             directory holding libnvidia-ml.so(.1), its profile YAMLs in configs/ and
#             render-pci-sysfs (writes the fake /sys a profile describes)
#
#   test/anchors/build.sh [nvidia|example|mocknvml|all]     (default: all = the two drivers)
#
# Sources are the pinned `git archive` tarballs in ../shared/anchors (relative to the repository
# root; override with GPU_DRA_ANCHORS_DIR). Each result is cached, keyed by the tarball's hash:
#   ${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/anchors/<name>-<sha256 of the tarball, 16 chars>/<binary>
# When a tarball is absent, the same pinned commit is cloned from its public repository instead
# (key: <name>-git-<commit, 16 chars>). A cached result is reused. The result path(s) (a binary, or
# mocknvml's directory) are the LAST line(s) of stdout, one per anchor in the order asked; progress
# goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
anchors_dir="${GPU_DRA_ANCHORS_DIR:-$repo_root/../shared/anchors}"
cache_root="${GPU_DRA_CACHE:-$HOME/.cache/gpu-dra}/anchors"
what="${1:-all}"
# The build's scratch tree; removed on any exit, so a failed build leaves nothing half-written.
tmp=""
trap 'if [ -n "$tmp" ]; then rm -rf "$tmp"; fi' EXIT

if ! command -v go >/dev/null 2>&1; then
  for d in /usr/local/go/bin "$HOME/go/bin" /usr/lib/go/bin; do
    if [ -x "$d/go" ]; then PATH="$d:$PATH"; break; fi
  done
fi

# name  tarball  top-level dir  repository  pinned commit  package  binary  vendored
anchor_spec() {
  case "$1" in
    nvidia) echo "nvidia dra-driver-nvidia-gpu-95932046.tar.gz dra-driver-nvidia-gpu" \
      "https://github.com/kubernetes-sigs/dra-driver-nvidia-gpu.git" \
      "95932046683719c43b6a0dd9613c2e5aad5d6703 ./cmd/gpu-kubelet-plugin gpu-kubelet-plugin vendor" ;;
    example) echo "example dra-example-driver-31914ce.tar.gz dra-example-driver" \
      "https://github.com/kubernetes-sigs/dra-example-driver.git" \
      "31914ceacda29bbc55208ef75e68c0991e1c9568 ./cmd/dra-example-kubeletplugin dra-example-kubeletplugin mod" ;;
    # Package and binary are unused: build_mocknvml runs the library's own Makefile.
    mocknvml) echo "mocknvml k8s-test-infra-mocknvml-3b2b865d.tar.gz k8s-test-infra" \
      "https://github.com/NVIDIA/k8s-test-infra.git" \
      "3b2b865d91b1844baa9feeca2820d2fab65414c7 ./pkg/gpu/mocknvml libnvidia-ml.so vendor" ;;
    *) echo "anchors/build.sh: unknown anchor '$1' (use nvidia, example, mocknvml or all)" >&2; return 2 ;;
  esac
}

# Sets `key` (the cache key) and `src_kind` (tarball or git) for one anchor's spec fields.
source_key() {
  local name="$1" tarball="$2" topdir="$3" repo="$4" commit="$5"
  command -v go >/dev/null 2>&1 || { echo "anchors/build.sh: go toolchain not found (Go >= 1.26 builds the anchors)" >&2; return 1; }
  if [ -f "$anchors_dir/$tarball" ]; then
    key="$name-$(sha256sum "$anchors_dir/$tarball" | cut -c1-16)"
    src_kind=tarball
  elif command -v git >/dev/null 2>&1; then
    key="$name-git-${commit:0:16}"
    src_kind=git
  else
    echo "anchors/build.sh: $anchors_dir/$tarball is missing and git is not installed." >&2
    echo "  Provide the tarball (git archive of $repo at $commit, top directory $topdir/)" >&2
    echo "  in ../shared/anchors beside the repository, or set GPU_DRA_ANCHORS_DIR to its folder." >&2
    return 1
  fi
}

# Unpacks (or clones) the pinned source into a fresh scratch dir `$tmp/<topdir>`.
unpack_source() {
  local name="$1" tarball="$2" topdir="$3" repo="$4" commit="$5" src_kind="$6"
  mkdir -p "$cache_root"
  tmp="$(mktemp -d "$cache_root/.build-$name-XXXXXX")"
  if [ "$src_kind" = tarball ]; then
    echo "[anchors] unpacking $tarball" >&2
    tar -xzf "$anchors_dir/$tarball" -C "$tmp"
  else
    echo "[anchors] $anchors_dir/$tarball is absent: fetching $repo at $commit" >&2
    if ! { git init -q "$tmp/$topdir" \
      && git -C "$tmp/$topdir" fetch -q --depth 1 "$repo" "$commit" \
      && git -C "$tmp/$topdir" -c advice.detachedHead=false checkout -q FETCH_HEAD; } >&2; then
      echo "anchors/build.sh: could not fetch $repo at $commit (no network?)." >&2
      echo "  Provide $tarball (git archive of that commit, top directory $topdir/) in" >&2
      echo "  ../shared/anchors beside the repository, or set GPU_DRA_ANCHORS_DIR to its folder." >&2
      return 1
    fi
  fi
}

build_one() {
  local name tarball topdir repo commit pkg binary mode key src_kind
  read -r name tarball topdir repo commit pkg binary mode <<<"$(anchor_spec "$1")"
  source_key "$name" "$tarball" "$topdir" "$repo" "$commit"
  local out_dir="$cache_root/$key" bin="$cache_root/$key/$binary"
  if [ -x "$bin" ]; then
    echo "[anchors] using cached $bin" >&2
    echo "$bin"
    return 0
  fi

  local start
  start=$(date +%s)
  unpack_source "$name" "$tarball" "$topdir" "$repo" "$commit" "$src_kind"
  cd "$tmp/$topdir"
  if [ "$mode" = vendor ]; then
    export GOFLAGS="-mod=vendor -buildvcs=false"
  else
    export GOFLAGS="-mod=readonly -buildvcs=false"
    echo "[anchors] go mod download ($name)" >&2
    go mod download >&2
  fi
  echo "[anchors] go build $pkg ($name); a cold build takes minutes" >&2
  # NVIDIA's plugin needs cgo (it dlopens NVML through go-nvml); the example driver does not mind.
  # go-nvml wraps every deprecated NVML call: silence those hundreds of lines of warnings.
  CGO_ENABLED=1 CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -Wno-deprecated-declarations" go build -p "${GPU_DRA_BUILD_JOBS:-2}" -trimpath -ldflags "-s -w" -o "$tmp/$binary" "$pkg" >&2
  cd "$repo_root"
  echo "[anchors] built $name in $(($(date +%s) - start))s" >&2
  mkdir -p "$out_dir"
  mv "$tmp/$binary" "$bin"
  rm -rf "$tmp"
  tmp=""
  echo "$bin"
}

# NVIDIA's mock NVML: its Makefile builds the library (unpadded: the 14 MiB padding only fools
# size checks we do not have), render-pci-sysfs comes from the archive root. The cache entry is a
# directory, moved into place whole so a half-built one is never seen.
build_mocknvml() {
  local name tarball topdir repo commit pkg binary mode key src_kind
  read -r name tarball topdir repo commit pkg binary mode <<<"$(anchor_spec mocknvml)"
  source_key "$name" "$tarball" "$topdir" "$repo" "$commit"
  local out_dir="$cache_root/$key"
  if [ -e "$out_dir/$binary" ] && [ -x "$out_dir/render-pci-sysfs" ] && [ -d "$out_dir/configs" ]; then
    echo "[anchors] using cached $out_dir" >&2
    echo "$out_dir"
    return 0
  fi

  local start
  start=$(date +%s)
  unpack_source "$name" "$tarball" "$topdir" "$repo" "$commit" "$src_kind"
  local src="$tmp/$topdir" out="$tmp/out"
  mkdir -p "$out"
  export GOFLAGS="-mod=vendor -buildvcs=false -p=${GPU_DRA_BUILD_JOBS:-2}"
  echo "[anchors] make $pkg ($name); a cold build takes about a minute" >&2
  # The bridge wraps every NVML call, deprecated ones included: silence those warnings.
  CGO_ENABLED=1 CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -Wno-deprecated-declarations" make -C "$src/$pkg" NO_PADDING=1 >&2
  echo "[anchors] go build ./cmd/render-pci-sysfs ($name)" >&2
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/render-pci-sysfs" ./cmd/render-pci-sysfs) >&2
  cp -P "$src/$pkg"/libnvidia-ml.so* "$out/"
  rm -f "$out"/*.h # cgo's header for the exports, of no use here
  cp -r "$src/$pkg/configs" "$out/configs"
  echo "[anchors] built $name in $(($(date +%s) - start))s" >&2
  rm -rf "$out_dir"
  mv "$out" "$out_dir"
  rm -rf "$tmp"
  tmp=""
  echo "$out_dir"
}

case "$what" in
  all) build_one nvidia; build_one example ;;
  nvidia | example) build_one "$what" ;;
  mocknvml) build_mocknvml ;;
  *) anchor_spec "$what" >/dev/null ;;
esac
