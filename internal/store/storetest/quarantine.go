package storetest

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Chain-verified handoff: keys seen signing, slashing-protection
// watermarks, the keys a claim took.
var handoffTests = []testCase{
	{name: "Quarantine", fn: testQuarantine},
	{name: "Quarantine/Errors", fn: testQuarantineErrors},
	{name: "CoolDown", fn: testCoolDown},
	{name: "Release/Protection", fn: testReleaseProtection},
	{name: "Release/ProtectionOfAnotherPod", fn: testReleaseProtectionRefused},
	{name: "Claim/Taken", fn: testClaimTaken},
}

func testQuarantine(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4, 5)
	addKeys(t, s, store.StatePendingDeposit, at(0), 6)
	claim(t, s, "pod-a", "A", 2, at(1)) // k1 k2
	claim(t, s, "pod-b", "B", 1, at(1)) // k3
	release(t, s, "pod-b", "B", at(100), at(2))
	must(t, s.Retire(t.Context(), PK(5), "gone", at(2)))

	ctx := store.WithActor(t.Context(), "reuse-gate")
	n, err := s.Quarantine(ctx, pks(2, 3, 4, 5, 6, 99, 2), "seen live in epoch 7 after its release", at(3))
	must(t, err)
	if n != 3 {
		t.Errorf("Quarantine moved %d keys, want 3 (k2 assigned, k3 cooling-down, k4 available)", n)
	}
	for _, i := range []int{2, 3, 4} {
		k := getKey(t, s, PK(i))
		if k.State != store.StateStillSigning || k.RetiredReason != "seen live in epoch 7 after its release" || k.Pod != "" ||
			!k.CoolingUntil.IsZero() || !k.Since.Equal(us(at(3))) {
			t.Errorf("k%d after Quarantine: %s", i, describe(k))
		}
	}
	if k := getKey(t, s, PK(2)); k.LastPod != "pod-a" {
		t.Errorf("k2 LastPod %q, want pod-a", k.LastPod)
	}
	if k := getKey(t, s, PK(3)); !k.ReleasedAt.Equal(us(at(2))) || k.LastPod != "pod-b" {
		t.Errorf("k3 lost its release: %s", describe(k))
	}
	if k := getKey(t, s, PK(5)); k.State != store.StateRetired {
		t.Errorf("retired k5 became %s", k.State)
	}
	if k := getKey(t, s, PK(6)); k.State != store.StatePendingDeposit {
		t.Errorf("pending k6 became %s", k.State)
	}
	trail := auditTrail(t, s)
	wantEvents(t, trail[len(trail)-2:], []store.AuditEvent{
		{Seq: 5, Time: us(at(3)), Action: "still-signing", Pubkeys: pks(3, 4), Reason: "seen live in epoch 7 after its release", Actor: "reuse-gate"},
		{Seq: 6, Time: us(at(3)), Action: "still-signing", Pod: "pod-a", PodUID: "A", Pubkeys: pks(2), Reason: "seen live in epoch 7 after its release", Actor: "reuse-gate"},
	})
	// pod-a lost k2: it tops up from the pool, which has none left.
	c := claim(t, s, "pod-a", "A", 2, at(200))
	wantClaim(t, c, pks(1), 1, 0)
	if n, err := s.Sweep(t.Context(), at(1_000_000)); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v; still-signing keys are not swept", n, err)
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 1, store.StateStillSigning: 3, store.StateRetired: 1, store.StatePendingDeposit: 1})
	// Quarantining again changes nothing.
	before := takeSnapshot(t, s)
	if n, err := s.Quarantine(t.Context(), pks(2, 3), "again", at(4)); err != nil || n != 0 {
		t.Errorf("second Quarantine = %d, %v; want 0", n, err)
	}
	unchanged(t, s, before)
}

func testQuarantineErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	before := takeSnapshot(t, s)
	_, err := s.Quarantine(t.Context(), pks(1), "", at(1))
	wantErr(t, err, store.ErrInvalidArgument)
	_, err = s.CoolDown(t.Context(), pks(1), zeroTime, at(1))
	wantErr(t, err, store.ErrInvalidArgument)
	unchanged(t, s, before)
}

func testCoolDown(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	claim(t, s, "pod-a", "A", 3, at(1))
	release(t, s, "pod-a", "A", at(10), at(2))
	n, err := s.Quarantine(t.Context(), pks(1), "live", at(3))
	must(t, err)
	if n != 1 {
		t.Fatalf("Quarantine = %d", n)
	}
	addKeys(t, s, store.StateAvailable, at(0), 4)
	ctx := store.WithActor(t.Context(), "reuse-gate")
	// k1 quiet again, k2 cleared early, k3 held longer, k4 (available) and
	// k9 (unknown) untouched.
	n, err = s.CoolDown(ctx, pks(1, 2, 4, 9), at(5), at(4))
	must(t, err)
	if n != 2 {
		t.Errorf("CoolDown = %d, want 2", n)
	}
	n, err = s.CoolDown(ctx, pks(3), at(1000), at(4))
	must(t, err)
	if n != 1 {
		t.Errorf("CoolDown(k3) = %d, want 1", n)
	}
	if k := getKey(t, s, PK(1)); k.State != store.StateCoolingDown || !k.CoolingUntil.Equal(us(at(5))) || k.RetiredReason != "" || !k.Since.Equal(us(at(4))) {
		t.Errorf("k1 after CoolDown: %s", describe(k))
	}
	if k := getKey(t, s, PK(2)); k.State != store.StateCoolingDown || !k.CoolingUntil.Equal(us(at(5))) || !k.Since.Equal(us(at(2))) {
		t.Errorf("k2 after CoolDown: %s", describe(k))
	}
	if k := getKey(t, s, PK(4)); k.State != store.StateAvailable {
		t.Errorf("k4 became %s", k.State)
	}
	trail := auditTrail(t, s)
	last := trail[len(trail)-1]
	if last.Action != "quiet" || !slices.Equal(last.Pubkeys, pks(1)) || last.Actor != "reuse-gate" {
		t.Errorf("last audit event %+v, want quiet for k1", last)
	}
	// Claims follow the new ends: at 6 k1 and k2 are due, k3 not.
	c := claim(t, s, "pod-b", "", 4, at(6))
	if got := pubkeysOf(c.Keys); !slices.Equal(got, pks(1, 2, 4)) {
		t.Errorf("claim at 6 = %s, want [k1 k2 k4]", names(got))
	}
}

