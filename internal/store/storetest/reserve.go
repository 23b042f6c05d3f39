package storetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var reserveTests = []testCase{
	{name: "Reserve/Shortfall", fn: testReserveShortfall},
	{name: "Reserve/FulfilAssigned", fn: testReserveFulfilAssigned},
	{name: "Reserve/OwnToken", fn: testReserveOwnToken},
	{name: "Reserve/ExpiryTakeover", fn: testReserveExpiry},
	{name: "Reserve/RenewAndRelease", fn: testReserveRenewRelease},
	{name: "Reserve/ReleaseOfPod", fn: testReserveReleaseOfPod},
	{name: "Reserve/PodUID", fn: testReservePodUID},
	{name: "Reserve/LoadDropsReservations", fn: testReserveLoad},
	{name: "Concurrent/ReserveOnce", fn: testConcurrentReserveOnce},
	{name: "Concurrent/ReserveMintOnce", fn: testConcurrentReserveMint},
	{name: "Concurrent/ReserveFulfilAndRelease", fn: testConcurrentReserveRelease},
}

// reserveClaim claims for pod with a reservation token and fails the test
// on an error.
func reserveClaim(t *testing.T, s store.Store, pod, uid string, want int, token string, now, until time.Time) store.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: now, ReserveToken: token, ReserveUntil: until})
	if err != nil {
		t.Fatalf("Claim(%s, %q, want %d, token %q): %v", pod, uid, want, token, err)
	}
	return c
}

// wantReservation checks a Claim's Reservation: none when token is empty.
func wantReservation(t *testing.T, c store.Claim, token string, count int, until time.Time) {
	t.Helper()
	r := c.Reservation
	switch {
	case token == "" && r != nil:
		t.Errorf("claim reports reservation %+v, want none", *r)
	case token == "":
	case r == nil:
		t.Errorf("claim reports no reservation, want %s for %d keys until %s", token, count, us(until))
	case r.Token != token || r.Count != count || !r.Until.Equal(us(until)):
		t.Errorf("claim reports reservation %s for %d keys until %s; want %s for %d until %s",
			r.Token, r.Count, r.Until, token, count, us(until))
	}
}

// addWith calls AddAssigned (pending false) or AddPending under token.
func addWith(t *testing.T, s store.Store, pending bool, pod, uid string, want int, keys []store.NewKey, now time.Time, token string) error {
	t.Helper()
	p := store.AddParams{Pod: pod, PodUID: uid, Want: want, Keys: keys, Now: now, ReserveToken: token}
	if pending {
		return s.AddPending(t.Context(), p)
	}
	_, err := s.AddAssigned(t.Context(), p)
	return err
}

