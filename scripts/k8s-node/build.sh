#!/usr/bin/env bash
# Builds (or reuses) the binaries of the real one-node Kubernetes the node tests (test/node) run, from the Go module
# proxy only:
#   kube-apiserver, etcd, kubectl      from scripts/k8s-test-binaries.sh (its cache, pinned by test/k8s/tools), linked here
#   kubelet, kube-controller-manager,  from test/node/tools: a copy of test/k8s/tools with these four `tool` lines added
#   kube-scheduler, kube-proxy         (`go get -tool`: only requirements added, no pinned version moves)
#   crictl (sigs.k8s.io/cri-tools)     and helm (helm.sh/helm/v3): `go install module@version`, each with its own go.sum
# The result is cached under ${PKM_K8S_NODE_CACHE:-$HOME/.cache/pkmanager/k8s-node}/<hash>/, the hash covering both tools
# modules and the versions below, so a warm run takes a second. Cold from nothing about 16 min on 2 cores
# (../shared/k8s-node's measurement); with the API server binaries cached it took 22 min here while other builds kept
# the load at ~20 (kubelet/controller-manager/scheduler/kube-proxy ~5 min, crictl and helm the rest).
#
# usage: scripts/k8s-node/build.sh            builds if needed; prints the directory holding the binaries
#        scripts/k8s-node/build.sh --cached   prints it only if already built (exit 1 otherwise)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MOD="$ROOT/test/node/tools"
K8S_VERSION=v1.37.2
CRICTL_VERSION=v1.37.0
HELM_VERSION=v3.22.0
HASH=$( { cat "$MOD/go.mod" "$MOD/go.sum" "$ROOT/test/k8s/tools/go.mod" "$ROOT/test/k8s/tools/go.sum"
  echo "$K8S_VERSION $CRICTL_VERSION $HELM_VERSION"; } | sha256sum | cut -c1-16)
CACHE=${PKM_K8S_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/k8s-node}
OUT="$CACHE/$HASH"
BINS=(kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler kube-proxy crictl helm)

log() { printf '== k8s-node/build: %s\n' "$*" >&2; }
# "module version" of every requirement of a go.mod
reqs() { awk '/^require \(/{r=1; next} r&&/^\)/{r=0} r&&NF>=2{print $1, $2} /^require [^(]/{print $2, $3}' "$1"; }
# test/node/tools must be test/k8s/tools plus tool lines: no version pinned there may differ here
have=$(reqs "$MOD/go.mod")
moved=$(reqs "$ROOT/test/k8s/tools/go.mod" | while read -r m v; do grep -qxF "$m $v" <<<"$have" || echo "$m $v"; done)
if [ -n "$moved" ]; then
  log "test/node/tools/go.mod does not pin these as test/k8s/tools/go.mod does: $(echo $moved)"
  log "regenerate it: cp test/k8s/tools/go.{mod,sum} test/node/tools/ && (cd test/node/tools && go get -tool k8s.io/kubernetes/cmd/{kubelet,kube-controller-manager,kube-scheduler,kube-proxy}) and set the module line back"
  exit 1
fi
complete() { [ -f "$OUT/.complete" ] && for b in "${BINS[@]}"; do [ -x "$OUT/$b" ] || return 1; done; }

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
t0=$(date +%s)
API=$(bash "$ROOT/scripts/k8s-test-binaries.sh")
log "building kubelet, kube-controller-manager, kube-scheduler, kube-proxy ($K8S_VERSION), crictl $CRICTL_VERSION, helm $HELM_VERSION into $OUT"
TMP="$OUT.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
for b in kube-apiserver etcd kubectl; do ln -f "$API/$b" "$TMP/$b" 2>/dev/null || cp "$API/$b" "$TMP/$b"; done
export GOWORK=off CGO_ENABLED=0
cd "$MOD"
GOFLAGS=-mod=readonly go mod download
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
LDF="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LDF+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${MINOR} -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
# One go build for the four: their compiles and links overlap.
GOFLAGS=-mod=readonly go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$LDF" -o "$TMP/" \
  k8s.io/kubernetes/cmd/{kubelet,kube-controller-manager,kube-scheduler,kube-proxy}
log "kubelet, kube-controller-manager, kube-scheduler, kube-proxy built ($(( $(date +%s) - t0 ))s)"
# Modules of their own: `go install m@v` uses (and verifies) that module's go.mod and go.sum.
cd "$TMP"
GOFLAGS= GOBIN="$TMP" go install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
log "crictl built ($(( $(date +%s) - t0 ))s)"
GOFLAGS= GOBIN="$TMP" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
log "helm built ($(( $(date +%s) - t0 ))s)"
"$TMP/kubelet" --version >&2
"$TMP/helm" version --short >&2
touch "$TMP/.complete"
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
log "done in $(( $(date +%s) - t0 ))s: $OUT"
echo "$OUT"
