package storetest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var auditTests = []testCase{
	{name: "Release/PendingKeys", fn: testReleasePendingKeys},
	{name: "Release/Audit", fn: testReleaseAudit},
	{name: "Retire/Audit", fn: testRetireAudit},
	{name: "Audit/AppendAndList", fn: testAuditAppendAndList},
	{name: "Audit/Errors", fn: testAuditErrors},
	{name: "Audit/Actor", fn: testAuditActor},
	{name: "Claim/AssignAudit", fn: testClaimAssignAudit},
	{name: "Add/MintAudit", fn: testAddMintAudit},
	{name: "Claim/UIDAdoptedAudit", fn: testUIDAdoptedAudit},
}

// A claim or an add that writes the pod's UID on the keys it held without
// one (assigned and pending) records that in its transaction, before what
// it takes; a call that finds the UID recorded, or is held back, records
// nothing.
func testUIDAdoptedAudit(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	wantClaim(t, claim(t, s, "pod-a", "", 1, at(1)), pks(1), 0, 1)
	addPending(t, s, "pod-a", "", 2, nks(10), at(2))
	bob := store.WithActor(t.Context(), "user:bob")
	c, err := s.Claim(bob, store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 9, Now: at(3), AllOrNothing: true})
	must(t, err)
	if len(c.Taken) != 0 || c.Shortfall != 7 {
		t.Errorf("all-or-nothing claim held back: took %v, shortfall %d", names(c.Taken), c.Shortfall)
	}
	if k := getKey(t, s, PK(1)); k.PodUID != "" {
		t.Errorf("held-back claim recorded pod UID %q", k.PodUID)
	}
	for range 2 { // the second finds the UID recorded
		c, err = s.Claim(bob, store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 2, Now: at(4), UIDReason: "the watcher saw it"})
		must(t, err)
		wantClaim(t, c, pks(1), 0, 0)
	}
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(5)), pks(2), 0, 1)
	c, err = s.Claim(bob, store.ClaimParams{Pod: "pod-b", PodUID: "B", Want: 2, Now: at(6)})
	must(t, err)
	wantClaim(t, c, pks(2, 3), 0, 1)
	_, err = s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-c", Want: 1, Keys: nks(20), Now: at(7)})
	must(t, err)
	c, err = s.AddAssigned(bob, store.AddParams{Pod: "pod-c", PodUID: "C", Want: 2, Keys: nks(21), Now: at(8)})
	must(t, err)
	wantClaim(t, c, pks(20, 21), 0, 0)
	addPending(t, s, "pod-d", "", 1, nks(30), at(9))
	must(t, s.AddPending(bob, store.AddParams{Pod: "pod-d", PodUID: "D", Want: 2, Keys: nks(31), Now: at(10)}))
	for _, i := range []int{1, 10, 2, 3, 20, 21, 30, 31} {
		want := map[int]string{1: "A", 10: "A", 2: "B", 3: "B", 20: "C", 21: "C", 30: "D", 31: "D"}[i]
		if k := getKey(t, s, PK(i)); k.PodUID != want {
			t.Errorf("k%d has pod UID %q, want %q", i, k.PodUID, want)
		}
	}
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{
		{Seq: 1, Time: us(at(1)), Action: store.AuditAssign, Pod: "pod-a", Pubkeys: pks(1), Reason: store.AssignReason(1), Actor: store.ActorServer},
		{Seq: 2, Time: us(at(4)), Action: store.AuditUIDAdopted, Pod: "pod-a", PodUID: "A", Pubkeys: pks(1, 10), Reason: "the watcher saw it", Actor: "user:bob"},
		{Seq: 3, Time: us(at(5)), Action: store.AuditAssign, Pod: "pod-b", Pubkeys: pks(2), Reason: store.AssignReason(1), Actor: store.ActorServer},
		{Seq: 4, Time: us(at(6)), Action: store.AuditUIDAdopted, Pod: "pod-b", PodUID: "B", Pubkeys: pks(2), Reason: store.DefaultUIDReason, Actor: "user:bob"},
		{Seq: 5, Time: us(at(6)), Action: store.AuditAssign, Pod: "pod-b", PodUID: "B", Pubkeys: pks(3), Reason: store.AssignReason(2), Actor: "user:bob"},
		{Seq: 6, Time: us(at(8)), Action: store.AuditUIDAdopted, Pod: "pod-c", PodUID: "C", Pubkeys: pks(20), Reason: store.DefaultUIDReason, Actor: "user:bob"},
		{Seq: 7, Time: us(at(10)), Action: store.AuditUIDAdopted, Pod: "pod-d", PodUID: "D", Pubkeys: pks(30), Reason: store.DefaultUIDReason, Actor: "user:bob"},
	})
}

