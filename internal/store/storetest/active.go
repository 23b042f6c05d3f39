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
