package lodestar

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
)

// TestLifecycleOnLodestar: the validator lifecycle on a real Lodestar dev
// chain whose config lets validators exit at once (SHARD_COMMITTEE_PERIOD
// 0; see below for the fork version exits are signed with). Interop validators 9..11 are the pool
// (nobody runs them). The server reads their statuses from the beacon node
// (active_ongoing on /assignments, pkmanager_validators); pkmanager exit
// submits validator A's exit, which the node accepts (its signature is
// checked by Lodestar's process_voluntary_exit): A is exiting at once,
// active_exiting on chain, then exited_unslashed, and the server retires it
// with the chain's reason. pkmanager retire --count 1 --exit --out writes B's
// signed exit in staking-deposit-cli's format, which the beacon API takes
// as it is (POST /eth/v1/beacon/pool/voluntary_exits). Neither is ever
// handed out again.
func TestLifecycleOnLodestar(t *testing.T) {
	// Lodestar 1.5.1's dev chain cannot leave Altair without an execution
	// engine (its mock does not know the dev genesis block), and before
	// Deneb a node checks an exit's signature with the fork version of the
	// exit's epoch. So the config names Altair's version (minimal preset)
	// as CAPELLA_FORK_VERSION: the server signs over the CAPELLA_FORK_VERSION
	// the node's spec says, exactly as on a post-Deneb chain, and Lodestar
	// verifies over the same version.
	chain := lodestartest.StartChain(t, lodestartest.ChainOptions{Validators: 12, SecondsPerSlot: 2, StartValidators: "0..8",
		Params: map[string]string{"SHARD_COMMITTEE_PERIOD": "0", "CAPELLA_FORK_VERSION": "0x01000001"}})
	step := stepper(t)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	step("beacon node %s, %d s slots, %d slots per epoch", chain.URL, chain.SecondsPerSlot, chain.SlotsPerEpoch)

	srv := startServer(t, chain, "--beacon-url", chain.URL, "--reuse-delay", "0s")
	srv.importInterop(t, chain, 9, 10, 11)
	a, b := lodestartest.InteropPubkey(10), lodestartest.InteropPubkey(9)

	// Statuses appear within an epoch or two of genesis (which may still
	// be ahead).
	start := time.Now()
	if chain.GenesisTime.After(start) {
		start = chain.GenesisTime
	}
	for deadline := start.Add(3 * chain.EpochDuration()); srv.metric(t, `pkmanager_validators{status="active_ongoing"}`) != "3"; {
		if time.Now().After(deadline) {
			t.Fatalf("pkmanager_validators{active_ongoing} = %q after 3 epochs", srv.metric(t, `pkmanager_validators{status="active_ongoing"}`))
		}
		time.Sleep(time.Second)
	}
	if st := validatorStatus(t, srv, a); st != "active_ongoing" {
		t.Errorf("GET /api/v1/keys: validator status of A %q", st)
	}
	step("statuses read: 3 active_ongoing")

	// A pod holds no key yet; exit A and submit it.
	if err := chain.WaitEpoch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "exit", "--server", srv.grpcAddr, "--pubkey", a, "--reason", "lodestar test")
	if !strings.Contains(out, "submitted to the beacon node") {
		t.Fatalf("exit: %s", out)
	}
	if st := srv.keyState(t, a); st != "exiting" {
		t.Errorf("A is %s after its exit, want exiting", st)
	}
	step("exit of A submitted: %s", strings.TrimSpace(out))

	// B's exit for offline submission: the longest-idle unassigned active
	// key is B (9 and 11 were imported together; the order is the pubkey
	// order, so find which one it picked).
	dir := t.TempDir()
	out = mustRun(t, "retire", "--server", srv.grpcAddr, "--count", "1", "--exit", "--out", dir)
	files, _ := filepath.Glob(filepath.Join(dir, "signed_exit_transaction-*-*.json"))
	if len(files) != 1 {
		t.Fatalf("retire --count 1 --exit --out wrote %v: %s", files, out)
	}
	if strings.Contains(out, lodestartest.InteropPubkey(11)) {
		b = lodestartest.InteropPubkey(11)
	}
	if st := srv.keyState(t, b); st != "exiting" {
		t.Errorf("B is %s after retire --exit --out, want exiting", st)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(chain.URL+"/eth/v1/beacon/pool/voluntary_exits", "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the beacon node refused the written exit file %s: %d %s", raw, resp.StatusCode, body)
	}
	step("B's exit written to %s and submitted by hand: %s", filepath.Base(files[0]), raw)

	// Both exit on chain; the server retires them.
	for _, pk := range []string{a, b} {
		for {
			v, err := chain.Validator(ctx, pk)
			if err != nil {
				// Lodestar 1.5.1 sometimes answers 500 while it
				// imports a block ("Must commit changes before
				// reading all nodes"): ask again.
				if ctx.Err() != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Second)
				continue
			}
			if v.Status == "active_exiting" || v.Status == "exited_unslashed" {
				step("%s... is %s on chain, exit epoch %d", pk[:10], v.Status, v.ExitEpoch)
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s never exiting on chain: %+v", pk, v)
			}
			time.Sleep(time.Second)
		}
	}
	for _, pk := range []string{a, b} {
		for srv.keyState(t, pk) != "retired" {
			if ctx.Err() != nil {
				t.Fatalf("%s is %s, never retired", pk, srv.keyState(t, pk))
			}
			time.Sleep(time.Second)
		}
		if st := validatorStatus(t, srv, pk); st != "exited_unslashed" && st != "withdrawal_possible" {
			t.Errorf("retired %s... has validator status %q", pk[:10], st)
		}
	}
	step("A and B retired once exited on chain")
	if !strings.Contains(srv.stderr.String(), "key retired: beacon node: validator 10 is exited_unslashed") {
		t.Errorf("no retirement notice for validator 10 in the log")
	}
	_, audit := srv.get(t, "/api/v1/audit?action=retire")
	if !strings.Contains(audit, "validator 10 is exited_unslashed") || !strings.Contains(audit, `"actor":"beacon-node"`) {
		t.Errorf("audit trail: %s", audit)
	}
	// Never handed out again: of the pool (deposits off, nothing minted)
	// only the third key is left; a second pod finds the pool empty.
	got, _, err := srv.request(t, "p", 1)
	if err != nil {
		t.Fatal(err)
	}
	third := lodestartest.InteropPubkey(11)
	if b == third {
		third = lodestartest.InteropPubkey(9)
	}
	if _, ok := got[third]; !ok {
		t.Errorf("pod p got %v, want the third pool key", keysOf(got))
	}
	if _, ok := got[a]; ok {
		t.Error("exited key A handed out")
	}
	if _, ok := got[b]; ok {
		t.Error("exited key B handed out")
	}
	if _, _, err := srv.request(t, "q", 1); err == nil || !strings.Contains(err.Error(), "pool exhausted") {
		t.Errorf("pod q: %v, want pool exhausted (A and B are retired)", err)
	}
	if v := srv.metric(t, `pkmanager_assigned_validators_exiting_total{status="active_exiting"}`); v != "" && v != "0" {
		t.Errorf("exits pkmanager made raised the held-key alarm: %s", v)
	}
}

// validatorStatus is the key's validator status in GET /api/v1/keys.
func validatorStatus(t *testing.T, srv *server, pubkey string) string {
	t.Helper()
	_, body := srv.get(t, "/api/v1/keys")
	var v struct {
		Keys []struct {
			Pubkey    string `json:"pubkey"`
			Validator *struct {
				Status string `json:"status"`
			} `json:"validator"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("/api/v1/keys: %v", err)
	}
	for _, k := range v.Keys {
		if k.Pubkey == pubkey && k.Validator != nil {
			return k.Validator.Status
		}
	}
	return ""
}