// A claim with a token reserves what the pod still lacks after the pool;
// while that reservation is live, every other claim for the pod counts it
// as held and takes nothing for it; AddPending under the token fulfils and
// deletes it.
func testReserveShortfall(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	c := reserveClaim(t, s, "pod-a", "A", 3, "tok-1", at(1), at(60))
	wantClaim(t, c, pks(1), 0, 1)
	wantReservation(t, c, "tok-1", 2, at(60))

	// Keys come back to the pool: claims of other callers, with and
	// without a token of their own, leave them there.
	addKeys(t, s, store.StateAvailable, at(2), 2, 3)
	before := takeSnapshot(t, s)
	c = reserveClaim(t, s, "pod-a", "A", 3, "tok-2", at(3), at(70))
	wantClaim(t, c, pks(1), 0, 0)
	wantReservation(t, c, "tok-1", 2, at(60))
	c = claim(t, s, "pod-a", "A", 3, at(4))
	wantClaim(t, c, pks(1), 0, 0)
	wantReservation(t, c, "tok-1", 2, at(60))
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 3, Now: at(5), AllOrNothing: true})
	must(t, err)
	wantClaim(t, c, pks(1), 0, 0)
	wantReservation(t, c, "tok-1", 2, at(60))
	unchanged(t, s, before)

	// Wanting more than held and reserved tops up beyond the reservation.
	c = reserveClaim(t, s, "pod-a", "A", 4, "tok-2", at(6), at(70))
	wantClaim(t, c, pks(1, 2), 0, 1)
	wantReservation(t, c, "tok-1", 2, at(60))

	// The holder adds its minted keys: all of them are intended for the
	// pod (it lacks 4 - 2), and the reservation is gone.
	if err := addWith(t, s, true, "pod-a", "A", 4, nks(10, 11), at(7), "tok-1"); err != nil {
		t.Fatalf("AddPending under the reservation's token: %v", err)
	}
	c = reserveClaim(t, s, "pod-a", "A", 4, "tok-2", at(8), at(70))
	wantClaim(t, c, pks(1, 2), 0, 0)
	wantPending(t, c, pks(10, 11))
	wantReservation(t, c, "", 0, time.Time{})
	for _, k := range c.Pending {
		if k.Pod != "pod-a" || k.PodUID != "A" {
			t.Errorf("minted key %s: pod %q, UID %q; want pod-a, A", name(k.Pubkey), k.Pod, k.PodUID)
		}
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 2, store.StateAvailable: 1, store.StatePendingDeposit: 2})

	// A reservation is fulfilled once.
	before = takeSnapshot(t, s)
	err = addWith(t, s, true, "pod-a", "A", 4, nks(12), at(9), "tok-1")
	wantErr(t, err, store.ErrReservationLost)
	unchanged(t, s, before)
}

// AddAssigned under the token fulfils the reservation; under another token
// it fails and changes nothing; without a token, keys for a pod whose
// shortfall another caller reserved are spares.
func testReserveFulfilAssigned(t *testing.T, s store.Store) {
	c := reserveClaim(t, s, "pod-a", "A", 2, "tok-1", at(1), at(60))
	wantClaim(t, c, nil, 0, 0)
	wantReservation(t, c, "tok-1", 2, at(60))

	before := takeSnapshot(t, s)
	err := addWith(t, s, false, "pod-a", "A", 2, nks(10, 11), at(2), "tok-2")
	wantErr(t, err, store.ErrReservationLost)
	err = addWith(t, s, false, "pod-b", "B", 2, nks(10, 11), at(2), "tok-1")
	wantErr(t, err, store.ErrReservationLost)
	unchanged(t, s, before)

	// Without a token the live reservation counts as held: both keys are
	// spares, and the answer still reports the reservation.
	c, err = s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-a", PodUID: "A", Want: 2, Keys: nks(20, 21), Now: at(3)})
	must(t, err)
	wantClaim(t, c, nil, 0, 0)
	wantReservation(t, c, "tok-1", 2, at(60))
	for _, i := range []int{20, 21} {
		if k := getKey(t, s, PK(i)); k.State != store.StateAvailable || k.Pod != "" {
			t.Errorf("key %s added without the token: %s, want an available spare", name(PK(i)), describe(k))
		}
	}

	c, err = s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-a", PodUID: "A", Want: 2, Keys: nks(11, 10), Now: at(4), ReserveToken: "tok-1"})
	must(t, err)
	wantClaim(t, c, pks(10, 11), 0, 0)
	wantReservation(t, c, "", 0, time.Time{})
	wantKey(t, c.Keys[0], store.Key{
		Pubkey: PK(10), State: store.StateAssigned, Origin: store.OriginRandom, Pod: "pod-a", PodUID: "A", LastPod: "pod-a",
		Since: us(at(4)), CreatedAt: us(at(4)), SealedSecret: sealed(10),
	})
	// Its reservation gone, the next claim takes from the pool as usual.
	c = reserveClaim(t, s, "pod-a", "A", 3, "tok-2", at(5), at(60))
	wantClaim(t, c, pks(10, 11, 20), 0, 1)
	wantReservation(t, c, "", 0, time.Time{})
}