// AddAssigned and AddPending with an AuditReason record the keys in their
// transaction; without one, or when they fail, nothing.
func testAddMintAudit(t *testing.T, s store.Store) {
	bob := store.WithActor(t.Context(), "user:bob")
	c, err := s.AddAssigned(bob, store.AddParams{Pod: "pod-a", PodUID: "A", Want: 2, Keys: nks(2, 1), Now: at(1), AuditReason: "minted for a"})
	must(t, err)
	wantClaim(t, c, pks(1, 2), 0, 0)
	must(t, s.AddPending(t.Context(), store.AddParams{Keys: nks(3), Now: at(2), AuditReason: "spare"}))
	must(t, s.AddPending(t.Context(), store.AddParams{Pod: "pod-b", Want: 1, Keys: nks(4), Now: at(3)})) // no reason: no event
	before := takeSnapshot(t, s)
	_, err = s.AddAssigned(bob, store.AddParams{Pod: "pod-a", PodUID: "A", Want: 3, Keys: nks(1), Now: at(4), AuditReason: "again"})
	if err == nil {
		t.Fatal("AddAssigned of a key the store holds succeeded")
	}
	wantErr(t, s.AddPending(bob, store.AddParams{Pod: "pod-c", Want: 1, Keys: nks(5), Now: at(4), ReserveToken: "gone", AuditReason: "lost"}),
		store.ErrReservationLost)
	unchanged(t, s, before)
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{
		{Seq: 1, Time: us(at(1)), Action: store.AuditMint, Pod: "pod-a", PodUID: "A", Pubkeys: pks(2, 1), Reason: "minted for a", Actor: "user:bob"},
		{Seq: 2, Time: us(at(2)), Action: store.AuditMint, Pubkeys: pks(3), Reason: "spare", Actor: store.ActorServer},
	})
}

