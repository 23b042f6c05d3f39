#!/usr/bin/env bash
# End-to-end test of on-chain deposits against a real execution client:
# builds geth from the Go module proxy (cached under ~/.cache/pkmanager),
# runs `geth --dev` on loopback, deploys the deposit contract with
# `pkmanager deposit-contract deploy`, runs `pkmanager serve` against geth's
# HTTP JSON-RPC, requests keys for several pods at once, and checks the
# deposits in the contract's logs: exactly one per minted key, each with the
# key's withdrawal credentials, 32 ETH and a valid signature.
#
# usage: scripts/e2e-geth.sh           the test (building geth first if needed)
#        scripts/e2e-geth.sh --build   only builds geth if needed
set -euo pipefail
cd "$(dirname "$0")/.."

GETH_VERSION=v1.17.10
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/geth-$GETH_VERSION"
GETH="$CACHE/bin/geth"
FORK_VERSION=0x10000038
WITHDRAWAL=0x000000000000000000000000000000000000dEaD

log() { printf '== e2e-geth: %s\n' "$*" >&2; }
fail() { printf 'e2e-geth: FAIL: %s\n' "$*" >&2; exit 1; }

# geth is built under a lock, so that a build started ahead (`--build`, which
# .ci/run runs beside its other builds) and the test's own wait for each other.
mkdir -p "$CACHE/bin"
exec 8>"$CACHE/.lock"
flock 8
if [ ! -x "$GETH" ]; then
  log "building geth $GETH_VERSION (once; cached in $CACHE)"
  if ! GOBIN="$CACHE/bin" GOFLAGS= go install "github.com/ethereum/go-ethereum/cmd/geth@$GETH_VERSION"; then
    log "go install failed; building in a scratch module"
    scratch=$(mktemp -d)
    (cd "$scratch" && go mod init gethbuild >/dev/null &&
      GOFLAGS=-mod=mod go get "github.com/ethereum/go-ethereum@$GETH_VERSION" &&
      go build -o "$GETH" github.com/ethereum/go-ethereum/cmd/geth)
    rm -rf "$scratch"
  fi
fi
exec 8>&-
if [ "${1:-}" = --build ]; then
  "$GETH" version >/dev/null
  exit 0
fi
"$GETH" version | sed -n 1,2p >&2 # sed reads it all: head could SIGPIPE geth (exit 141 under pipefail)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${keep:-}" = "" ]; then rm -rf "$work"; else log "kept $work"; fi
}
trap cleanup EXIT
trap 'keep=1' ERR

log "building pkmanager"
go build -o "$work/pkmanager" ./cmd/pkmanager
pkm="$work/pkmanager"

# A free loopback port for geth's HTTP JSON-RPC.
port=$(go run ./scripts/freeport)
rpc="http://127.0.0.1:$port"
ipc="$work/geth.ipc"
log "starting geth --dev on $rpc (1 s blocks)"
"$GETH" --dev --dev.period 1 --datadir "$work/geth" --ipcpath "$ipc" \
  --http --http.addr 127.0.0.1 --http.port "$port" --http.api eth,net,web3 \
  --port 0 --authrpc.port 0 --nodiscover --maxpeers 0 --verbosity 2 >"$work/geth.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do
  [ -S "$ipc" ] && "$GETH" attach --exec 'eth.blockNumber' "$ipc" >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { cat "$work/geth.log" >&2; fail "geth did not start"; }
  sleep 0.2
done

# The funder: a fresh key, funded from geth's dev account.
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/funder.hex"
: >"$work/empty"
funder=0x$("$GETH" account import --datadir "$work/acct" --password "$work/empty" "$work/funder.hex" 2>/dev/null |
  sed -n 's/^Address: {\([0-9a-f]*\)}$/\1/p')
