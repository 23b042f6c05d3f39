#!/usr/bin/env bash
# Builds (or reuses) the kube-apiserver, etcd and kubectl binaries the
# Kubernetes integration tests run (internal/kube/kubetest), from the Go module
# proxy only: no Docker, no download site.
#
# The build is pinned by test/k8s/tools/go.mod + go.sum (a module of its own,
# separate from pkmanager's go.mod: it requires k8s.io/kubernetes v1.37.2 and
# replaces every staging module with its served v0.37.2 version). The binaries
# are cached under ${PKM_K8S_CACHE:-$HOME/.cache/pkmanager/k8s}/<sha256 of go.mod+go.sum>/,
# so a warm run takes a second. A cold build takes 7-17 min on 2 cores and
# ~2.3 GB of RAM.
#
# usage: scripts/k8s-test-binaries.sh            builds if needed; prints the directory holding the binaries
#        scripts/k8s-test-binaries.sh --cached   prints it only if already built (exit 1 otherwise)
#        (export PKM_K8S_ASSETS=$(scripts/k8s-test-binaries.sh) before go test)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MOD="$ROOT/test/k8s/tools"
K8S_VERSION=v1.37.2
HASH=$(cat "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-16)
CACHE=${PKM_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/k8s}
OUT="$CACHE/$HASH"
BINS=(kube-apiserver etcd kubectl)

log() { printf '== k8s-test-binaries: %s\n' "$*" >&2; }

complete() { for b in "${BINS[@]}"; do [ -x "$OUT/$b" ] || return 1; done; }

if [ "${1:-}" = --cached ]; then
  complete && { echo "$OUT"; exit 0; }
  exit 1
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$HASH"
if ! flock -n 9; then
  log "another build of $HASH is running, waiting for it"
  flock 9
fi
if complete; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

log "building kube-apiserver, etcd, kubectl ($K8S_VERSION) into $OUT (cold: 7-17 min, 2.3 GB RAM)"
TMP="$OUT.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
cd "$MOD"
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
t0=$(date +%s)
go mod download
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
LDF="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LDF+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${MINOR} -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
# One go build for the three: their compiles and links overlap (a link takes
# one core while the other compiles); etcd's main package is named for its
# module path, go.etcd.io/etcd/server/v3, so its binary is "server".
go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$LDF" -o "$TMP/" \
  k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kubectl
mv "$TMP/server" "$TMP/etcd"
log "kube-apiserver, etcd, kubectl built ($(( $(date +%s) - t0 ))s)"
"$TMP/kube-apiserver" --version >&2
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
log "done in $(( $(date +%s) - t0 ))s: $OUT"
echo "$OUT"
