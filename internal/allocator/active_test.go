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
		!strings.Contains(err.Error(), "pod p holds 0 of 2 keys active; it lacks 2: the pool has 1 active keys, and 1 that would cover it wait for activation") {
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

// confirmingDepositor stands in for the deposit sender in unit tests: told
// of new pending keys, it confirms every pending-deposit key at once.
type confirmingDepositor struct {
	st      store.Store
	now     func() time.Time
	changed chan struct{}
}

func (d *confirmingDepositor) CheckFunds(context.Context, int) error { return nil }
func (d *confirmingDepositor) Blocked() error                        { return nil }
func (d *confirmingDepositor) PollInterval() time.Duration           { return 5 * time.Millisecond }
func (d *confirmingDepositor) Changed() <-chan struct{}              { return d.changed }
func (d *confirmingDepositor) Notify() {
	ctx := context.Background()
	var pending []store.Pubkey
	_ = d.st.ListKeys(ctx, store.ListOptions{States: []store.State{store.StatePendingDeposit}}, func(k store.Key) error {
		pending = append(pending, k.Pubkey)
		return nil
	})
	for _, pk := range pending {
		_, _ = d.st.ConfirmDeposit(ctx, pk, 7, d.now())
	}
}

// TestRequireActiveOnChain: with on-chain deposits, keys minted for a
// request are handed out only once active (they wait for their deposits,
// then for activation); spare keys that are still activating are waited
// for instead of minting more.
func TestRequireActiveOnChain(t *testing.T) {
	var dep *confirmingDepositor
	e := newEnv(t, func(c *allocator.Config) {
		dep = &confirmingDepositor{st: c.Store.(store.Store), now: c.Now, changed: make(chan struct{})}
		c.Depositor = dep
		c.RequireActive, c.ActivationPoll = true, 5*time.Millisecond
	})
	ctx := context.Background()
	activate := func(pks ...store.Pubkey) {
		t.Helper()
		var rs []store.ValidatorReading
		for i, pk := range pks {
			rs = append(rs, store.ValidatorReading{Pubkey: pk, Status: store.ValidatorStatus{
				Index: uint64(i), Status: store.StatusActiveOngoing, ExitEpoch: ^uint64(0), At: e.clock.Now()}})
		}
		if _, err := e.st.RecordValidators(ctx, rs, e.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	heldBy := func(pod string) []store.Pubkey {
		var out []store.Pubkey
		_ = e.st.ListKeys(ctx, store.ListOptions{Pod: pod}, func(k store.Key) error {
			out = append(out, k.Pubkey)
			return nil
		})
		return out
	}
	request := func(pod string, n int) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := e.alloc.Request(ctx, pod, "", n)
			done <- err
		}()
		return done
	}
	waiting := func(done chan error, what string) {
		t.Helper()
		time.Sleep(50 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("%s: the request returned before its keys were active: %v", what, err)
		default:
		}
	}
	answered := func(done chan error, what string) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: still waiting 5 s after its keys were active", what)
		}
	}

	// Minted for pod a, deposited at once, not active yet: a waits.
	done := request("a", 2)
	waiting(done, "pod a")
	mine := heldBy("a")
	if len(mine) != 2 || e.minter.keys.Load() != 2 {
		t.Fatalf("pod a holds %d keys, %d minted; want 2 and 2", len(mine), e.minter.keys.Load())
	}
	activate(mine...)
	answered(done, "pod a")

	// Two spare keys, deposited and activating: pod b waits for them and
	// mints nothing.
	spares, err := e.minter.Mint(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddKeys(ctx, spares, store.StateAvailable, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	minted := e.minter.keys.Load()
	done = request("b", 2)
	waiting(done, "pod b")
	if e.minter.keys.Load() != minted {
		t.Errorf("pod b minted %d keys while spare keys were activating", e.minter.keys.Load()-minted)
	}
	activate(spares[0].Pubkey, spares[1].Pubkey)
	answered(done, "pod b")
	if got := heldBy("b"); len(got) != 2 || e.minter.keys.Load() != minted {
		t.Errorf("pod b holds %d keys, minted %d; want the 2 spares", len(got), e.minter.keys.Load()-minted)
	}
}
