package lodestar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
//
// The server runs with --require-active, and its pool also holds two keys
// no validator of the chain has (interop keys 40 and 41, never active,
// imported first so that they come first in the pool's order). Pod p asks
// while they are all the pool has: its request waits for activation; the
// interop validators are imported meanwhile, and once the server reads
// them active pod p gets one of them, active_ongoing on the beacon node
// itself. At the end pod q, for which only the two outsiders are left,
// waits until its deadline and is told what it waited for.
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

	srv := startServer(t, chain, "--beacon-url", chain.URL, "--reuse-delay", "0s", "--require-active")
	outsiders := srv.importOutsiders(t, chain, 40, 41)
	type result struct {
		got map[string]string
		err error
	}
	pDone := make(chan result, 1)
	go func() {
		got, _, err := srv.requestWithin(t, "p", 1, 110*time.Second)
		pDone <- result{got, err}
	}()
	srv.waitLog(t, "waiting for activation: pod p holds 0 of 1 keys active", 60*time.Second)
	step("pod p waits for activation: the pool holds only keys no validator has")
	srv.importInterop(t, chain, 9, 10, 11)
	pr := <-pDone
	if pr.err != nil {
		t.Fatalf("pod p: %v", pr.err)
	}
	var held string
	for pk := range pr.got {
		held = pk
	}
	interop := map[string]int{lodestartest.InteropPubkey(9): 9, lodestartest.InteropPubkey(10): 10, lodestartest.InteropPubkey(11): 11}
	if _, ok := interop[held]; !ok || len(pr.got) != 1 {
		t.Fatalf("pod p got %v, want one of the interop validators 9..11 (not an outsider %v)", keysOf(pr.got), outsiders)
	}
	if v, err := chain.Validator(ctx, held); err != nil || v.Status != "active_ongoing" {
		t.Fatalf("the beacon node says pod p's key %s... is %+v (%v), want active_ongoing", held[:10], v, err)
	}
	step("pod p got validator %d once the server read it active; the beacon node says active_ongoing", interop[held])
	// A and B are the other two: A = 10 unless p holds it.
	a, b := lodestartest.InteropPubkey(10), ""
	if held == a {
		a = lodestartest.InteropPubkey(9)
	}
	for pk := range interop {
		if pk != a && pk != held {
			b = pk
		}
	}

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

	// B's exit for offline submission: the only unassigned active key
	// left is B (the outsiders are no validators).
	dir := t.TempDir()
	out = mustRun(t, "retire", "--server", srv.grpcAddr, "--count", "1", "--exit", "--out", dir)
	files, _ := filepath.Glob(filepath.Join(dir, "signed_exit_transaction-*-*.json"))
	if len(files) != 1 {
		t.Fatalf("retire --count 1 --exit --out wrote %v: %s", files, out)
	}
	if !strings.Contains(out, b) {
		t.Errorf("retire --count 1 --exit did not pick B %s: %s", b, out)
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
	notice := fmt.Sprintf("validator %d is exited_unslashed", interop[a])
	if !strings.Contains(srv.stderr.String(), "key retired: beacon node: "+notice) {
		t.Errorf("no retirement notice for validator %d in the log", interop[a])
	}
	_, audit := srv.get(t, "/api/v1/audit?action=retire")
	if !strings.Contains(audit, notice) || !strings.Contains(audit, `"actor":"beacon-node"`) {
		t.Errorf("audit trail: %s", audit)
	}
	// Never handed out again: pod p keeps its key; for pod q the pool
	// (deposits off, nothing minted) has only the outsiders, which never
	// activate: q waits for activation until its deadline, and is told so.
	got, _, err := srv.request(t, "p", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got[held]; !ok || len(got) != 1 {
		t.Errorf("pod p got %v, want its key %s", keysOf(got), held)
	}
	_, _, err = srv.requestWithin(t, "q", 1, 6*time.Second)
	if err == nil || !strings.Contains(err.Error(), "wait for activation (--require-active), pod q holds 0 of 1 keys active; it lacks 1") {
		t.Errorf("pod q: %v, want a request that waited for activation until its deadline", err)
	}
	for _, pk := range outsiders {
		if st := srv.keyState(t, pk); st != "available" {
			t.Errorf("outsider %s... is %s, want available (never handed out)", pk[:10], st)
		}
	}
	step("pod q, with only keys no validator has left, waited for activation until its deadline: %v", err)
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
