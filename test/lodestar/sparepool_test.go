package lodestar

import (
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
)

// TestSparePoolOnLodestar: the spare pool (--spare-pool 2) on a Lodestar
// dev chain that follows the execution chain pkmanager deposits on (see
// eth1_test.go), so the keys pkmanager mints become validators.
//
// First without --require-active: the pool mints and deposits 2 keys;
// pod a takes both at once (no minting, no deposit wait) and the pool
// refills with 2 new keys, each deposited once on the contract, while the
// beacon node does not know them yet: "unknown" keys are deposited keys,
// the pool mints no more.
//
// Then the server is started again on its data with --require-active. Pod
// b asks for 2 keys: it waits (with the message) while the refilled keys
// are not active on the beacon node, and nothing is minted meanwhile (keys
// the node does not know yet, or shows pending, are the pool's spares);
// once the server reads them active pod b gets exactly them, and the beacon
// node itself says active_ongoing (their deposits, signed by pkmanager,
// were processed: also pod a's). The pool then refills again.
func TestSparePoolOnLodestar(t *testing.T) {
	const genesis = 16 // interop validators, all run by the node's validator client
	e := startEL(t)
	e.depositInterop(t, genesis)
	chain := lodestartest.StartChain(t, lodestartest.ChainOptions{Validators: genesis, SecondsPerSlot: 2,
		StartValidators: "0.." + strconv.Itoa(genesis-1), Params: e.chainParams(), Args: e.beaconArgs()})
	step := stepper(t)
	ctx := t.Context()
	if fv, err := chain.ConfigForkVersion(ctx); err != nil || fv != minimalGenesisForkVersion {
		t.Fatalf("GENESIS_FORK_VERSION %q (%v), want the minimal preset's %s the genesis deposits were signed for", fv, err, minimalGenesisForkVersion)
	}
	step("execution chain %s (contract %s, %d genesis deposits); beacon node %s follows it", e.chain.RPCEndpoint(),
		e.chain.DepositContract().Hex(), genesis, chain.URL)

	dataDir := filepath.Join(t.TempDir(), "pkm")
	flags := append(e.serveArgs(), "--beacon-url", chain.URL, "--spare-pool", "2", "--reuse-delay", "0s")
	srv := startServerIn(t, chain, dataDir, flags...)
	spares := srv.waitKeys(t, "available", 2, nil, 90*time.Second)
	step("pool filled: %d keys deposited and available", len(spares))

	t0 := time.Now()
	gotA, _, err := srv.request(t, "a", 2)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 20*time.Second {
		t.Errorf("a request from a full pool took %s", took.Round(time.Millisecond))
	}
	if !sameKeys(gotA, spares) {
		t.Fatalf("pod a got %v, want the pool's keys %v", keysOf(gotA), spares)
	}
	refilled := srv.waitKeys(t, "available", 2, spares, 90*time.Second)
	refilledAt := time.Now()
	step("pod a took the 2 spares in %s; the pool refilled with 2 new keys (deposits confirmed)", refilledAt.Sub(t0).Round(time.Millisecond))
	all := append(slices.Clone(spares), refilled...)
	e.checkDeposits(t, genesis, all)

	// A status refresh reads the 4 keys: the beacon node has no validator
	// for them yet (or only a pending one); the pool counts them as the
	// deposited keys they are. (Statuses are read from the first epoch on;
	// genesis may still be ahead.)
	deadline := chain.GenesisTime
	if now := time.Now(); now.After(deadline) {
		deadline = now
	}
	deadline = deadline.Add(4 * chain.EpochDuration())
	for srv.notYetActive(t) != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("no status refresh showed the 4 keys unknown or pending within 4 epochs of the refill or genesis: %s", srv.validatorMetrics(t))
		}
		time.Sleep(time.Second)
	}
	time.Sleep(3 * time.Second) // a pool round (2 s) after the refresh
	if v := srv.metric(t, "pkmanager_spare_pool_keys_minted_total"); v != "4" {
		t.Fatalf("pkmanager_spare_pool_keys_minted_total %s after one request of 2 from a pool of 2, want 4", v)
	}
	if n := len(srv.keys(t)); n != 4 {
		t.Fatalf("%d keys in the store, want 4", n)
	}
	step("statuses read (%s); nothing more minted", srv.validatorMetrics(t))
	srv.stop()

	// Again with --require-active.
	srv = startServerIn(t, chain, dataDir, append(flags, "--require-active")...)
	var gotB map[string]string
	waits := 0
	for deadline := time.Now().Add(8 * time.Minute); ; {
		gotB, _, err = srv.requestWithin(t, "b", 2, 100*time.Second)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "wait for activation (--require-active)") {
			t.Fatalf("pod b: %v", err)
		}
		waits++
		if v := srv.metric(t, "pkmanager_spare_pool_keys_minted_total"); v != "0" {
			t.Fatalf("the pool minted %s keys while its 2 spares activate (%s)", v, srv.validatorMetrics(t))
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod b got no key within 8 min (%s): %v", srv.validatorMetrics(t), err)
		}
	}
	step("pod b got 2 keys %s after their deposits (%d request(s) timed out waiting for activation)", time.Since(refilledAt).Round(time.Second), waits)
	if !sameKeys(gotB, refilled) {
		t.Fatalf("pod b got %v, want the refilled keys %v", keysOf(gotB), refilled)
	}
	for _, pk := range all {
		v, err := chain.Validator(ctx, pk)
		if err != nil || v.Status != "active_ongoing" {
			t.Errorf("the beacon node says %s... is %+v (%v), want active_ongoing", pk[:12], v, err)
		}
		if st := validatorStatus(t, srv, pk); st != "active_ongoing" {
			t.Errorf("GET /api/v1/keys: validator status of %s... %q, want active_ongoing", pk[:12], st)
		}
	}
	if n, _ := strconv.Atoi(srv.metric(t, "pkmanager_validator_activation_seconds_count")); n < 2 {
		t.Errorf("pkmanager_validator_activation_seconds_count %d, want the refilled keys' activations", n)
	}
	step("the 4 keys are active_ongoing on the beacon node; deposit to activation: %s s in total over %s",
		srv.metric(t, "pkmanager_validator_activation_seconds_sum"), srv.metric(t, "pkmanager_validator_activation_seconds_count"))

	again := srv.waitKeys(t, "available", 2, all, 90*time.Second)
	e.checkDeposits(t, genesis, append(all, again...))
	if v := srv.metric(t, "pkmanager_spare_pool_keys_minted_total"); v != "2" {
		t.Errorf("pkmanager_spare_pool_keys_minted_total %s after pod b took 2, want 2", v)
	}
	step("the pool refilled again with 2 keys")
	nobodySlashed(ctx, t, chain)
}

