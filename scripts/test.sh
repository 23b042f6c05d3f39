#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). On a fresh Debian
# machine with Go it installs what the tests need (Chromium for the browser
# test of /assignments) and runs every test, the race detector on the packages
# with concurrent state.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {
  log "installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Chromium for the /assignments browser test. Without it the test skips
# locally and fails when CI=true.
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium || log "could not install chromium: the browser test will skip (and fail under CI=true)"
fi

# curl: the README's commands use it, and TestREADMECommands runs them.
if ! command -v curl >/dev/null 2>&1; then
  apt_install curl || log "could not install curl: TestREADMECommands will fail"
fi

# Real kube-apiserver/etcd/kubectl for test/k8s and internal/kube (.ci/run builds
# them; here they are used when cached). Without them those tests skip, and
# fail under CI=true.
if [ -z "${PKM_K8S_ASSETS:-}" ]; then
  if PKM_K8S_ASSETS=$(bash scripts/k8s-test-binaries.sh --cached); then
    export PKM_K8S_ASSETS
    log "kubernetes test binaries: $PKM_K8S_ASSETS"
  else
    log "no kubernetes test binaries cached: run scripts/k8s-test-binaries.sh (7-17 min) or the k8s tests skip"
  fi
fi

# Lodestar 1.5.1 for the chain tests (internal/lodestartest; .ci/run installs
# it, here it is used when cached). Without it those tests skip, and fail
# under CI=true.
if [ -z "${PKM_LODESTAR:-}" ]; then
  if PKM_LODESTAR=$(bash scripts/lodestar/install.sh --cached); then
    export PKM_LODESTAR
    log "lodestar: $PKM_LODESTAR"
  else
    log "no Lodestar cached: run scripts/lodestar/install.sh (1.5-11 min) or the chain tests skip"
  fi
fi

# promtool for the test of the alert rules in deploy/monitoring (.ci/run builds
# it from the Go module proxy; here it is used when cached). Without it that
# test skips, and fails under CI=true.
if [ -z "${PKM_PROMTOOL:-}" ]; then
  if PKM_PROMTOOL=$(bash scripts/promtool.sh --cached); then
    export PKM_PROMTOOL
    log "promtool: $PKM_PROMTOOL"
  else
    log "no promtool cached: run scripts/promtool.sh (a few minutes, once) or the rules test skips"
  fi
fi

# PostgreSQL for the store backend, replica, HA and backup tests: the server in
# PKM_TEST_POSTGRES, else a local one (installed and started here) with a
# throwaway database. Without one those tests skip locally and fail under CI=true.
if [ -z "${PKM_TEST_POSTGRES:-}" ]; then
  # shellcheck source=scripts/postgres-test-db.sh
  source scripts/postgres-test-db.sh || log "no PostgreSQL: its tests will skip (and fail under CI=true)"
fi

log "go vet"
go vet ./...

# The packages with concurrent state run once, under the race detector (every
# test of theirs, as in the plain run); the rest run without it below.
race_pkgs=$(go list ./internal/store/... ./internal/allocator/... ./internal/grpcapi/... ./internal/httpapi/... \
  ./internal/kube/watcher/... ./internal/kube/auth/... ./internal/kube/leader/... ./internal/ownership/...)
log "go test (race detector on concurrent packages)"
# shellcheck disable=SC2086
go test -race -count=1 "$@" $race_pkgs

# The real Lodestar chains (test/lodestar) spend most of their time waiting
# for epochs, so they run beside the rest (their output is shown when they
# end); the real cluster (test/node) runs alone afterwards.
log "go test: real Lodestar chains (test/lodestar), in the background"
lodestar_log=$(mktemp)
go test -count=1 -timeout 30m "$@" ./test/lodestar/ >"$lodestar_log" 2>&1 &
lodestar_pid=$!
trap 'kill "$lodestar_pid" 2>/dev/null || true; rm -f "$lodestar_log"' EXIT

log "go test (everything but the race-tested packages, the real cluster and the Lodestar chains)"
# The longest packages first, so that they do not start last and run alone
# at the end (go test runs -p packages at a time, in the order given).
slow_pkgs="./test/integration ./internal/lodestartest ./test/ha ./test/k8s ./internal/server"
# shellcheck disable=SC2086
rest_pkgs=$(go list ./... | grep -v -x -F $(printf -- '-e %s ' $race_pkgs $(go list $slow_pkgs) \
  github.com/pkmanager/pkmanager/test/node github.com/pkmanager/pkmanager/test/lodestar))
# shellcheck disable=SC2086
go test -count=1 "$@" $slow_pkgs $rest_pkgs

# A real one-node Kubernetes (test/node; .ci/run builds its binaries, here they
# are used when cached): alone, as it takes the machine's CPUs and the node's
# host paths. Without the binaries or root it skips, and fails under CI=true.
log "go test: the real one-node cluster (test/node)"
go test -count=1 -timeout 20m "$@" ./test/node/

log "go test: real Lodestar chains (test/lodestar), waiting for them"
lodestar_rc=0
wait "$lodestar_pid" || lodestar_rc=$?
cat "$lodestar_log"
if [ "$lodestar_rc" != 0 ]; then
  log "test/lodestar failed (exit $lodestar_rc)"
  exit "$lodestar_rc"
fi

# On-chain deposits against a real geth --dev (builds geth once into
# ~/.cache/pkmanager; never skipped).
log "end-to-end: deposits on geth --dev"
bash scripts/e2e-geth.sh
