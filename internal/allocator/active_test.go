package allocator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
)

// TestRequireActive: with RequireActive a request gets only keys the
// store's readings show active; one the pool covers only once activating
// keys are active waits, and fails at its deadline saying what it waited
// for, or succeeds once they are active; one the pool cannot cover even
// then fails at once.
func TestRequireActive(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) {
		c.Minter = nil // all or nothing
		c.RequireActive, c.ActivationPoll = true, 5*time.Millisecond
	})
	ctx := context.Background()
	keys, err := e.minter.Mint(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddKeys(ctx, keys, store.StateAvailable, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	read := func(i int, status string) {
		t.Helper()
		_, err := e.st.RecordValidators(ctx, []store.ValidatorReading{{Pubkey: keys[i].Pubkey, Status: store.ValidatorStatus{
			Index: uint64(i), Status: status, ActivationEpoch: 1, ExitEpoch: ^uint64(0), At: e.clock.Now()}}}, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	read(0, store.StatusActiveOngoing)
	read(1, store.StatusPendingQueued) // k2: no reading yet

	if _, err := e.alloc.Request(ctx, "big", "", 4); !errors.Is(err, allocator.ErrPoolExhausted) {
		t.Errorf("4 keys of a pool of 3: %v, want pool exhausted", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = e.alloc.Request(short, "p", "", 2)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "wait for activation") ||
		!strings.Contains(err.Error(), "pod p holds 0 of 2 keys active; it lacks 2, and the pool has 1 active and 1 keys waiting for activation") {
		t.Errorf("request at its deadline: %v", err)
	}
	if c := e.counts(t); c[store.StateAssigned] != 0 {
		t.Errorf("%d keys assigned by a request that waited", c[store.StateAssigned])
	}

	done := make(chan error, 1)
	var got allocator.Result
	go func() {
		var err error
		got, err = e.alloc.Request(ctx, "p", "", 2)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("request returned before a second key was active: %v", err)
	default:
	}
	read(1, store.StatusActiveOngoing)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request still waiting 5 s after the key activated")
	}
	p := pubkeys(got)
	if len(got.Keys) != 2 || !p[keys[0].Pubkey] || !p[keys[1].Pubkey] {
		t.Errorf("pod p got %d keys, want k0 and k1 (k2 has no reading)", len(got.Keys))
	}
}
