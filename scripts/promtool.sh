#!/usr/bin/env bash
# Builds (or reuses) promtool, Prometheus's rules checker, for the test of the alert rules in deploy/monitoring
# (deploy/monitoring/rules_test.go), from the Go module proxy only: go install of the pinned module version.
#
# Cached under ${PKM_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/promtool}/<version>-<plugins>/promtool,
# keyed on the version and the plugin set pinned below: another builds afresh. A cold build takes a few minutes on 2 cores; a warm run
# prints the path at once.
#
# usage: scripts/promtool.sh            builds if needed; prints the path of promtool
#        scripts/promtool.sh --cached   prints it only if already built (exit 1 otherwise)
#        (export PKM_PROMTOOL=$(scripts/promtool.sh) before go test)
set -euo pipefail
# Prometheus v3.5.0 (an LTS release) is Go module version v0.305.0.
VERSION=v0.305.0
MODULE=github.com/prometheus/prometheus/cmd/promtool
# The service discovery plugins compiled in: Prometheus's own plugin list (plugins/plugins.go, generated from
# plugins.yml by `make plugins`) emptied, as Prometheus documents for custom builds, so the cloud SDKs (AWS, Azure,
# GCE, OpenStack, ...) are not compiled; the file and HTTP mechanisms (plugins/minimum.go) and the Kubernetes one
# promtool imports itself stay. The rules tests use none of them.
PLUGINS=minimum
CACHE=${PKM_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/promtool}
OUT="$CACHE/$VERSION-$PLUGINS"

log() { printf '== promtool: %s\n' "$*" >&2; }
complete() { [ -x "$OUT/promtool" ] && "$OUT/promtool" --version >/dev/null 2>&1; }

if [ "${1:-}" = --cached ]; then
  complete && { echo "$OUT/promtool"; exit 0; }
  exit 1
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$VERSION"
if ! flock -n 9; then
  log "another build of $VERSION is running, waiting for it"
  flock 9
fi
if complete; then
  echo "$OUT/promtool"
  exit 0
fi
rm -rf "$OUT" "$OUT".tmp.*
TMP="$OUT.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP"
log "building $MODULE@$VERSION into $OUT (cold: a few minutes)"
t0=$(date +%s)
# In a throwaway module beside the cache, so the project's go.mod is not touched. `go install pkg@version` refuses
# Prometheus (its go.mod has a replace directive), so the module requires it and copies that one replace; the
# versions of everything else are the ones Prometheus's go.mod selects.
mkdir -p "$TMP/mod"
(
  cd "$TMP/mod"
  export GOWORK=off GOFLAGS=-mod=mod
  go mod init pkmanager.invalid/promtool >/dev/null 2>&1
  go mod edit -replace github.com/fsnotify/fsnotify@v1.8.0=github.com/fsnotify/fsnotify@v1.7.0
  go get "$MODULE@$VERSION"
  # A copy of the module with the plugin list emptied replaces it (same go.mod, so the same versions of the rest).
  src=$(go list -m -f '{{.Dir}}' github.com/prometheus/prometheus)
  cp -r "$src" "$TMP/prometheus"
  chmod -R u+w "$TMP/prometheus"
  printf '// The plugin list emptied by pkmanager'"'"'s scripts/promtool.sh (PLUGINS=%s).\n\npackage plugins\n' "$PLUGINS" \
    > "$TMP/prometheus/plugins/plugins.go"
  go mod edit -replace "github.com/prometheus/prometheus=$TMP/prometheus"
  go build -trimpath -o "$TMP/promtool" "$MODULE"
) >&2
rm -rf "$TMP/prometheus"
rm -rf "$TMP/mod"
mv "$TMP" "$OUT"
trap - EXIT
complete || { log "the built promtool does not run"; exit 1; }
log "done in $(( $(date +%s) - t0 ))s: $OUT/promtool"
echo "$OUT/promtool"
