package reusegate_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/reusegate"
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

type env struct {
	st    *bolt.Store
	fake  *beacontest.Fake
	node  *beacon.Node
	gate  *reusegate.Gate
	clk   *clock
	chain beacon.Chain
}

func pk(i int) store.Pubkey {
	var p store.Pubkey
	p[0], p[1], p[2] = 0xb0, byte(i>>8), byte(i)
	return p
}

func newEnv(t testing.TB, delay time.Duration) *env {
	t.Helper()
	chain := beacon.Chain{GenesisTime: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), GenesisValidatorsRoot: [32]byte{9},
		SecondsPerSlot: 12 * time.Second, SlotsPerEpoch: 32}
	clk := &clock{t: chain.EpochStart(100).Add(90 * time.Second)}
	f := beacontest.NewFake(chain, clk.Now)
	t.Cleanup(f.Close)
	n, err := beacon.Dial(t.Context(), []string{f.URL()}, beacon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g, err := reusegate.New(reusegate.Config{Store: st, Beacon: n, ReuseDelay: delay, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: st, fake: f, node: n, gate: g, clk: clk, chain: chain}
}

// release gives pod keys 1..n (validators 1..n) and releases them held for
// the gate at the clock's time.
func (e *env) release(t testing.TB, pod string, from, n int) {
	t.Helper()
	var nks []store.NewKey
	for i := from; i < from+n; i++ {
		nks = append(nks, store.NewKey{Pubkey: pk(i), SealedSecret: []byte{1}, Origin: store.OriginImported})
		e.fake.AddValidator(pk(i), uint64(i))
	}
	now := e.clk.Now()
	if _, err := e.st.AddAssigned(t.Context(), store.AddParams{Pod: pod, Want: n, Keys: nks, Now: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Release(t.Context(), store.ReleaseParams{Pod: pod, Until: reusegate.HoldUntil, Now: now, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) key(t testing.TB, i int) store.Key {
	t.Helper()
	k, err := e.st.GetKey(t.Context(), pk(i))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// at sets the clock a slot into epoch ep and checks the epoch before.
func (e *env) check(t testing.TB, ep uint64) error {
	t.Helper()
	e.clk.Set(e.chain.EpochStart(ep + 1).Add(e.chain.SecondsPerSlot))
	return e.gate.Check(t.Context(), ep)
}

// A released key is cleared only after QuietEpochs full quiet epochs and the
// reuse delay; the epoch of its release does not count.
func TestClearedAfterQuietEpochs(t *testing.T) {
	e := newEnv(t, 30*time.Minute)
	released := e.clk.Now() // in epoch 100
	e.release(t, "pod-a", 1, 2)
	for _, ep := range []uint64{100, 101} {
		if err := e.check(t, ep); err != nil {
			t.Fatal(err)
		}
		if k := e.key(t, 1); !reusegate.Held(k.CoolingUntil) {
			t.Fatalf("after epoch %d: %s until %s, want still held", ep, k.State, k.CoolingUntil)
		}
	}
	if err := e.check(t, 102); err != nil {
		t.Fatal(err)
	}
	k := e.key(t, 1)
	if k.State != store.StateCoolingDown || !k.CoolingUntil.Equal(released.Add(30*time.Minute)) {
		t.Fatalf("after two quiet full epochs: %s until %s, want cooling-down until the reuse delay (%s)", k.State, k.CoolingUntil, released.Add(30*time.Minute))
	}
	// With the delay already over, the key is reusable at once.
	e2 := newEnv(t, 0)
	e2.release(t, "pod-b", 1, 1)
	for _, ep := range []uint64{100, 101, 102} {
		if err := e2.check(t, ep); err != nil {
			t.Fatal(err)
		}
	}
	if k := e2.key(t, 1); k.State != store.StateCoolingDown || k.CoolingUntil.After(e2.clk.Now()) {
		t.Errorf("delay 0: %s until %s, want due now", k.State, k.CoolingUntil)
	}
}

// A key that is not an active validator yet has no duties, so a quiet
// liveness answer says nothing of it: it stays held until it is active and
// has been quiet QuietEpochs epochs. An exited validator cannot sign: its
// quiet epochs count.
func TestNotActiveYetStaysHeld(t *testing.T) {
	e := newEnv(t, 0)
	e.release(t, "pod-a", 1, 3)
	e.fake.SetEpochs(1, beacon.FarFutureEpoch, beacon.FarFutureEpoch) // deposit processed, not eligible yet
	e.fake.SetEpochs(2, 0, 101)                                       // exits at 101
	e.fake.SetEpochs(3, 104, beacon.FarFutureEpoch)                   // queued, active from 104
	for _, ep := range []uint64{100, 101, 102, 103} {
		if err := e.check(t, ep); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{1, 3} {
			if k := e.key(t, i); !reusegate.Held(k.CoolingUntil) {
				t.Fatalf("after epoch %d: pending key %d is %s until %s, want held", ep, i, k.State, k.CoolingUntil)
			}
		}
	}
	if k := e.key(t, 2); reusegate.Held(k.CoolingUntil) {
		t.Errorf("exited key 2 still held after epochs 101, 102 (%s)", k.CoolingUntil)
	}
	for _, ep := range []uint64{104, 105} {
		if err := e.check(t, ep); err != nil {
			t.Fatal(err)
		}
	}
	if k := e.key(t, 3); reusegate.Held(k.CoolingUntil) {
		t.Errorf("key 3, active and quiet in 104 and 105, still held")
	}
	if k := e.key(t, 1); !reusegate.Held(k.CoolingUntil) {
		t.Errorf("key 1, never active, cleared")
	}
	// Liveness cannot show the pending key live either: Vet does not refuse it.
	if live, err := e.gate.Vet(t.Context(), []store.Pubkey{pk(1)}); err != nil || len(live) != 0 {
		t.Errorf("Vet(pending) = %v, %v", live, err)
	}
}

// A key live after its release is quarantined; it comes back only after
// QuietEpochs consecutive quiet epochs.
func TestLiveAfterReleaseQuarantined(t *testing.T) {
	e := newEnv(t, 0)
	e.release(t, "pod-a", 1, 2)
	e.fake.SetLive(101, 1)
	if err := e.check(t, 101); err != nil {
		t.Fatal(err)
	}
	k := e.key(t, 1)
	if k.State != store.StateStillSigning || k.LastPod != "pod-a" {
		t.Fatalf("key live after its release: %s, want still-signing", store.Key(k).State)
	}
	events, err := e.st.ListAudit(t.Context(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if last := events[len(events)-1]; last.Action != "still-signing" || last.Actor != reusegate.Actor {
		t.Errorf("audit %+v", last)
	}
	if k := e.key(t, 2); k.State != store.StateCoolingDown {
		t.Errorf("the quiet key 2 is %s", k.State)
	}
	// Live again, then quiet twice: back to cooling-down.
	e.fake.SetLive(102, 1)
	for _, ep := range []uint64{102, 103} {
		if err := e.check(t, ep); err != nil {
			t.Fatal(err)
		}
		if k := e.key(t, 1); k.State != store.StateStillSigning {
			t.Fatalf("after epoch %d: %s, want still-signing", ep, k.State)
		}
	}
	if err := e.check(t, 104); err != nil {
		t.Fatal(err)
	}
	if k := e.key(t, 1); k.State != store.StateCoolingDown {
		t.Errorf("after two quiet epochs: %s, want cooling-down", k.State)
	}
}

// A beacon node that does not answer clears nothing, the gate says so, and
// the missed epoch breaks the count.
func TestBeaconDownBlocksReuse(t *testing.T) {
	e := newEnv(t, 0)
	e.release(t, "pod-a", 1, 1)
	if err := e.check(t, 101); err != nil {
		t.Fatal(err)
	}
	e.fake.SetDown(true)
	if err := e.check(t, 102); !errors.Is(err, beacon.ErrUnavailable) {
		t.Fatalf("Check with the node down = %v", err)
	}
	if err := e.gate.Ready(); !errors.Is(err, reusegate.ErrUnavailable) {
		t.Errorf("Ready = %v, want ErrUnavailable", err)
	}
	if k := e.key(t, 1); !reusegate.Held(k.CoolingUntil) {
		t.Fatalf("cleared while the node was down: %s until %s", k.State, k.CoolingUntil)
	}
	e.fake.SetDown(false)
	// Epoch 102 was never seen: 103 starts the count again.
	if err := e.check(t, 103); err != nil {
		t.Fatal(err)
	}
	if k := e.key(t, 1); !reusegate.Held(k.CoolingUntil) {
		t.Fatalf("cleared after a gap: %s until %s", k.State, k.CoolingUntil)
	}
	if err := e.gate.Ready(); err != nil {
		t.Errorf("Ready after the node answered = %v", err)
	}
	if err := e.check(t, 104); err != nil {
		t.Fatal(err)
	}
	if k := e.key(t, 1); reusegate.Held(k.CoolingUntil) {
		t.Errorf("not cleared after two consecutive quiet epochs")
	}
}

// Vet: live in the current or the previous epoch means not handed out; no
// answer means not handed out either.
func TestVet(t *testing.T) {
	e := newEnv(t, 0)
	for i := 1; i <= 3; i++ {
		e.fake.AddValidator(pk(i), uint64(i))
	}
	cur := e.chain.Epoch(e.clk.Now())
	e.fake.SetLive(cur, 1)
	e.fake.SetLive(cur-1, 2)
	e.fake.SetLive(cur-2, 3)
	live, err := e.gate.Vet(t.Context(), []store.Pubkey{pk(1), pk(2), pk(3), pk(4)})
	if err != nil || len(live) != 2 || live[0] != pk(1) || live[1] != pk(2) {
		t.Fatalf("Vet = %v, %v; want keys 1 and 2", live, err)
	}
	e.fake.SetDown(true)
	if _, err := e.gate.Vet(t.Context(), []store.Pubkey{pk(1)}); !errors.Is(err, reusegate.ErrUnavailable) {
		t.Errorf("Vet with the node down = %v", err)
	}
}

// BenchmarkCheck10k measures one epoch's check of 10,000 released keys: the
// time and the requests to the beacon node (indices once, then liveness in
// batches of 1,000).
//
//	go test -run x -bench Check10k ./internal/reusegate/
func BenchmarkCheck10k(b *testing.B) {
	e := newEnv(b, 0)
	const n = 10_000
	for start := 1; start <= n; start += 1000 {
		e.release(b, fmt.Sprintf("pod-%d", start), start, 1000)
	}
	if err := e.check(b, 100); err != nil { // the release epoch: indices are read
		b.Fatal(err)
	}
	// Every round checks epoch 101 for all 10,000 keys (quiet, so counted
	// once and never cleared: each round does the whole work of an epoch).
	e.clk.Set(e.chain.EpochStart(102).Add(e.chain.SecondsPerSlot))
	before := e.node.Calls()
	b.ResetTimer()
	for range b.N {
		if err := e.gate.Check(b.Context(), 101); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(e.node.Calls()-before)/float64(b.N), "calls/epoch")
}
