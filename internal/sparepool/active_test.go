package sparepool_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/sparepool"
	"github.com/pkmanager/pkmanager/internal/store"
)

// With Readings (serve --require-active) an available key that will never
// be active (its validator exited elsewhere) is no spare: the pool mints
// one more. Keys still activating count (they activate ahead of requests).
func TestPoolRequireActiveDepth(t *testing.T) {
	e := newEnv(t, 3, devchain.Config{BlockTime: 100 * time.Millisecond}, nil)
	ctx := context.Background()
	if n, err := e.pool.Refill(ctx); err != nil || n != 3 {
		t.Fatalf("first refill: %d, %v", n, err)
	}
	e.waitAvailable(t, 3)
	var pks []store.Pubkey
	must(t, e.st.ListKeys(ctx, store.ListOptions{States: []store.State{store.StateAvailable}}, func(k store.Key) error {
		pks = append(pks, k.Pubkey)
		return nil
	}))
	now := time.Now()
	read := func(pk store.Pubkey, status string, exit uint64) store.ValidatorReading {
		return store.ValidatorReading{Pubkey: pk, Status: store.ValidatorStatus{Status: status, ActivationEpoch: 2, ExitEpoch: exit, At: now}}
	}
	_, err := e.st.RecordValidators(ctx, []store.ValidatorReading{
		read(pks[0], store.StatusActiveExiting, 9),          // never handed out under --require-active
		read(pks[1], store.StatusPendingQueued, ^uint64(0)), // activating; pks[2] has no reading yet
	}, now)
	must(t, err)
	active, err := sparepool.New(sparepool.Config{Target: 3, Store: e.st, Refiller: e.alloc, Sender: e.dep, Readings: e.st,
		Registerer: prometheus.NewRegistry()})
	must(t, err)
	if d, err := e.pool.Depth(ctx); err != nil || d != 3 {
		t.Errorf("depth without readings %d, %v; want 3", d, err)
	}
	if d, err := active.Depth(ctx); err != nil || d != 2 {
		t.Errorf("depth with readings %d, %v; want 2 (the exiting key does not count)", d, err)
	}
	if n, err := active.Refill(ctx); err != nil || n != 1 {
		t.Fatalf("refill with readings: %d, %v; want 1", n, err)
	}
	e.waitAvailable(t, 4)
	if d, err := active.Depth(ctx); err != nil || d != 3 {
		t.Errorf("depth after the refill %d, %v; want 3", d, err)
	}
	if n, err := e.pool.Refill(ctx); err != nil || n != 0 {
		t.Errorf("refill without readings after: %d, %v; want 0", n, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