// A claim under the token of the pod's reservation replaces it with what the
// pod lacks now, or deletes it when the pool covers the pod.
func testReserveOwnToken(t *testing.T, s store.Store) {
	c := reserveClaim(t, s, "pod-a", "A", 3, "tok-1", at(1), at(60))
	wantReservation(t, c, "tok-1", 3, at(60))
	addKeys(t, s, store.StateAvailable, at(2), 1)
	c = reserveClaim(t, s, "pod-a", "A", 3, "tok-1", at(3), at(90))
	wantClaim(t, c, pks(1), 0, 1)
	wantReservation(t, c, "tok-1", 2, at(90))
	addKeys(t, s, store.StateAvailable, at(4), 2, 3, 4)
	c = reserveClaim(t, s, "pod-a", "A", 3, "tok-1", at(5), at(90))
	wantClaim(t, c, pks(1, 2, 3), 0, 2)
	wantReservation(t, c, "", 0, time.Time{})
	// Gone: the token no longer fulfils anything.
	err := addWith(t, s, false, "pod-a", "A", 3, nks(10), at(6), "tok-1")
	wantErr(t, err, store.ErrReservationLost)
	// A pod holding what it wants reserves nothing.
	c = reserveClaim(t, s, "pod-a", "A", 3, "tok-2", at(7), at(90))
	wantClaim(t, c, pks(1, 2, 3), 0, 0)
	wantReservation(t, c, "", 0, time.Time{})
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 3, store.StateAvailable: 1})
}

// A reservation is live while Now < Until. An expired one holds nothing
// back: another caller takes over (and the holder's token is lost), or a
// claim that takes keys deletes it. Until then its holder may still fulfil
// it.
func testReserveExpiry(t *testing.T, s store.Store) {
	wantReservation(t, reserveClaim(t, s, "pod-a", "A", 2, "tok-1", at(1), at(10)), "tok-1", 2, at(10))
	// Just before the expiry it is live; at Until it is not.
	c := reserveClaim(t, s, "pod-a", "A", 2, "tok-2", at(10).Add(-time.Microsecond), at(40))
	wantReservation(t, c, "tok-1", 2, at(10))
	c = reserveClaim(t, s, "pod-a", "A", 2, "tok-2", at(10), at(40))
	wantClaim(t, c, nil, 0, 0)
	wantReservation(t, c, "tok-2", 2, at(40))
	before := takeSnapshot(t, s)
	wantErr(t, addWith(t, s, true, "pod-a", "A", 2, nks(10, 11), at(11), "tok-1"), store.ErrReservationLost)
	wantErr(t, s.RenewReservation(t.Context(), "pod-a", "tok-1", at(50)), store.ErrReservationLost)
	wantErr(t, s.ReleaseReservation(t.Context(), "pod-a", "tok-1"), store.ErrReservationLost)
	unchanged(t, s, before)
	must(t, addWith(t, s, true, "pod-a", "A", 2, nks(10, 11), at(12), "tok-2"))

	// Expired and untouched: a claim without a token sees none (it is not
	// reported, the shortfall is the pod's), but its holder still fulfils it.
	wantReservation(t, reserveClaim(t, s, "pod-b", "B", 2, "tok-3", at(1), at(10)), "tok-3", 2, at(10))
	c = claim(t, s, "pod-b", "B", 2, at(20))
	wantClaim(t, c, nil, 2, 0)
	wantReservation(t, c, "", 0, time.Time{})
	if _, err := s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-b", PodUID: "B", Want: 2, Keys: nks(20, 21), Now: at(21), ReserveToken: "tok-3"}); err != nil {
		t.Fatalf("AddAssigned under an expired reservation nobody took over: %v", err)
	}
	wantClaim(t, claim(t, s, "pod-b", "B", 2, at(22)), pks(20, 21), 0, 0)

	// Expired, then a claim takes pool keys for the pod: the reservation
	// is deleted.
	wantReservation(t, reserveClaim(t, s, "pod-c", "C", 2, "tok-4", at(1), at(10)), "tok-4", 2, at(10))
	addKeys(t, s, store.StateAvailable, at(2), 1)
	c = claim(t, s, "pod-c", "C", 2, at(20))
	wantClaim(t, c, pks(1), 1, 1)
	wantReservation(t, c, "", 0, time.Time{})
	wantErr(t, addWith(t, s, false, "pod-c", "C", 2, nks(30), at(21), "tok-4"), store.ErrReservationLost)
	wantErr(t, s.RenewReservation(t.Context(), "pod-c", "tok-4", at(50)), store.ErrReservationLost)
}