// A claim records the keys it takes from the pool in the same
// transaction; a claim that takes none records nothing.
func testClaimAssignAudit(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 2, 3)
	bob := store.WithActor(t.Context(), "user:bob")
	c, err := s.Claim(bob, store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 2, Now: at(1)})
	must(t, err)
	wantClaim(t, c, pks(2, 3), 0, 2)
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{{Seq: 1, Time: us(at(1)), Action: store.AuditAssign, Pod: "pod-a", PodUID: "A",
		Pubkeys: pks(2, 3), Reason: store.AssignReason(2), Actor: "user:bob"}})

	// Nothing taken: the pod holds its keys, all-or-nothing held back, a
	// refused UID.
	wantClaim(t, claim(t, s, "pod-a", "A", 2, at(2)), pks(2, 3), 0, 0)
	c, err = s.Claim(bob, store.ClaimParams{Pod: "pod-b", Want: 5, Now: at(3), AllOrNothing: true})
	must(t, err)
	if len(c.Taken) != 0 || c.Shortfall != 5 {
		t.Errorf("all-or-nothing claim of 5 from 1: took %v, shortfall %d", c.Taken, c.Shortfall)
	}
	_, err = s.Claim(bob, store.ClaimParams{Pod: "pod-a", PodUID: "A2", Want: 3, Now: at(4)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	if n := len(auditTrail(t, s)); n != 1 {
		t.Errorf("%d audit events after claims that took nothing, want 1", n)
	}

	// Topping up takes, reports and records only the new key (which sorts
	// before those the pod holds); without an actor the server took it.
	addKeys(t, s, store.StateAvailable, at(5), 1)
	c = claim(t, s, "pod-a", "A", 3, at(5))
	wantClaim(t, c, pks(1, 2, 3), 0, 1)
	if !slices.Equal(c.Taken, pks(1)) {
		t.Errorf("top-up claim: Taken %s, want [k1]", names(c.Taken))
	}
	wantEvents(t, auditTrail(t, s)[1:], []store.AuditEvent{{Seq: 2, Time: us(at(5)), Action: store.AuditAssign, Pod: "pod-a", PodUID: "A",
		Pubkeys: pks(1), Reason: store.AssignReason(3), Actor: store.ActorServer}})
}

// Release moves assigned keys to cooling-down and turns the pod's pending
// keys into spares, in one decision recorded with its reason and actor.
func testReleasePendingKeys(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	wantClaim(t, claim(t, s, "pod-a", "A", 1, at(1)), pks(1), 0, 1)
	addPending(t, s, "pod-a", "A", 3, nks(10, 11), at(2))
	setTx(t, s, 11, at(3))

	ctx := store.WithActor(t.Context(), "user:alice")
	n, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-a", PodUID: "A", Until: at(100), Now: at(10), Reason: "pod phase Succeeded"})
	must(t, err)
	if n != 1 {
		t.Errorf("Release = %d, want 1: only assigned keys go to cooling-down", n)
	}
	if k := getKey(t, s, PK(1)); k.State != store.StateCoolingDown || !k.CoolingUntil.Equal(us(at(100))) {
		t.Errorf("k1 = %s, want cooling-down until %v", describe(k), us(at(100)))
	}
	for _, i := range []int{10, 11} {
		want := store.Key{
			Pubkey: PK(i), State: store.StatePendingDeposit, Origin: store.OriginRandom,
			LastPod: "pod-a", Since: us(at(2)), CreatedAt: us(at(2)), SealedSecret: sealed(i), Deposit: deposit(i),
		}
		if i == 11 {
			want.DepositTx = recordedTx(txFor(11), at(3))
		}
		wantKey(t, getKey(t, s, PK(i)), want)
	}
	if got := list(t, s, store.ListOptions{Pod: "pod-a"}); len(got) != 0 {
		t.Errorf("ListKeys(pod-a) after release = %s, want none", names(pubkeysOf(got)))
	}
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{{
		Seq: 1, Time: us(at(1)), Action: store.AuditAssign, Pod: "pod-a", PodUID: "A", Pubkeys: pks(1), Reason: store.AssignReason(1), Actor: store.ActorServer,
	}, {
		Seq: 2, Time: us(at(10)), Action: "release", Pod: "pod-a", PodUID: "A",
		Pubkeys: pks(1, 10, 11), Reason: "pod phase Succeeded", Actor: "user:alice",
	}})

	// The pod's next incarnation is not held back by the old pending keys.
	c := claim(t, s, "pod-a", "A2", 1, at(11))
	wantClaim(t, c, pks(2), 0, 1)
	wantPending(t, c, nil)

	// Confirmed now, an un-targeted key goes to the pool; failed, it keeps
	// the pod it was meant for as LastPod.
	if k := confirm(t, s, PK(10), 5, at(12)); k.State != store.StateAvailable || k.Pod != "" || k.LastPod != "pod-a" {
		t.Errorf("confirmed k10 = %s, want available with LastPod pod-a", describe(k))
	}
	wantClaim(t, claim(t, s, "pod-c", "", 1, at(13)), pks(10), 0, 1)
	must(t, s.FailDeposit(t.Context(), PK(11), "reverted", at(14)))
	if k := getKey(t, s, PK(11)); k.LastPod != "pod-a" {
		t.Errorf("failed k11 LastPod = %q, want pod-a", k.LastPod)
	}
}

