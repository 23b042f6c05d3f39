package lifecycle_test

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// plainOpener: the test stores secrets unsealed.
type plainOpener struct{}

func (plainOpener) Open(sealed, _ []byte) ([]byte, error) { return bytes.Clone(sealed), nil }

type env struct {
	st    *bolt.Store
	fake  *beacontest.Fake
	node  *beacon.Node
	w     *lifecycle.Watcher
	clk   *clock
	chain beacon.Chain
	reg   *prometheus.Registry
	logs  *bytes.Buffer
	keys  []*keys.SecretKey
}

func newEnv(t *testing.T, n int, legacy bool) *env {
	t.Helper()
	chain := beacon.Chain{GenesisTime: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), GenesisValidatorsRoot: [32]byte{9, 8, 7},
		CapellaForkVersion: [4]byte{0x40, 0, 0, 0x38}, SecondsPerSlot: 12 * time.Second, SlotsPerEpoch: 32}
	clk := &clock{t: chain.EpochStart(1000).Add(30 * time.Second)}
	f := beacontest.NewFake(chain, clk.Now)
	f.Legacy = legacy
	t.Cleanup(f.Close)
	node, err := beacon.Dial(t.Context(), []string{f.URL()}, beacon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, fake: f, node: node, clk: clk, chain: chain, reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}}
	var nks []store.NewKey
	for range n {
		sk, err := keys.GenerateRandom()
		if err != nil {
			t.Fatal(err)
		}
		e.keys = append(e.keys, sk)
		nks = append(nks, store.NewKey{Pubkey: sk.PublicKey(), SealedSecret: sk.Bytes(), Origin: store.OriginRandom})
	}
	// One key a second, so that Since orders them k0, k1, ...
	for i := range nks {
		if err := st.AddKeys(t.Context(), nks[i:i+1], store.StateAvailable, clk.Now().Add(time.Duration(i-n)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	e.w, err = lifecycle.New(lifecycle.Config{Store: st, Beacon: node, Opener: plainOpener{}, Registerer: e.reg,
		Logger: slog.New(slog.NewTextHandler(e.logs, nil)), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) pk(i int) store.Pubkey { return e.keys[i].PublicKey() }

func (e *env) state(t *testing.T, i int) store.Key {
	t.Helper()
	k, err := e.st.GetKey(t.Context(), e.pk(i))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRefresh: statuses of every key are read in one batched call,
// recorded, counted by status; slashed and exited keys are retired with
// the chain's reason, a key a pod holds that turns slashed is an ERROR
// and a metric; a key the node does not know is "unknown", not retired.
func TestRefresh(t *testing.T) {
	e := newEnv(t, 6, false)
	ctx := t.Context()
	if _, err := e.st.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "", Want: 2, Now: e.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	// k0, k1 held by pod-a: k0 active, k1 slashed. k2 exited, k3 unknown
	// (deposit not processed), k4 pending, k5 active and exiting.
	for i := range 6 {
		if i != 3 {
			e.fake.AddValidator(e.pk(i), uint64(10+i))
		}
	}
	e.fake.SetSlashed(11)
	e.fake.SetEpochs(12, 5, 900)
	e.fake.SetEpochs(14, beacon.FarFutureEpoch, beacon.FarFutureEpoch)
	e.fake.SetEpochs(15, 5, 1003)

	rep, err := e.w.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"active_ongoing": 1, "active_slashed": 1, "exited_unslashed": 1, "unknown": 1, "pending_initialized": 1, "active_exiting": 1}
	for st, n := range want {
		if rep.ByStatus[st] != n {
			t.Errorf("ByStatus %v, want %v", rep.ByStatus, want)
			break
		}
	}
	if got := e.fake.Calls()["POST validators"]; got != 1 || rep.Calls != 1 {
		t.Errorf("POST validators calls %d (report %d), want 1", got, rep.Calls)
	}
	if k := e.state(t, 1); k.State != store.StateRetired || !strings.Contains(k.RetiredReason, "validator 11 is active_slashed") {
		t.Errorf("slashed k1: %s %q", k.State, k.RetiredReason)
	}
	if k := e.state(t, 2); k.State != store.StateRetired || !strings.Contains(k.RetiredReason, "exited_unslashed, exit epoch 900") {
		t.Errorf("exited k2: %s %q", k.State, k.RetiredReason)
	}
	for i, st := range map[int]store.State{0: store.StateAssigned, 3: store.StateAvailable, 4: store.StateAvailable, 5: store.StateAvailable} {
		if k := e.state(t, i); k.State != st {
			t.Errorf("k%d is %s, want %s", i, k.State, st)
		}
	}
	if got := testutil.ToFloat64(e.m(t, "pkmanager_assigned_validators_exiting_total", "active_slashed")); got != 1 {
		t.Errorf("pkmanager_assigned_validators_exiting_total{active_slashed} = %v", got)
	}
	if got := testutil.ToFloat64(e.m(t, "pkmanager_validators", "unknown")); got != 1 {
		t.Errorf("pkmanager_validators{unknown} = %v", got)
	}
	if !strings.Contains(e.logs.String(), "level=ERROR") || !strings.Contains(e.logs.String(), "pod=pod-a") {
		t.Errorf("no ERROR log for pod-a's slashed key:\n%s", e.logs.String())
	}
	vs, err := e.st.Validators(ctx, []store.Pubkey{e.pk(0), e.pk(3), e.pk(5)})
	if err != nil || len(vs) != 2 || vs[e.pk(5)].Status != "active_exiting" || vs[e.pk(5)].ExitEpoch != 1003 || vs[e.pk(0)].Epoch != 1000 {
		t.Errorf("stored readings %+v, %v", vs, err)
	}
	// The next epoch: k5 has exited; retired keys are not read again.
	e.clk.Set(e.chain.EpochStart(1003).Add(time.Second))
	rep, err = e.w.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Keys != 4 {
		t.Errorf("second refresh read %d keys, want 4", rep.Keys)
	}
	if k := e.state(t, 5); k.State != store.StateRetired {
		t.Errorf("exited k5 is %s", k.State)
	}
	// A claim never gets a retired key: the pool is k3 and k4.
	c, err := e.st.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 3, Now: e.clk.Now()})
	if err != nil || len(c.Keys) != 2 || c.Shortfall != 1 {
		t.Errorf("claim of pod-b: %d keys, shortfall %d, %v", len(c.Keys), c.Shortfall, err)
	}
}

func (e *env) m(t *testing.T, name, status string) prometheus.Collector {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == status {
					if m.Counter != nil {
						g.Set(m.Counter.GetValue())
					} else {
						g.Set(m.Gauge.GetValue())
					}
				}
			}
		}
	}
	return g
}