// RenewReservation moves the expiry (also of an expired reservation nobody
// took over); ReleaseReservation deletes it so that another caller reserves
// at once. Both need the holder's token.
func testReserveRenewRelease(t *testing.T, s store.Store) {
	wantReservation(t, reserveClaim(t, s, "pod-a", "A", 2, "tok-1", at(1), at(10)), "tok-1", 2, at(10))
	must(t, s.RenewReservation(t.Context(), "pod-a", "tok-1", at(100)))
	c := reserveClaim(t, s, "pod-a", "A", 2, "tok-2", at(50), at(60))
	wantReservation(t, c, "tok-1", 2, at(100))
	wantErr(t, s.RenewReservation(t.Context(), "pod-a", "tok-2", at(200)), store.ErrReservationLost)
	wantErr(t, s.RenewReservation(t.Context(), "pod-x", "tok-1", at(200)), store.ErrReservationLost)
	wantErr(t, s.ReleaseReservation(t.Context(), "pod-a", "tok-2"), store.ErrReservationLost)
	wantReservation(t, reserveClaim(t, s, "pod-a", "A", 2, "tok-2", at(51), at(60)), "tok-1", 2, at(100))

	must(t, s.ReleaseReservation(t.Context(), "pod-a", "tok-1"))
	wantErr(t, s.ReleaseReservation(t.Context(), "pod-a", "tok-1"), store.ErrReservationLost)
	wantReservation(t, reserveClaim(t, s, "pod-a", "A", 2, "tok-2", at(52), at(60)), "tok-2", 2, at(60))

	// Expired but untouched: renewing brings it back to life.
	wantReservation(t, reserveClaim(t, s, "pod-b", "B", 1, "tok-3", at(1), at(10)), "tok-3", 1, at(10))
	wantReservation(t, claim(t, s, "pod-b", "B", 1, at(20)), "", 0, time.Time{})
	must(t, s.RenewReservation(t.Context(), "pod-b", "tok-3", at(40)))
	wantReservation(t, reserveClaim(t, s, "pod-b", "B", 1, "tok-4", at(30), at(60)), "tok-3", 1, at(40))
	// A released reservation of a pod that holds nothing leaves no trace:
	// the pod can be claimed under any UID.
	must(t, s.ReleaseReservation(t.Context(), "pod-b", "tok-3"))
	wantClaim(t, claim(t, s, "pod-b", "other-uid", 1, at(31)), nil, 1, 0)
	wantCounts(t, s, map[store.State]int{})
}