func testReleaseAudit(t *testing.T, s store.Store) {
	addPending(t, s, "pod-b", "B", 1, nks(20), at(1))
	addKeys(t, s, store.StateAvailable, at(1), 1)
	wantClaim(t, claim(t, s, "pod-c", "", 1, at(1)), pks(1), 0, 1)

	// A pod holding only pending keys: the UID rule applies to them, and a
	// refused release records nothing.
	before := takeSnapshot(t, s)
	_, err := s.Release(store.WithActor(t.Context(), "x"), store.ReleaseParams{Pod: "pod-b", PodUID: "B2", Until: at(5), Now: at(2), Reason: "r"})
	wantErr(t, err, store.ErrPodUIDMismatch)
	unchanged(t, s, before)

	// Without an actor the server decided; the event has the recorded UID.
	if n := release(t, s, "pod-b", "", at(5), at(3)); n != 0 {
		t.Errorf("Release(pod-b) = %d, want 0", n)
	}
	if k := getKey(t, s, PK(20)); k.Pod != "" || k.PodUID != "" || k.LastPod != "pod-b" || k.State != store.StatePendingDeposit {
		t.Errorf("k20 = %s, want a pending spare with LastPod pod-b", describe(k))
	}
	// A key held without a UID: the event has the caller's.
	if n := release(t, s, "pod-c", "C-late", at(5), at(4)); n != 1 {
		t.Errorf("Release(pod-c) = %d, want 1", n)
	}
	// Nothing to release is still a decision.
	ctx := store.WithActor(t.Context(), "pod-watcher")
	n, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-gone", Until: at(6), Now: at(6), Reason: "pod deleted"})
	if err != nil || n != 0 {
		t.Errorf("Release(pod-gone) = %d, %v; want 0, nil", n, err)
	}
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{
		{Seq: 1, Time: us(at(1)), Action: store.AuditAssign, Pod: "pod-c", Pubkeys: pks(1), Reason: store.AssignReason(1), Actor: store.ActorServer},
		{Seq: 2, Time: us(at(3)), Action: "release", Pod: "pod-b", PodUID: "B", Pubkeys: pks(20), Actor: store.ActorServer},
		{Seq: 3, Time: us(at(4)), Action: "release", Pod: "pod-c", PodUID: "C-late", Pubkeys: pks(1), Actor: store.ActorServer},
		{Seq: 4, Time: us(at(6)), Action: "release", Pod: "pod-gone", Reason: "pod deleted", Actor: "pod-watcher"},
	})
}

func testRetireAudit(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	wantClaim(t, claim(t, s, "pod-a", "A", 1, at(1)), pks(1), 0, 1)
	addPending(t, s, "pod-b", "B", 1, nks(3), at(1))

	must(t, s.Retire(store.WithActor(t.Context(), "user:bob"), PK(1), "compromised", at(2)))
	must(t, s.Retire(t.Context(), PK(2), "", at(3)))
	must(t, s.Retire(t.Context(), PK(3), "deposit abandoned", at(4)))
	want := []store.AuditEvent{
		{Seq: 1, Time: us(at(1)), Action: store.AuditAssign, Pod: "pod-a", PodUID: "A", Pubkeys: pks(1), Reason: store.AssignReason(1), Actor: store.ActorServer},
		{Seq: 2, Time: us(at(2)), Action: "retire", Pod: "pod-a", PodUID: "A", Pubkeys: pks(1), Reason: "compromised", Actor: "user:bob"},
		{Seq: 3, Time: us(at(3)), Action: "retire", Pubkeys: pks(2), Actor: store.ActorServer},
		{Seq: 4, Time: us(at(4)), Action: "retire", Pod: "pod-b", PodUID: "B", Pubkeys: pks(3), Reason: "deposit abandoned", Actor: store.ActorServer},
	}
	wantEvents(t, auditTrail(t, s), want)

	// The retired pending key left its pod.
	c := claim(t, s, "pod-b", "B", 1, at(5))
	wantClaim(t, c, nil, 1, 0)
	wantPending(t, c, nil)
	if k := getKey(t, s, PK(3)); k.State != store.StateRetired || k.Pod != "" || k.PodUID != "" {
		t.Errorf("k3 = %s, want retired without pod", describe(k))
	}

	// No change, no event.
	before := takeSnapshot(t, s)
	must(t, s.Retire(store.WithActor(t.Context(), "user:bob"), PK(1), "again", at(6)))
	wantErr(t, s.Retire(t.Context(), PK(99), "unknown", at(6)), store.ErrNotFound)
	unchanged(t, s, before)
}

