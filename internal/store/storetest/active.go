package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Claims that hand out only active validators (ClaimParams.RequireActive,
// store.ReadyForDuties and store.Activating).
var activeTests = []testCase{
	{name: "Claim/RequireActive", fn: testClaimRequireActive},
	{name: "Claim/RequireActive/AllOrNothing", fn: testClaimRequireActiveAllOrNothing},
	{name: "Claim/RequireActive/FollowsKeys", fn: testClaimRequireActiveFollowsKeys},
}

// activePool: k7 and k8 cooling-down (due at 5), k1..k6 available; the
// readings: k1 k5 k7 active_ongoing, k2 pending_queued, k3 and k8 none,
// k4 active_exiting (an exit made elsewhere), k6 pending_initialized.
func activePool(t *testing.T, s store.Store) {
	t.Helper()
	addKeys(t, s, store.StateAvailable, at(0), 7, 8)
	claim(t, s, "pod-x", "X", 2, at(1))
	release(t, s, "pod-x", "X", at(5), at(2))
	addKeys(t, s, store.StateAvailable, at(3), 1, 2, 3, 4, 5, 6)
	_, err := s.RecordValidators(t.Context(), []store.ValidatorReading{
		reading(1, store.StatusActiveOngoing, farFuture, false, 7, at(4)),
		reading(2, store.StatusPendingQueued, farFuture, false, 7, at(4)),
		reading(4, store.StatusActiveExiting, 20, false, 7, at(4)),
		reading(5, store.StatusActiveOngoing, farFuture, false, 7, at(4)),
		reading(6, store.StatusPendingInitialized, farFuture, false, 7, at(4)),
		reading(7, store.StatusActiveOngoing, farFuture, false, 7, at(4)),
	}, at(4))
	must(t, err)
}

func activeClaim(t *testing.T, s store.Store, pod string, want int, token string, now time.Time) store.Claim {
	t.Helper()
	p := store.ClaimParams{Pod: pod, PodUID: "U" + pod, Want: want, Now: now, RequireActive: true}
	if token != "" {
		p.ReserveToken, p.ReserveUntil = token, now.Add(time.Minute)
	} else {
		p.AllOrNothing = true
	}
	c, err := s.Claim(t.Context(), p)
	if err != nil {
		t.Fatalf("Claim(%s, want %d, RequireActive): %v", pod, want, err)
	}
	return c
}

func wantActive(t *testing.T, c store.Claim, activating int, inactive []store.Pubkey, reserved int) {
	t.Helper()
	if c.Activating != activating || !slices.Equal(c.Inactive, inactive) {
		t.Errorf("claim Activating %d, Inactive %s; want %d, %s", c.Activating, names(c.Inactive), activating, names(inactive))
	}
	got := 0
	if c.Reservation != nil {
		got = c.Reservation.Count
	}
	if got != reserved {
		t.Errorf("claim reserved %d keys, want %d", got, reserved)
	}
}

func testClaimRequireActive(t *testing.T, s store.Store) {
	activePool(t, s)
	// Only active keys, available ones first, then due cooling-down ones.
	c := activeClaim(t, s, "pod-a", 3, "ta", at(10))
	wantClaim(t, c, pks(1, 5, 7), 0, 3)
	wantActive(t, c, 0, nil, 0)
	// No active key left: k2 k3 k6 k8 are activating and count as keys in
	// progress (no reservation for them); k4 is exiting and never counts.
	c = activeClaim(t, s, "pod-b", 4, "tb", at(11))
	wantClaim(t, c, nil, 4, 0)
	wantActive(t, c, 4, nil, 0)
	c = activeClaim(t, s, "pod-c", 6, "tc", at(11))
	wantClaim(t, c, nil, 4, 0)
	wantActive(t, c, 4, nil, 2)
	// k2 activates: pod-b takes it and still waits for three.
	_, err := s.RecordValidators(t.Context(), []store.ValidatorReading{reading(2, store.StatusActiveOngoing, farFuture, false, 8, at(12))}, at(12))
	must(t, err)
	c = activeClaim(t, s, "pod-b", 4, "tb", at(13))
	wantClaim(t, c, pks(2), 3, 1)
	wantActive(t, c, 3, nil, 0)
	// A pod's own keys that are not ready are reported.
	_, err = s.RecordValidators(t.Context(), []store.ValidatorReading{reading(1, store.StatusActiveExiting, 30, false, 8, at(14))}, at(14))
	must(t, err)
	c = activeClaim(t, s, "pod-a", 3, "ta", at(15))
	wantClaim(t, c, pks(1, 5, 7), 0, 0)
	wantActive(t, c, 0, pks(1), 0)
	// Without RequireActive any claimable key goes, in the usual order.
	c = claim(t, s, "pod-d", "Upod-d", 2, at(16))
	wantClaim(t, c, pks(3, 4), 0, 2)
	if c.Activating != 0 || c.Inactive != nil {
		t.Errorf("claim without RequireActive: Activating %d, Inactive %s", c.Activating, names(c.Inactive))
	}
}

func testClaimRequireActiveAllOrNothing(t *testing.T, s store.Store) {
	activePool(t, s)
	// Three active keys cannot cover four: nothing is taken; two of the
	// four activating keys would cover the rest.
	before := takeSnapshot(t, s)
	c := activeClaim(t, s, "pod-e", 5, "", at(10))
	wantClaim(t, c, nil, 5, 0)
	if c.Available != 3 {
		t.Errorf("Available %d, want the 3 active keys", c.Available)
	}
	wantActive(t, c, 2, nil, 0)
	unchanged(t, s, before)
	c = activeClaim(t, s, "pod-e", 3, "", at(10))
	wantClaim(t, c, pks(1, 5, 7), 0, 3)
	wantActive(t, c, 0, nil, 0)
}

// testClaimRequireActiveFollowsKeys: a key's readiness follows it through
// every way into and out of the pool (a backend may keep the ready keys
// indexed), whether its reading came before or after the move.
func testClaimRequireActiveFollowsKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	read := func(sec int, rs ...store.ValidatorReading) {
		t.Helper()
		_, err := s.RecordValidators(ctx, rs, at(sec))
		must(t, err)
	}
	active := func(i, sec int) store.ValidatorReading {
		return reading(i, store.StatusActiveOngoing, farFuture, false, 7, at(sec))
	}
	// k1 read active while its deposit is pending, then confirmed; k2's
	// deposit fails, it is read active, and recovered.
	addPending(t, s, "", "", 0, nks(1, 2), at(0))
	setTx(t, s, 1, at(0))
	setTx(t, s, 2, at(0))
	must(t, s.FailDeposit(ctx, PK(2), "reverted", at(1)))
	read(1, active(1, 1), active(2, 1))
	confirm(t, s, PK(1), 9, at(2))
	if _, err := s.RecoverDeposit(ctx, PK(2), 9, "found", at(2)); err != nil {
		t.Fatal(err)
	}
	// k3 is quarantined and cooled down until 30; k4 retired; k5 (pending
	// queued) exits; k7 is read active, then exiting; k8 has no reading,
	// then a pending one.
	addKeys(t, s, store.StateAvailable, at(0), 3, 4, 5, 7, 8)
	read(1, active(3, 1), active(4, 1), reading(5, store.StatusPendingQueued, farFuture, false, 7, at(1)), active(7, 1))
	if _, err := s.Quarantine(ctx, pks(3), "seen signing", at(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CoolDown(ctx, pks(3), at(30), at(3)); err != nil {
		t.Fatal(err)
	}
	must(t, s.Retire(ctx, PK(4), "lost", at(2)))
	if _, err := s.Exit(ctx, store.ExitParams{Pubkeys: pks(5), Reason: "shrink", Now: at(2)}); err != nil {
		t.Fatal(err)
	}
	read(3, reading(7, store.StatusActiveExiting, 20, false, 8, at(3)), reading(8, store.StatusPendingInitialized, farFuture, false, 8, at(3)))
	// k6 goes to pod-x, is read active there, released until 5 and swept
	// back into the available keys.
	addAssigned(t, s, "pod-x", "X", 1, nks(6), 0)
	read(1, active(6, 1))
	release(t, s, "pod-x", "X", at(5), at(2))
	if _, err := s.Sweep(ctx, at(6)); err != nil {
		t.Fatal(err)
	}
	// The ready keys are k1, k2 and k6; k8 activates; k3 is not due.
	c := activeClaim(t, s, "pod-a", 5, "ta", at(10))
	wantClaim(t, c, pks(1, 2, 6), 1, 3)
	wantActive(t, c, 1, nil, 1)
	// Once due, k3 goes; k8 still counts.
	c = activeClaim(t, s, "pod-b", 2, "tb", at(31))
	wantClaim(t, c, pks(3), 1, 1)
	wantActive(t, c, 1, nil, 0)
	// k8 activates and goes; then the pool has no key that will ever be
	// handed out under RequireActive (k7 exits).
	read(32, active(8, 32))
	c = activeClaim(t, s, "pod-b", 2, "tb", at(33))
	wantClaim(t, c, pks(3, 8), 0, 1)
	wantActive(t, c, 0, nil, 0)
	c = activeClaim(t, s, "pod-c", 1, "tc", at(34))
	wantClaim(t, c, nil, 0, 0)
	wantActive(t, c, 0, nil, 1)
}
