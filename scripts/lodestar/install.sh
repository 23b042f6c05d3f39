#!/usr/bin/env bash
# Installs (or reuses) Lodestar 1.5.1, the consensus client (beacon node + validator client) that the chain tests
# run (internal/lodestartest), from the npm registry only, with the machine's Node.js and npm.
#
# The install itself is lodestar-install.sh (beside this file), pinned by Lodestar's own v1.5.1 yarn.lock
# (lodestar-v1.5.1.yarn.lock). It is cached under
#   ${PKM_LODESTAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/lodestar}/<hash>/
# where <hash> is the first 16 hex digits of sha256(lock file, lodestar-install.sh, "node<major>"): a new lock, a
# new recipe or another Node.js major (native modules) installs afresh; internal/lodestartest computes the same
# directory. A cold install takes 1.5-11 min on 2 cores (measured 2-3 min), 230 MB; a warm run a second.
#
# usage: scripts/lodestar/install.sh            installs if needed; prints the install directory
#        scripts/lodestar/install.sh --cached   prints it only if already installed (exit 1 otherwise)
#        (export PKM_LODESTAR=$(scripts/lodestar/install.sh) before go test)
# Never export a variable whose name starts with LODESTAR_: the Lodestar CLI reads those as flags.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/lodestar-v1.5.1.yarn.lock"
RECIPE="$HERE/lodestar-install.sh"
MARKER=.pkm-lodestar-complete

log() { printf '== lodestar-install: %s\n' "$*" >&2; }

command -v node >/dev/null || { log "no node (Node.js 20 and npm are needed)"; exit 1; }
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
HASH=$({ cat "$LOCK" "$RECIPE"; printf 'node%s\n' "$NODE_MAJOR"; } | sha256sum | cut -c1-16)
CACHE=${PKM_LODESTAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/lodestar}
OUT="$CACHE/$HASH"

complete() { [ -f "$OUT/$MARKER" ] && [ -f "$OUT/node_modules/@chainsafe/lodestar/lib/index.js" ]; }

if [ "${1:-}" = --cached ]; then
  complete && { echo "$OUT"; exit 0; }
  exit 1
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$HASH"
if ! flock -n 9; then
  log "another install of $HASH is running, waiting for it"
  flock 9
fi
if complete; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

# An unfinished install, or leftovers of one that was killed (we hold the lock: nobody else is writing them).
rm -rf "$OUT" "$OUT".tmp.* "$CACHE/.yarn-cache-$HASH" "$CACHE/.bin-$HASH"
TMP="$OUT.tmp.$$"
trap 'rm -rf "$TMP" "$CACHE/.yarn-cache-$HASH" "$CACHE/.bin-$HASH"' EXIT
# node-gyp runs @chainsafe/blst's wrapper step as `python` (its binding.gyp); a fresh Debian names the interpreter
# python3 only (unless python-is-python3 is installed), and the step then fails with make's Error 127.
if ! command -v python >/dev/null; then
  PY=$(command -v python3) || { log "no python3 (node-gyp needs it: apt-get install python3)"; exit 1; }
  mkdir -p "$CACHE/.bin-$HASH"
  ln -sf "$PY" "$CACHE/.bin-$HASH/python"
  export PATH="$CACHE/.bin-$HASH:$PATH"
fi
log "installing lodestar 1.5.1 into $OUT (cold: 1.5-11 min, 230 MB)"
t0=$(date +%s)
# yarn's download cache is kept beside the install only while it runs (the install is the cache).
YARN_CACHE_FOLDER="$CACHE/.yarn-cache-$HASH" LSDIR="$TMP" YARN_DIR="$CACHE/yarn-1.22.22" LOCKFILE="$LOCK" \
  bash "$RECIPE" >&2
mv "$TMP" "$OUT"
# The tree still works where it now is (nothing in it depends on its first path).
node "$OUT/node_modules/@chainsafe/lodestar/lib/index.js" --version 2>/dev/null | grep -q 'v1\.5\.1' \
  || { rm -rf "$OUT"; log "the moved install does not run"; exit 1; }
touch "$OUT/$MARKER"
trap - EXIT
rm -rf "$CACHE/.yarn-cache-$HASH" "$CACHE/.bin-$HASH"
log "done in $(( $(date +%s) - t0 ))s: $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