// waitKeys waits until n keys not in except are in state and returns them.
func (s *server) waitKeys(t *testing.T, state string, n int, except []string, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got []string
		for _, k := range s.keys(t) {
			if k.State == state && !slices.Contains(except, k.Pubkey) {
				got = append(got, k.Pubkey)
			}
		}
		if len(got) == n {
			slices.Sort(got)
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d new keys %s after %s, want %d: %+v", len(got), state, within, n, s.keys(t))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// notYetActive is the keys the last status refresh read as unknown or
// pending.
func (s *server) notYetActive(t *testing.T) int {
	t.Helper()
	n := 0
	for _, st := range []string{"unknown", "pending_initialized", "pending_queued"} {
		v, _ := strconv.Atoi(s.metric(t, `pkmanager_validators{status="`+st+`"}`))
		n += v
	}
	return n
}

// validatorMetrics is the nonzero pkmanager_validators series, for messages.
func (s *server) validatorMetrics(t *testing.T) string {
	t.Helper()
	_, body := s.get(t, "/metrics")
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "pkmanager_validators{") && !strings.HasSuffix(line, " 0") {
			out = append(out, strings.TrimPrefix(line, "pkmanager_validators"))
		}
	}
	return strings.Join(out, " ")
}

// checkDeposits checks the contract holds the genesis deposits and then
// exactly one deposit of each of pkmanager's keys.
func (e *el) checkDeposits(t *testing.T, genesis int, keys []string) {
	t.Helper()
	by, total := e.depositsByPubkey(t)
	if total != genesis+len(keys) {
		t.Errorf("%d deposits on the contract, want %d genesis deposits and one per key of %d", total, genesis, len(keys))
	}
	for _, pk := range keys {
		if by[pk] != 1 {
			t.Errorf("key %s... has %d deposits, want 1", pk[:12], by[pk])
		}
	}
}

// sameKeys reports whether got's pubkeys are want.
func sameKeys(got map[string]string, want []string) bool {
	g := slices.Sorted(maps.Keys(got))
	w := slices.Sorted(slices.Values(want))
	return slices.Equal(g, w)
}