// Release of the pod deletes its reservation, live or not; with a UID it
// must match the UID the live reservation is held under.
func testReserveReleaseOfPod(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	c := reserveClaim(t, s, "pod-a", "A", 3, "tok-1", at(1), at(60))
	wantClaim(t, c, pks(1), 0, 1)
	wantReservation(t, c, "tok-1", 2, at(60))
	if n := release(t, s, "pod-a", "A", at(2), at(2)); n != 1 {
		t.Errorf("Release = %d, want 1", n)
	}
	before := takeSnapshot(t, s)
	wantErr(t, addWith(t, s, true, "pod-a", "A", 3, nks(10, 11), at(3), "tok-1"), store.ErrReservationLost)
	wantErr(t, s.RenewReservation(t.Context(), "pod-a", "tok-1", at(90)), store.ErrReservationLost)
	unchanged(t, s, before)
	// A new incarnation starts from nothing (k1 cools down until at(2) and
	// is due).
	c = reserveClaim(t, s, "pod-a", "A2", 3, "tok-2", at(3), at(60))
	wantClaim(t, c, pks(1), 0, 1)
	wantReservation(t, c, "tok-2", 2, at(60))

	// A pod that holds only a live reservation: another UID may not
	// release it; its own may, and the audit event names that UID.
	wantReservation(t, reserveClaim(t, s, "pod-r", "R", 2, "tok-3", at(4), at(60)), "tok-3", 2, at(60))
	_, err := s.Release(t.Context(), store.ReleaseParams{Pod: "pod-r", PodUID: "X", Until: at(5), Now: at(5)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	must(t, s.RenewReservation(t.Context(), "pod-r", "tok-3", at(70)))
	n, err := s.Release(t.Context(), store.ReleaseParams{Pod: "pod-r", Until: at(6), Now: at(6), Reason: "gone"})
	must(t, err)
	if n != 0 {
		t.Errorf("Release of a pod holding only a reservation = %d, want 0", n)
	}
	if events := auditTrail(t, s); len(events) == 0 || events[len(events)-1].PodUID != "R" {
		t.Errorf("audit trail %+v: want a last release of pod-r under R", events)
	}
	wantErr(t, s.ReleaseReservation(t.Context(), "pod-r", "tok-3"), store.ErrReservationLost)

	// An expired reservation does not count: any UID may release.
	wantReservation(t, reserveClaim(t, s, "pod-e", "E", 2, "tok-4", at(1), at(10)), "tok-4", 2, at(10))
	n, err = s.Release(t.Context(), store.ReleaseParams{Pod: "pod-e", PodUID: "X", Until: at(20), Now: at(20)})
	if err != nil || n != 0 {
		t.Errorf("Release of a pod with an expired reservation under another UID = %d, %v; want 0, nil", n, err)
	}
	wantErr(t, s.RenewReservation(t.Context(), "pod-e", "tok-4", at(90)), store.ErrReservationLost)
}

// A live reservation counts as the pod's keys in the UID rules (and so does
// the caller's own, expired or not); an expired one of another caller does
// not.
func testReservePodUID(t *testing.T, s store.Store) {
	wantReservation(t, reserveClaim(t, s, "pod-a", "A", 2, "tok-1", at(1), at(60)), "tok-1", 2, at(60))
	before := takeSnapshot(t, s)
	_, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "B", Want: 2, Now: at(2), ReserveToken: "tok-2", ReserveUntil: at(60)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	_, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "B", Want: 2, Now: at(2)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	wantErr(t, addWith(t, s, false, "pod-a", "B", 2, nks(10, 11), at(3), "tok-1"), store.ErrPodUIDMismatch)
	unchanged(t, s, before)
	wantReservation(t, reserveClaim(t, s, "pod-a", "", 2, "tok-2", at(3), at(60)), "tok-1", 2, at(60))
	must(t, addWith(t, s, false, "pod-a", "", 2, nks(10, 11), at(4), "tok-1"))
	for _, k := range list(t, s, store.ListOptions{Pod: "pod-a"}) {
		if k.PodUID != "A" {
			t.Errorf("key %s minted for pod-a: UID %q, want A (the reservation's)", name(k.Pubkey), k.PodUID)
		}
	}

	// A reservation made without a UID is filled in with the first UID,
	// like keys; the minted keys carry it.
	wantReservation(t, reserveClaim(t, s, "pod-f", "", 2, "tok-3", at(1), at(60)), "tok-3", 2, at(60))
	wantReservation(t, reserveClaim(t, s, "pod-f", "F", 2, "tok-4", at(2), at(60)), "tok-3", 2, at(60))
	_, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-f", PodUID: "G", Want: 2, Now: at(3)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	must(t, addWith(t, s, true, "pod-f", "", 2, nks(20, 21), at(4), "tok-3"))
	for _, i := range []int{20, 21} {
		if k := getKey(t, s, PK(i)); k.Pod != "pod-f" || k.PodUID != "F" {
			t.Errorf("key %s minted for pod-f: pod %q, UID %q; want pod-f, F", name(PK(i)), k.Pod, k.PodUID)
		}
	}

	// The caller's own reservation counts even once expired.
	wantReservation(t, reserveClaim(t, s, "pod-o", "O", 1, "tok-5", at(1), at(10)), "tok-5", 1, at(10))
	_, err = s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-o", PodUID: "P", Want: 1, Keys: nks(30), Now: at(20), ReserveToken: "tok-5"})
	wantErr(t, err, store.ErrPodUIDMismatch)

	// Another caller's expired reservation does not: a new UID takes over.
	wantReservation(t, reserveClaim(t, s, "pod-e", "E", 2, "tok-6", at(1), at(10)), "tok-6", 2, at(10))
	wantReservation(t, reserveClaim(t, s, "pod-e", "E2", 2, "tok-7", at(10), at(60)), "tok-7", 2, at(60))
	must(t, addWith(t, s, false, "pod-e", "E2", 2, nks(40, 41), at(11), "tok-7"))
	for _, k := range list(t, s, store.ListOptions{Pod: "pod-e"}) {
		if k.PodUID != "E2" {
			t.Errorf("key %s of pod-e: UID %q, want E2", name(k.Pubkey), k.PodUID)
		}
	}
}

// Reservations are not part of the data: a store holding only one counts
// as empty for Load, which drops it.
func testReserveLoad(t *testing.T, s store.Store) {
	wantReservation(t, reserveClaim(t, s, "pod-a", "A", 2, "tok-1", at(1), at(60)), "tok-1", 2, at(60))
	k := store.Key{Pubkey: PK(1), State: store.StateAvailable, Origin: store.OriginRandom, Since: at(0), CreatedAt: at(0), SealedSecret: sealed(1)}
	must(t, s.Load(t.Context(), store.Snapshot{}, []store.Key{k}))
	wantErr(t, s.RenewReservation(t.Context(), "pod-a", "tok-1", at(90)), store.ErrReservationLost)
	c := reserveClaim(t, s, "pod-a", "B", 2, "tok-2", at(2), at(60))
	wantClaim(t, c, pks(1), 0, 1)
	wantReservation(t, c, "tok-2", 1, at(60))
}

// Concurrent claims for one pod with distinct tokens on an empty pool: one
// of them reserves, every other one reports that reservation.
func testConcurrentReserveOnce(t *testing.T, s store.Store) {
	const n = 16
	results := make([]store.Claim, n)
	errs := make([]error, n)
	run(n, func(g int) {
		results[g], errs[g] = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 3, Now: at(1),
			ReserveToken: fmt.Sprintf("tok-%d", g), ReserveUntil: at(60)})
	})
	holder := ""
	for g := range n {
		if errs[g] != nil {
			t.Fatalf("Claim %d: %v", g, errs[g])
		}
		r := results[g].Reservation
		if r == nil || r.Count != 3 || results[g].Shortfall != 0 {
			t.Fatalf("Claim %d: reservation %+v, shortfall %d; want one for 3 keys", g, r, results[g].Shortfall)
		}
		if holder == "" {
			holder = r.Token
		}
		if r.Token != holder {
			t.Errorf("Claim %d reports the reservation of %s, an earlier one of %s", g, r.Token, holder)
		}
	}
	must(t, addWith(t, s, false, "pod-a", "A", 3, nks(1, 2, 3), at(2), holder))
	c := reserveClaim(t, s, "pod-a", "A", 3, "tok-late", at(3), at(60))
	wantClaim(t, c, pks(1, 2, 3), 0, 0)
	wantReservation(t, c, "", 0, time.Time{})
}

