package lodestar

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
)

// stillSigningKeyIsNotReused: pkmanager's reuse gate on a real beacon
// node. Interop validators p and q are the pool. Pod a gets one of them and
// its key is pushed into validator client A, which attests with it; then
// pod a is released by hand while A keeps running the key. The beacon node
// sees the key live after its release: pkmanager quarantines it
// (still-signing: state, metric, ERROR log, audit) and hands it to nobody,
// so pod c's request fails while pod b gets the other key. Once A deletes
// the key, it is handed out again only after --quiet-epochs quiet epochs,
// with A's EIP-3076 history into client B, where it attests again. Nobody
// is slashed.
func stillSigningKeyIsNotReused(t *testing.T, chain *lodestartest.Chain, p, q int) {
	step := stepper(t)
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()

	const quietEpochs = 2
	srv := startServer(t, chain, "--beacon-url", chain.URL, "--quiet-epochs", strconv.Itoa(quietEpochs), "--reuse-delay", "0s")
	if v := srv.metric(t, "pkmanager_reuse_chain_evidence"); v != "1" {
		t.Fatalf("pkmanager_reuse_chain_evidence = %q, want 1", v)
	}
	if code, body := srv.get(t, "/readyz"); code != 200 || strings.Contains(body, "note:") {
		t.Errorf("/readyz with an answering beacon node: %d %q, want ok and no note", code, body)
	}
	srv.importInterop(t, chain, p, q)
	step("pkmanager up with --beacon-url; interop validators %d and %d imported", p, q)

	index := map[string]uint64{lodestartest.InteropPubkey(p): uint64(p), lodestartest.InteropPubkey(q): uint64(q)}
	gotA, pw, err := srv.request(t, "a", 1)
	if err != nil {
		t.Fatal(err)
	}
	var key, ks string
	for k, v := range gotA {
		key, ks = k, v
	}
	other := lodestartest.InteropPubkey(p)
	if key == other {
		other = lodestartest.InteropPubkey(q)
	}
	_ = pw
	vcA := chain.StartValidatorClient(t)
	if st, err := vcA.ImportKeystores(ctx, []string{ks}, []string{lodestartest.KeystorePassword}, lodestartest.EmptyInterchange(chain.GenesisValidatorsRoot)); err != nil || st[0].Status != "imported" {
		t.Fatalf("import into A: %+v %v", st, err)
	}
	liveA, err := chain.WaitLive(ctx, chain.Epoch(), 7, index[key])
	if err != nil {
		t.Fatal(err)
	}
	step("pod a got validator %d; client A signs with it (live in epoch %d)", index[key], liveA)

	// Released by hand; client A keeps signing.
	out := mustRun(t, "release", "--server", srv.grpcAddr, "--pod-name", "a")
	released, releasedEpoch := time.Now(), chain.Epoch()
	if !strings.Contains(out, "once the beacon node has seen them quiet") {
		t.Errorf("release answer %q does not say the key waits for the beacon node", out)
	}
	step("pod a released in epoch %d while client A keeps the key: %s", releasedEpoch, strings.TrimSpace(out))

	// pod b gets the other key; nobody gets the one still signing.
	gotB, _, err := srv.request(t, "b", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := gotB[other]; !ok {
		t.Fatalf("pod b got %v, want the key nobody runs (%s)", keysOf(gotB), other)
	}
	deadline := released.Add(5 * chain.EpochDuration())
	for srv.keyState(t, key) != "still-signing" {
		if time.Now().After(deadline) {
			t.Fatalf("key %s is %s %s after its release while client A signs with it, want still-signing", key, srv.keyState(t, key), time.Since(released).Round(time.Second))
		}
		if _, _, err := srv.request(t, "c", 1); err == nil {
			t.Fatalf("pod c got a key while the released key is still signing in client A")
		}
		time.Sleep(time.Second)
	}
	step("key quarantined as still-signing %s after its release (clock epoch %d)", time.Since(released).Round(time.Second), chain.Epoch())
	if v := srv.metric(t, "pkmanager_still_signing_total"); v != "1" {
		t.Errorf("pkmanager_still_signing_total = %q, want 1", v)
	}
	if !strings.Contains(srv.stderr.String(), `"level":"ERROR","msg":"released key is still signing`) {
		t.Errorf("no ERROR log line for the still-signing key")
	}
	if _, body := srv.get(t, "/api/v1/audit"); !strings.Contains(body, "still-signing") || !strings.Contains(body, "reuse-gate") {
		t.Errorf("audit trail has no still-signing event by the reuse gate: %.500s", body)
	}
	if _, body := srv.get(t, "/assignments"); !strings.Contains(body, `<tr class="still-signing">`) {
		t.Errorf("/assignments does not show the still-signing key")
	}
	// While A signs, the key stays out: c keeps failing for a few more epochs.
	hold := time.Now().Add(2 * chain.EpochDuration())
	for time.Now().Before(hold) {
		if got, _, err := srv.request(t, "c", 1); err == nil {
			t.Fatalf("pod c got %v while client A still signs", keysOf(got))
		}
		time.Sleep(2 * time.Second)
	}
	if st := srv.keyState(t, key); st != "still-signing" {
		t.Fatalf("key is %s while client A still signs with it", st)
	}

	// A stops; after the quiet epochs the key is handed out again.
	_, history, deletes, err := vcA.RemoveKeystores(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	stopped, stoppedEpoch := time.Now(), chain.Epoch()
	step("client A deleted the key in epoch %d (%d DELETEs)", stoppedEpoch, deletes)
	var gotC map[string]string
	for {
		gotC, _, err = srv.request(t, "c", 1)
		if err == nil {
			break
		}
		if time.Since(stopped) > time.Duration(quietEpochs+4)*chain.EpochDuration() {
			t.Fatalf("key not reusable %s after client A stopped: %v (state %s)", time.Since(stopped).Round(time.Second), err, srv.keyState(t, key))
		}
		time.Sleep(time.Second)
	}
	reuseEpoch := chain.Epoch()
	if _, ok := gotC[key]; !ok {
		t.Fatalf("pod c got %v, want %s", keysOf(gotC), key)
	}
	// Quiet from the stop's epoch at the earliest (when A had not attested
	// in it yet), and the gate judges an epoch once it has ended.
	if reuseEpoch < stoppedEpoch+quietEpochs {
		t.Errorf("reused in epoch %d after a stop in epoch %d: fewer than %d quiet epochs can have passed", reuseEpoch, stoppedEpoch, quietEpochs)
	}
	step("pod c got the key in epoch %d, %s after client A stopped", reuseEpoch, time.Since(stopped).Round(time.Second))

	vcB := chain.StartValidatorClient(t)
	if st, err := vcB.ImportKeystores(ctx, []string{gotC[key]}, []string{lodestartest.KeystorePassword}, history); err != nil || st[0].Status != "imported" {
		t.Fatalf("import into B: %+v %v", st, err)
	}
	liveB, err := chain.WaitLive(ctx, chain.Epoch(), 7, index[key])
	if err != nil {
		t.Fatal(err)
	}
	step("client B signs with the key (live in epoch %d)", liveB)
	nobodySlashed(ctx, t, chain)
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