[ ${#funder} = 42 ] || fail "could not derive the funder address"
"$GETH" attach --exec "eth.sendTransaction({from: eth.accounts[0], to: '$funder', value: web3.toWei(100000, 'ether')})" "$ipc" >/dev/null
for i in $(seq 50); do
  bal=$("$GETH" attach --exec "eth.getBalance('$funder').toString(10)" "$ipc" | tr -d '"')
  [ "$bal" != "0" ] && break
  [ "$i" = 50 ] && fail "funding the funder $funder failed"
  sleep 0.2
done
log "funder $funder has $bal wei"

contract=$("$pkm" deposit-contract deploy --eth1-rpc "$rpc" --funder-key-file "$work/funder.hex" 2>"$work/deploy.log") ||
  { cat "$work/deploy.log" >&2; fail "deploy"; }
log "deposit contract at $contract"

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/kek.hex"
"$pkm" serve --data-dir "$work/data" --kek-file "$work/kek.hex" --network e2e --fork-version "$FORK_VERSION" \
  --withdrawal-address "$WITHDRAWAL" --eth1-rpc "$rpc" --deposit-contract "$contract" \
  --funder-key-file "$work/funder.hex" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
  --reuse-delay 0s --log-format json --watch=false --auth none >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
for i in $(seq 150); do
  grpc=$(sed -n 's/^  grpc: *\([0-9.:]*\) .*/\1/p' "$work/serve.out")
  [ -n "$grpc" ] && break
  [ "$i" = 150 ] && { cat "$work/serve.out" "$work/serve.log" >&2; fail "server did not start"; }
  sleep 0.2
done
grep -q "deposits:.*on chain via execution node http://127.0.0.1:$port, chain ID 1337" "$work/serve.out" ||
  { cat "$work/serve.out" >&2; fail "banner does not show on-chain deposits"; }
log "server on $grpc"

# Several pods at once.
declare -A want=([validator-0]=3 [validator-1]=5 [validator-2]=8 [validator-3]=1 [validator-4]=16)
start=$(date +%s)
rpids=()
for pod in "${!want[@]}"; do
  "$pkm" request --server "$grpc" --pod-name "$pod" --keys "${want[$pod]}" --out "$work/keys/$pod" \
    --insecure-kdf --timeout 2m >"$work/request-$pod.out" 2>&1 &
  rpids+=($!)
done
for p in "${rpids[@]}"; do wait "$p" || { cat "$work"/request-*.out >&2; fail "a request failed"; }; done
log "requests answered in $(( $(date +%s) - start )) s"
total=0
for pod in "${!want[@]}"; do
  n=${want[$pod]}
  total=$((total + n))
  grep -Eq "pod $pod holds $n keys? \(recycled 0, minted $n\)" "$work/request-$pod.out" ||
    fail "$pod: $(cat "$work/request-$pod.out")"
done
# Asking again returns the same keys and deposits nothing.
"$pkm" request --server "$grpc" --pod-name validator-2 --keys 8 --out "$work/keys/validator-2" --insecure-kdf >"$work/again.out" 2>&1
grep -q "minted 0" "$work/again.out" || fail "repeat request: $(cat "$work/again.out")"

# The deposits, from the contract's logs; every signature is verified.
"$pkm" deposit-contract events --eth1-rpc "$rpc" --deposit-contract "$contract" --fork-version "$FORK_VERSION" \
  >"$work/events.txt" || { cat "$work/events.txt" >&2; fail "deposit events do not verify"; }
ls "$work"/keys/*/keystores/ | sed -n 's/^keystore-\(0x[0-9a-f]*\)\.json$/\1/p' | sort >"$work/held.txt"
awk '{print $2}' "$work/events.txt" | sort >"$work/deposited.txt"
passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else fail "$1"; fi; }
check "one key per requested slot" '[ "$(wc -l <"$work/held.txt")" = "$total" ]'
check "exactly $total deposits" '[ "$(wc -l <"$work/events.txt")" = "$total" ]'
check "no key deposited twice" '[ -z "$(uniq -d "$work/deposited.txt")" ]'
check "every held key deposited, nothing else" 'cmp -s "$work/held.txt" "$work/deposited.txt"'
wc=0x01$(printf '0%.0s' $(seq 22))$(echo "${WITHDRAWAL#0x}" | tr 'A-F' 'a-f')
check "withdrawal credentials and 32 ETH" '[ "$(awk -v wc="$wc" '"'"'$3 != wc || $4 != 32000000000'"'"' "$work/events.txt" | wc -l)" = 0 ]'
check "all signatures valid" '[ "$(grep -c " signature-ok$" "$work/events.txt")" = "$total" ]'
check "server confirmed every deposit" '[ "$(grep -c "\"msg\":\"deposit confirmed\"" "$work/serve.log")" = "$total" ]'
blocks=$(awk '{print $5}' "$work/events.txt" | sort -u | wc -l)
log "$total deposits in $blocks block(s)"
echo "e2e-geth: $passed passed, 0 failed"