func testAuditAppendAndList(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got, err := s.ListAudit(ctx, 0, 10); err != nil || len(got) != 0 {
		t.Fatalf("ListAudit of a new store = %+v, %v; want none", got, err)
	}
	first := store.AuditEvent{
		Seq: 99, Time: at(1), Action: "release-blocked", Pod: "pod-a", PodUID: "A",
		Pubkeys: pks(2, 1), Reason: "pod still running — ünïcödé", Actor: "",
	}
	must(t, s.AppendAudit(store.WithActor(ctx, "pod-watcher"), first))
	must(t, s.AppendAudit(store.WithActor(ctx, "pod-watcher"), store.AuditEvent{Time: at(2), Action: "note", Actor: "user:carol"}))
	must(t, s.AppendAudit(ctx, store.AuditEvent{Time: at(3), Action: "note"}))
	release(t, s, "pod-x", "", at(4), at(4)) // Seq 4
	for i := range 6 {
		must(t, s.AppendAudit(ctx, store.AuditEvent{Time: at(5 + i), Action: fmt.Sprintf("step-%d", i)}))
	}

	all := auditTrail(t, s)
	if len(all) != 10 {
		t.Fatalf("%d audit events, want 10", len(all))
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has Seq %d, want %d (assigned 1, 2, ... in commit order)", i, e.Seq, i+1)
		}
	}
	wantEvents(t, all[:4], []store.AuditEvent{
		{Seq: 1, Time: us(at(1)), Action: "release-blocked", Pod: "pod-a", PodUID: "A", Pubkeys: pks(2, 1), Reason: first.Reason, Actor: "pod-watcher"},
		{Seq: 2, Time: us(at(2)), Action: "note", Actor: "user:carol"},
		{Seq: 3, Time: us(at(3)), Action: "note", Actor: store.ActorServer},
		{Seq: 4, Time: us(at(4)), Action: "release", Pod: "pod-x", Actor: store.ActorServer},
	})
	if all[9].Action != "step-5" {
		t.Errorf("last event %+v, want step-5", all[9])
	}

	// Paging: Seq > after, oldest first, at most limit.
	for _, tc := range []struct {
		after      uint64
		limit      int
		wantFirst  uint64
		wantEvents int
	}{
		{0, 3, 1, 3}, {3, 3, 4, 3}, {6, 3, 7, 3}, {9, 3, 10, 1}, {4, 1, 5, 1},
		{0, 100, 1, 10}, {10, 5, 0, 0}, {11, 5, 0, 0}, {math.MaxUint64, 1, 0, 0}, {0, math.MaxInt, 1, 10},
	} {
		page, err := s.ListAudit(ctx, tc.after, tc.limit)
		must(t, err)
		if len(page) != tc.wantEvents {
			t.Errorf("ListAudit(%d, %d) = %d events, want %d", tc.after, tc.limit, len(page), tc.wantEvents)
			continue
		}
		for i, e := range page {
			if want := tc.wantFirst + uint64(i); e.Seq != want {
				t.Errorf("ListAudit(%d, %d)[%d].Seq = %d, want %d", tc.after, tc.limit, i, e.Seq, want)
			}
			if normEvent(e).Action != all[e.Seq-1].Action {
				t.Errorf("ListAudit(%d, %d)[%d] = %+v, the full trail has %+v", tc.after, tc.limit, i, e, all[e.Seq-1])
			}
		}
	}
}

func testAuditErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, s.AppendAudit(ctx, store.AuditEvent{Time: at(1), Action: "first"}))
	before := takeSnapshot(t, s)
	for what, e := range map[string]store.AuditEvent{
		"empty action": {Time: at(2)},
		"zero time":    {Action: "x"},
		"year 10000":   {Action: "x", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if err := s.AppendAudit(ctx, e); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("AppendAudit with %s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	for _, limit := range []int{0, -1, math.MinInt} {
		if _, err := s.ListAudit(ctx, 0, limit); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("ListAudit(0, %d): error = %v, want ErrInvalidArgument", limit, err)
		}
	}
	unchanged(t, s, before)
}