// Duplicate requesters of several pods run the allocator's loop (claim with
// a token; mint and add under it when they hold the reservation; else wait
// and claim again) while donor pods keep returning keys to the pool, and
// each pod is released and requested again under a new UID a few times:
// every request gets the pod's Want keys, duplicates get one set, no key
// reaches two pods, and each shortfall is minted once: every minted key was
// handed to a pod (none is a spare nobody asked for).
func testConcurrentReserveMint(t *testing.T, s store.Store) {
	const (
		pods   = 10
		dups   = 3
		want   = 3
		epochs = 6
		donors = 3
	)
	addKeys(t, s, store.StateAvailable, at(0), rng(1, 6)...)
	var (
		errs    errList
		minted  atomic.Int64
		nextKey atomic.Int64
		wg      sync.WaitGroup
		done    = make(chan struct{})
	)
	nextKey.Store(1000)
	// Donors take keys from the pool and give them back at once (every
	// release's Until is its Now: due again immediately).
	for d := range donors {
		wg.Go(func() {
			pod := fmt.Sprintf("donor-%d", d)
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, Want: 1, Now: at(1)}); err != nil {
					errs.add(fmt.Errorf("donor Claim: %w", err))
					return
				}
				if _, err := s.Release(t.Context(), store.ReleaseParams{Pod: pod, Until: at(1), Now: at(1)}); err != nil {
					errs.add(fmt.Errorf("donor Release: %w", err))
					return
				}
			}
		})
	}
	// request runs one requester's loop and returns the pod's set.
	request := func(pod, uid, token string) ([]store.Pubkey, error) {
		deadline := time.Now().Add(20 * time.Second)
		for r := 0; time.Now().Before(deadline); r++ {
			c, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: at(1), ReserveToken: token, ReserveUntil: at(600)})
			if err != nil {
				return nil, fmt.Errorf("Claim(%s): %w", pod, err)
			}
			switch {
			case c.Reservation == nil:
				return pubkeysOf(c.Keys), nil
			case c.Reservation.Token == token:
				// Minting takes a while, in which donors return keys
				// to the pool.
				time.Sleep(2 * time.Millisecond)
				var keys []store.NewKey
				for range c.Reservation.Count {
					keys = append(keys, nk(int(nextKey.Add(1))))
				}
				ac, err := s.AddAssigned(t.Context(), store.AddParams{Pod: pod, PodUID: uid, Want: want, Keys: keys, Now: at(1), ReserveToken: token})
				if err != nil {
					return nil, fmt.Errorf("AddAssigned(%s): %w", pod, err)
				}
				minted.Add(int64(len(keys)))
				got := pubkeysOf(ac.Keys)
				for _, k := range keys {
					if !slices.Contains(got, k.Pubkey) {
						return got, fmt.Errorf("%s: minted key %s became a spare nobody asked for (the pod was filled meanwhile)", pod, name(k.Pubkey))
					}
				}
				return got, nil
			}
			// Another caller holds the reservation: wait for it.
			if r > 3 {
				time.Sleep(time.Millisecond)
			}
		}
		return nil, fmt.Errorf("%s: another caller's reservation never went", pod)
	}
	var req sync.WaitGroup
	for p := range pods {
		req.Go(func() {
			pod := fmt.Sprintf("pod-%d", p)
			for e := range epochs {
				uid := fmt.Sprintf("uid-%d", e)
				sets := make([][]store.Pubkey, dups)
				run(dups, func(d int) {
					set, err := request(pod, uid, fmt.Sprintf("tok-%d-%d-%d", p, e, d))
					if err != nil {
						errs.add(err)
					}
					sets[d] = set
				})
				for d := range dups {
					if len(sets[d]) != want || !slices.Equal(sets[d], sets[0]) {
						errs.add(fmt.Errorf("%s (%s): request %d got %s, request 0 %s; want one set of %d", pod, uid, d, names(sets[d]), names(sets[0]), want))
					}
				}
				if e < epochs-1 {
					if _, err := s.Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: uid, Until: at(1), Now: at(1)}); err != nil {
						errs.add(fmt.Errorf("Release(%s): %w", pod, err))
					}
				}
			}
		})
	}
	req.Wait()
	close(done)
	wg.Wait()
	errs.report(t)
	if t.Failed() {
		return
	}
	owner := map[store.Pubkey]string{}
	for p := range pods {
		pod := fmt.Sprintf("pod-%d", p)
		c := claim(t, s, pod, "", want, at(2))
		if len(c.Keys) != want || c.Reservation != nil {
			t.Errorf("%s ends with %d keys, reservation %+v; want %d keys, none", pod, len(c.Keys), c.Reservation, want)
		}
		for _, k := range c.Keys {
			if prev, dup := owner[k.Pubkey]; dup {
				t.Errorf("key %s in %s and %s", name(k.Pubkey), prev, pod)
			}
			owner[k.Pubkey] = pod
		}
	}
	n := 0
	for _, k := range list(t, s, store.ListOptions{}) {
		if binary.BigEndian.Uint32(k.Pubkey[1:]) > 1000 {
			n++
			if k.LastPod == "" {
				t.Errorf("key %s was minted but never handed to a pod: %s", name(k.Pubkey), describe(k))
			}
		}
	}
	if m := minted.Load(); m == 0 || int(m) != n {
		t.Errorf("%d keys minted, %d stored", m, n)
	}
	t.Logf("%d keys minted for %d requests of %d keys", minted.Load(), pods*epochs, want)
}

