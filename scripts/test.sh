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

log "go vet"
go vet ./...

log "go test (race detector on concurrent packages)"
go test -race -count=1 ./internal/store/... ./internal/allocator/... ./internal/grpcapi/... ./internal/httpapi/...

log "go test (everything)"
go test -count=1 "$@" ./...
