package allocator_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// Two Allocators on one store play two replicas: each has its own
// in-process pod locks, so duplicate requests of one pod on them meet only
// in the store (its mint reservations).

// replica returns another Allocator on e's store and clock, with its own
// minter.
func (e *env) replica(t *testing.T, mod func(*allocator.Config)) (*allocator.Allocator, *fakeMinter) {
	t.Helper()
	m := &fakeMinter{kek: e.kek}
	cfg := allocator.Config{Store: e.st, Opener: e.kek, Minter: m, ReuseDelay: 10 * time.Minute, Now: e.clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	a, err := allocator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, m
}

type answer struct {
	r   allocator.Result
	err error
}

// requestAsync runs a Request in the background.
func requestAsync(ctx context.Context, a *allocator.Allocator, pod string, n int) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		r, err := a.Request(ctx, pod, "", n)
		ch <- answer{r, err}
	}()
	return ch
}

// gate blocks a minter's first call until release is closed, and reports
// when it is entered.
func gate(m *fakeMinter) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	m.gate = func(ctx context.Context, n int) error {
		first := false
		once.Do(func() { first = true; close(entered) })
		if !first {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return entered, release
}

// The failure the HA test caught with a lock taken only at a shortfall:
// replica A mints a pod's shortfall while keys return to the pool, and a
// duplicate on replica B must neither fill the pod from the pool nor mint,
// but wait for A's keys.
func TestReplicasMintOnce(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	b, bMinter := e.replica(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	entered, release := gate(e.minter)
	first := requestAsync(t.Context(), e.alloc, "validator-0", 3)
	<-entered
	// Keys come back to the pool while A mints.
	if err := e.st.AddKeys(t.Context(), newKeys(t, e, 3), store.StateAvailable, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	dup := requestAsync(t.Context(), b, "validator-0", 3)
	select {
	case a := <-dup:
		t.Fatalf("the duplicate on replica B answered (%d keys, recycled %d, minted %d, %v) while A mints", len(a.r.Keys), a.r.Recycled, a.r.Minted, a.err)
	case <-time.After(150 * time.Millisecond):
	}
	close(release)
	a, d := <-first, <-dup
	if a.err != nil || d.err != nil {
		t.Fatalf("requests: %v, %v", a.err, d.err)
	}
	if !sameSet(a.r, d.r) || len(a.r.Keys) != 3 || a.r.Minted != 3 || d.r.Minted != 0 || d.r.Recycled != 0 {
		t.Fatalf("A: %d keys minted %d; B: %d keys, minted %d, recycled %d; want one set of 3 minted by A",
			len(a.r.Keys), a.r.Minted, len(d.r.Keys), d.r.Minted, d.r.Recycled)
	}
	if calls := e.minter.calls.Load() + bMinter.calls.Load(); calls != 1 {
		t.Fatalf("minter called %d times for one pod's duplicates", calls)
	}
	if c := e.counts(t); c[store.StateAvailable] != 3 || c[store.StateAssigned] != 3 {
		t.Fatalf("counts %v: the returned keys must stay in the pool, the minted ones with the pod", c)
	}
	storetest.CheckInvariants(t, e.st)
}

// newKeys mints n keys outside any allocator (for the pool).
func newKeys(t *testing.T, e *env, n int) []store.NewKey {
	t.Helper()
	m := &fakeMinter{kek: e.kek}
	keys, err := m.Mint(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// A replica that reserved a pod's shortfall and died holds the pod up only
// until its reservation expires; then a duplicate takes over and mints.
func TestReplicaTakesOverAfterExpiry(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReservationLease = time.Minute })
	now := e.clock.Now()
	c, err := e.st.Claim(t.Context(), store.ClaimParams{Pod: "validator-0", Want: 2, Now: now, ReserveToken: "dead-replica", ReserveUntil: now.Add(time.Minute)})
	if err != nil || c.Reservation == nil {
		t.Fatalf("reserve for a dead replica: %+v, %v", c, err)
	}
	res := requestAsync(t.Context(), e.alloc, "validator-0", 2)
	select {
	case a := <-res:
		t.Fatalf("answered (%v) while another replica's reservation is live", a.err)
	case <-time.After(150 * time.Millisecond):
	}
	if e.minter.calls.Load() != 0 {
		t.Fatal("minted while another replica's reservation is live")
	}
	e.clock.Advance(time.Minute)
	select {
	case a := <-res:
		if a.err != nil || len(a.r.Keys) != 2 || a.r.Minted != 2 {
			t.Fatalf("after the expiry: %d keys, minted %d, %v; want 2 minted", len(a.r.Keys), a.r.Minted, a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no takeover after the reservation expired")
	}
	// The dead replica's token is worth nothing now.
	_, err = e.st.AddAssigned(t.Context(), store.AddParams{Pod: "validator-0", Want: 2, Keys: newKeys(t, e, 2), Now: e.clock.Now(), ReserveToken: "dead-replica"})
	if !errors.Is(err, store.ErrReservationLost) {
		t.Fatalf("AddAssigned under the dead replica's token: %v, want ErrReservationLost", err)
	}
}

// A request whose minting fails releases its reservation: a duplicate on
// another replica goes ahead at once instead of waiting for the expiry.
func TestMintFailureReleasesReservation(t *testing.T) {
	e := newEnv(t, nil) // the fake clock never reaches the lease's end
	b, _ := e.replica(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	failing := make(chan error, 1)
	e.minter.gate = func(ctx context.Context, n int) error {
		close(entered)
		<-release
		return errors.New("entropy source broken")
	}
	go func() {
		_, err := e.alloc.Request(t.Context(), "validator-0", "", 2)
		failing <- err
	}()
	<-entered
	dup := requestAsync(t.Context(), b, "validator-0", 2)
	close(release)
	if err := <-failing; err == nil {
		t.Fatal("request succeeded although minting failed")
	}
	select {
	case a := <-dup:
		if a.err != nil || len(a.r.Keys) != 2 || a.r.Minted != 2 {
			t.Fatalf("duplicate: %d keys, minted %d, %v", len(a.r.Keys), a.r.Minted, a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the duplicate still waits for a reservation whose holder failed")
	}
}

// A holder renews its reservation while minting takes longer than the
// lease, so a duplicate keeps waiting instead of minting too. Real clock:
// the lease leaves room for renewals (every lease/3) delayed by a loaded
// machine's scheduling and fsyncs (60 ms failed at load 12).
func TestReservationRenewedWhileMinting(t *testing.T) {
	const lease = 500 * time.Millisecond
	e := newEnv(t, func(c *allocator.Config) { c.ReservationLease = lease; c.Now = time.Now })
	b, bMinter := e.replica(t, func(c *allocator.Config) { c.ReservationLease = lease; c.Now = time.Now })
	entered, release := gate(e.minter)
	first := requestAsync(t.Context(), e.alloc, "validator-0", 2)
	<-entered
	dup := requestAsync(t.Context(), b, "validator-0", 2)
	time.Sleep(4 * lease)
	close(release)
	a, d := <-first, <-dup
	if a.err != nil || d.err != nil {
		t.Fatalf("requests: %v, %v", a.err, d.err)
	}
	if bMinter.calls.Load() != 0 || e.minter.calls.Load() != 1 || !sameSet(a.r, d.r) {
		t.Fatalf("minter calls %d and %d; want the holder's only, one set", e.minter.calls.Load(), bMinter.calls.Load())
	}
}

// A release on another replica does not wait for a request that is
// minting: it deletes the reservation, the minted keys are never stored,
// and the request claims the pod again.
func TestReleaseDuringMint(t *testing.T) {
	e := newEnv(t, nil)
	b, _ := e.replica(t, nil)
	entered, release := gate(e.minter)
	first := requestAsync(t.Context(), e.alloc, "validator-0", 2)
	<-entered
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := b.Release(ctx, "validator-0", ""); err != nil {
		t.Fatalf("release while another replica mints: %v", err)
	}
	close(release)
	a := <-first
	if a.err != nil || len(a.r.Keys) != 2 || a.r.Minted != 2 {
		t.Fatalf("request: %d keys, minted %d, %v", len(a.r.Keys), a.r.Minted, a.err)
	}
	if e.minter.calls.Load() != 2 {
		t.Fatalf("minter called %d times; want 2 (the first batch lost its reservation)", e.minter.calls.Load())
	}
	if c := e.counts(t); c[store.StateAssigned] != 2 || c[store.StateAvailable] != 0 {
		t.Fatalf("counts %v: the first batch must not be stored", c)
	}
	storetest.CheckInvariants(t, e.st)
}