func testReleaseProtection(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	claim(t, s, "pod-a", "A", 3, at(1))
	if got, err := s.Protections(t.Context(), pks(1, 2, 3)); err != nil || len(got) != 0 {
		t.Errorf("Protections before any release = %v, %v", got, err)
	}
	p1 := store.Protection{HasBlock: true, BlockSlot: 64, HasAttestation: true, SourceEpoch: 6, TargetEpoch: 7}
	p2 := store.Protection{HasAttestation: true, SourceEpoch: 1, TargetEpoch: 2}
	_, err := s.Release(t.Context(), store.ReleaseParams{Pod: "pod-a", PodUID: "A", Until: at(2), Now: at(2), Reason: "done",
		Protection: map[store.Pubkey]store.Protection{PK(1): p1, PK(2): p2}})
	must(t, err)
	want := map[store.Pubkey]store.Protection{PK(1): p1, PK(2): p2}
	got, err := s.Protections(t.Context(), pks(1, 2, 3, 9))
	must(t, err)
	if !maps.Equal(got, want) {
		t.Errorf("Protections = %+v, want %+v", got, want)
	}
	if k := getKey(t, s, PK(1)); k.Protection == nil || *k.Protection != p1 {
		t.Errorf("GetKey(k1).Protection = %+v", k.Protection)
	}
	for _, k := range list(t, s, store.ListOptions{WithDeposit: true}) {
		if w, ok := want[k.Pubkey]; ok != (k.Protection != nil) || (ok && *k.Protection != w) {
			t.Errorf("ListKeys(WithDeposit) %s Protection = %+v, want %+v", name(k.Pubkey), k.Protection, w)
		}
	}
	// The next holder's release merges: the highest of each.
	c := claim(t, s, "pod-b", "B", 3, at(3))
	if len(c.Keys) != 3 {
		t.Fatalf("pod-b got %d keys", len(c.Keys))
	}
	_, err = s.Release(t.Context(), store.ReleaseParams{Pod: "pod-b", PodUID: "B", Until: at(4), Now: at(4), Reason: "done",
		Protection: map[store.Pubkey]store.Protection{
			PK(1): {HasBlock: true, BlockSlot: 60, HasAttestation: true, SourceEpoch: 8, TargetEpoch: 9},
			PK(2): {HasBlock: true, BlockSlot: 5},
			PK(3): {},
		}})
	must(t, err)
	got, err = s.Protections(t.Context(), pks(1, 2, 3))
	must(t, err)
	want = map[store.Pubkey]store.Protection{
		PK(1): {HasBlock: true, BlockSlot: 64, HasAttestation: true, SourceEpoch: 8, TargetEpoch: 9},
		PK(2): {HasBlock: true, BlockSlot: 5, HasAttestation: true, SourceEpoch: 1, TargetEpoch: 2},
	}
	if !maps.Equal(got, want) {
		t.Errorf("merged Protections = %+v, want %+v", got, want)
	}
	// Watermarks with a source after the target are refused.
	claim(t, s, "pod-c", "C", 1, at(5))
	before := takeSnapshot(t, s)
	_, err = s.Release(t.Context(), store.ReleaseParams{Pod: "pod-c", Until: at(6), Now: at(6),
		Protection: map[store.Pubkey]store.Protection{PK(1): {HasAttestation: true, SourceEpoch: 9, TargetEpoch: 3}}})
	wantErr(t, err, store.ErrInvalidArgument)
	unchanged(t, s, before)
}

func testReleaseProtectionRefused(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	claim(t, s, "pod-a", "A", 1, at(1)) // k1
	claim(t, s, "pod-b", "B", 1, at(1)) // k2
	before := takeSnapshot(t, s)
	// pod-a uploads history for pod-b's key: refused, and pod-a keeps its keys.
	_, err := s.Release(t.Context(), store.ReleaseParams{Pod: "pod-a", PodUID: "A", Until: at(2), Now: at(2), Reason: "done",
		Protection: map[store.Pubkey]store.Protection{PK(1): {HasBlock: true, BlockSlot: 1}, PK(2): {HasBlock: true, BlockSlot: 9}}})
	wantErr(t, err, store.ErrInvalidArgument)
	unchanged(t, s, before)
}

func testClaimTaken(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	c := claim(t, s, "pod-a", "A", 1, at(1))
	if !slices.Equal(c.Taken, pks(1)) {
		t.Errorf("Taken = %s, want [k1]", names(c.Taken))
	}
	c = claim(t, s, "pod-a", "A", 3, at(2))
	if !slices.Equal(c.Taken, pks(2, 3)) || c.Recycled != 2 {
		t.Errorf("Taken = %s (recycled %d), want [k2 k3]", names(c.Taken), c.Recycled)
	}
	c = claim(t, s, "pod-a", "A", 3, at(3))
	if len(c.Taken) != 0 {
		t.Errorf("Taken of a claim that took nothing = %s", names(c.Taken))
	}
}

// zeroTime is the invalid zero time.
var zeroTime time.Time