// TestRefreshLegacy: a node without the POST form (Lodestar 1.5.1) is
// asked with GET ?id=.
func TestRefreshLegacy(t *testing.T) {
	e := newEnv(t, 3, true)
	for i := range 3 {
		e.fake.AddValidator(e.pk(i), uint64(i))
	}
	rep, err := e.w.Refresh(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.ByStatus["active_ongoing"] != 3 || e.fake.Calls()["GET validators"] != 1 || e.fake.Calls()["POST validators"] != 0 {
		t.Errorf("ByStatus %v, calls %v", rep.ByStatus, e.fake.Calls())
	}
}

// TestExit: exits are signed with the key (the fake checks the signature
// as process_voluntary_exit does), the keys are marked exiting and retired
// once the chain shows them exited; keys pods hold, keys not on chain and
// inactive validators are refused, changing nothing.
func TestExit(t *testing.T) {
	e := newEnv(t, 5, false)
	ctx := t.Context()
	for i := range 4 { // k4 is not on chain
		e.fake.AddValidator(e.pk(i), uint64(20+i))
	}
	if _, err := e.st.Claim(ctx, store.ClaimParams{Pod: "pod-a", Want: 1, Now: e.clk.Now()}); err != nil { // k0
		t.Fatal(err)
	}
	out, err := e.w.Exit(ctx, lifecycle.ExitRequest{Pubkeys: []store.Pubkey{e.pk(1)}, Submit: true, Reason: "test"})
	if err != nil || len(out) != 1 || !out[0].Submitted {
		t.Fatalf("Exit = %+v, %v", out, err)
	}
	ex := e.fake.Exits()
	if len(ex) != 1 || ex[0].Index != 21 || ex[0].Epoch != 1000 {
		t.Fatalf("the node got %+v", ex)
	}
	if k := e.state(t, 1); k.State != store.StateExiting || !strings.Contains(k.RetiredReason, "submitted") {
		t.Errorf("k1 after its exit: %s %q", k.State, k.RetiredReason)
	}
	// Refused, changing nothing: the assigned k0 without force (says why),
	// k4 not on chain, k1 already exiting on chain.
	for _, tc := range []struct {
		pk   store.Pubkey
		want error
		says string
	}{
		{e.pk(0), store.ErrWrongState, "assigned to pod pod-a"},
		{e.pk(4), lifecycle.ErrNotExitable, "not a validator in the beacon node's head state"},
		{e.pk(1), lifecycle.ErrNotExitable, "active_exiting"},
	} {
		_, err := e.w.Exit(ctx, lifecycle.ExitRequest{Pubkeys: []store.Pubkey{e.pk(2), tc.pk}, Submit: true})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Exit(k2, %s) = %v, want %v saying %q", tc.pk, err, tc.want, tc.says)
		}
	}
	if k := e.state(t, 2); k.State != store.StateAvailable || len(e.fake.Exits()) != 1 {
		t.Errorf("a refused call changed k2 (%s) or submitted (%d exits)", k.State, len(e.fake.Exits()))
	}
	// Forced: k0 leaves pod-a. Offline: signed, not submitted.
	out, err = e.w.Exit(ctx, lifecycle.ExitRequest{Pubkeys: []store.Pubkey{e.pk(0)}, Force: true})
	if err != nil || len(out) != 1 || out[0].Submitted {
		t.Fatalf("forced offline Exit = %+v, %v", out, err)
	}
	if !beacontest.VerifyExit(e.chain, e.pk(0), uint64(out[0].Exit.Message.Epoch), 20, [96]byte(out[0].Exit.Signature)) {
		t.Error("the offline exit does not verify")
	}
	if k := e.state(t, 0); k.State != store.StateExiting || k.Pod != "" || k.LastPod != "pod-a" {
		t.Errorf("k0 after a forced exit: %s pod %q", k.State, k.Pod)
	}
	// Count: the longest idle active unassigned key (k2; k3 came later,
	// k4 is not on chain).
	out, err = e.w.Exit(ctx, lifecycle.ExitRequest{Count: 1, Submit: true})
	if err != nil || len(out) != 1 || out[0].Pubkey != e.pk(2) {
		t.Fatalf("Exit(count 1) = %+v, %v", out, err)
	}
	if _, err := e.w.Exit(ctx, lifecycle.ExitRequest{Count: 2, Submit: true}); !errors.Is(err, lifecycle.ErrNotExitable) {
		t.Errorf("Exit(count 2) with one exitable key left: %v", err)
	}
	// The exits take effect: the keys are retired, never handed out.
	e.clk.Set(e.chain.EpochStart(1006))
	if _, err := e.w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if k := e.state(t, i); k.State != store.StateRetired {
			t.Errorf("k%d after its exit epoch: %s", i, k.State)
		}
	}
	// k0's exit was never submitted: still exiting.
	if k := e.state(t, 0); k.State != store.StateExiting {
		t.Errorf("k0 (not submitted) is %s", k.State)
	}
}