// A holder fulfils its reservation while the pod is released: either the
// keys arrive first (Release turns them into spares) or the release does
// (the holder's token is lost and its keys are not stored).
func testConcurrentReserveRelease(t *testing.T, s store.Store) {
	const rounds = 30
	var lost, first int
	for r := range rounds {
		pod := fmt.Sprintf("pod-%d", r)
		token := fmt.Sprintf("tok-%d", r)
		wantReservation(t, reserveClaim(t, s, pod, "U", 2, token, at(1), at(60)), token, 2, at(60))
		keys := nks(100+2*r, 101+2*r)
		var addErr, relErr error
		run(2, func(g int) {
			if g == 0 {
				addErr = s.AddPending(t.Context(), store.AddParams{Pod: pod, PodUID: "U", Want: 2, Keys: keys, Now: at(2), ReserveToken: token})
			} else {
				_, relErr = s.Release(t.Context(), store.ReleaseParams{Pod: pod, Until: at(2), Now: at(2)})
			}
		})
		must(t, relErr)
		switch {
		case addErr == nil:
			first++
			for _, k := range keys {
				if got := getKey(t, s, k.Pubkey); got.State != store.StatePendingDeposit || got.Pod != "" || got.LastPod != pod {
					t.Errorf("key added before the release of %s: %s, want a pending spare last of %s", pod, describe(got), pod)
				}
			}
		case errors.Is(addErr, store.ErrReservationLost):
			lost++
			for _, k := range keys {
				if _, err := s.GetKey(t.Context(), k.Pubkey); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("key %s added although its reservation was lost: %v", name(k.Pubkey), err)
				}
			}
		default:
			t.Fatalf("AddPending(%s): %v", pod, addErr)
		}
		if got := list(t, s, store.ListOptions{Pod: pod}); len(got) != 0 {
			t.Errorf("released %s still lists %s", pod, names(pubkeysOf(got)))
		}
	}
	t.Logf("%d adds before the release, %d lost their reservation", first, lost)
}
