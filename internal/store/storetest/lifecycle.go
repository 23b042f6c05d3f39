package storetest

import (
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var lifecycleTests = []testCase{
	{name: "Release/Fields", fn: testReleaseFields},
	{name: "Release/UIDMismatch", fn: testReleaseUIDMismatch},
	{name: "Retire/EveryState", fn: testRetireEveryState},
	{name: "Retire/NeverComesBack", fn: testRetireNeverComesBack},
	{name: "Sweep", fn: testSweep},
	{name: "Counts", fn: testCounts},
}

func testReleaseFields(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	wantClaim(t, claim(t, s, "pod-a", "A", 2, at(1)), pks(1, 2), 0, 2)
	if n := release(t, s, "pod-a", "A", at(100), at(10)); n != 2 {
		t.Fatalf("Release = %d, want 2", n)
	}
	for _, i := range []int{1, 2} {
		wantKey(t, getKey(t, s, PK(i)), store.Key{
			Pubkey: PK(i), State: store.StateCoolingDown, Origin: store.OriginRandom,
			LastPod: "pod-a", Since: us(at(10)), CoolingUntil: us(at(100)), ReleasedAt: us(at(10)),
			CreatedAt: us(at(0)), SealedSecret: sealed(i), Deposit: deposit(i),
		})
	}
	if got := list(t, s, store.ListOptions{Pod: "pod-a"}); len(got) != 0 {
		t.Errorf("ListKeys(pod-a) after release = %s, want none", names(pubkeysOf(got)))
	}
	wantCounts(t, s, map[store.State]int{store.StateCoolingDown: 2, store.StateAvailable: 1})

	before := takeSnapshot(t, s)
	if n := release(t, s, "pod-a", "A", at(100), at(11)); n != 0 {
		t.Errorf("second Release = %d, want 0", n)
	}
	if n := release(t, s, "never-seen", "", at(100), at(11)); n != 0 {
		t.Errorf("Release of an unknown pod = %d, want 0", n)
	}
	// No key changed, but each Release was recorded, with no keys and the
	// caller's UID (the pod holds none of its own).
	before.audit = append(before.audit,
		store.AuditEvent{Seq: 3, Time: us(at(11)).UTC(), Action: "release", Pod: "pod-a", PodUID: "A", Actor: store.ActorServer},
		store.AuditEvent{Seq: 4, Time: us(at(11)).UTC(), Action: "release", Pod: "never-seen", Actor: store.ActorServer})
	unchanged(t, s, before)

	// Before the delay another pod gets only the available key; at the end
	// of it, the released ones.
	wantClaim(t, claim(t, s, "pod-b", "", 3, at(50)), pks(3), 2, 1)
	c := claim(t, s, "pod-c", "", 2, at(100))
	wantClaim(t, c, pks(1, 2), 0, 2)
	for _, k := range c.Keys {
		if !k.ReleasedAt.Equal(us(at(10))) || k.LastPod != "pod-c" {
			t.Errorf("reused key = %s, want ReleasedAt kept and LastPod pod-c", describe(k))
		}
	}
}

func testReleaseUIDMismatch(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	wantClaim(t, claim(t, s, "pod-a", "A", 1, at(1)), pks(1), 0, 1)
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(1)), pks(2), 0, 1)
	before := takeSnapshot(t, s)
	_, err := s.Release(t.Context(), store.ReleaseParams{Pod: "pod-a", PodUID: "B", Until: at(10), Now: at(2)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	unchanged(t, s, before)

	// A matching UID, or none, releases; so does any UID when none is recorded.
	if n := release(t, s, "pod-b", "whatever", at(10), at(2)); n != 1 {
		t.Errorf("Release(pod-b) = %d, want 1", n)
	}
	if n := release(t, s, "pod-a", "", at(10), at(2)); n != 1 {
		t.Errorf("Release(pod-a, no UID) = %d, want 1", n)
	}
	wantCounts(t, s, map[store.State]int{store.StateCoolingDown: 2})
}

func testRetireEveryState(t *testing.T, s store.Store) {
	addKeys(t, s, store.StatePendingDeposit, at(0), 1)
	addKeys(t, s, store.StateAvailable, at(0), 2)
	addKeys(t, s, store.StateAvailable, at(1), 3, 4, 5)
	wantClaim(t, claim(t, s, "pod-b", "B", 1, at(2)), pks(2), 0, 1)
	release(t, s, "pod-b", "B", at(1000), at(3)) // k2 cooling down
	wantClaim(t, claim(t, s, "pod-a", "A", 2, at(4)), pks(3, 4), 0, 2)

	for _, i := range []int{1, 2, 3, 5} {
		must(t, s.Retire(t.Context(), PK(i), "reason-"+name(PK(i)), at(20)))
	}
	base := func(i int) store.Key {
		return store.Key{
			Pubkey: PK(i), State: store.StateRetired, Origin: store.OriginRandom,
			Since: us(at(20)), RetiredReason: "reason-" + name(PK(i)),
			CreatedAt: us(at(1)), SealedSecret: sealed(i), Deposit: deposit(i),
		}
	}
	k1 := base(1) // was pending-deposit
	k1.CreatedAt = us(at(0))
	k2 := base(2) // was cooling down: ReleasedAt and LastPod stay
	k2.CreatedAt, k2.ReleasedAt, k2.LastPod = us(at(0)), us(at(3)), "pod-b"
	k3 := base(3) // was assigned: leaves its pod, LastPod stays
	k3.LastPod = "pod-a"
	k5 := base(5) // was available
	for _, want := range []store.Key{k1, k2, k3, k5} {
		wantKey(t, getKey(t, s, want.Pubkey), want)
	}

	// The pod's set shrank; the pool is empty, so it cannot top up.
	wantClaim(t, claim(t, s, "pod-a", "A", 2, at(21)), pks(4), 1, 0)
	if got := pubkeysOf(list(t, s, store.ListOptions{Pod: "pod-a"})); len(got) != 1 || got[0] != PK(4) {
		t.Errorf("ListKeys(pod-a) = %s, want [k4]", names(got))
	}

	// Retiring again changes nothing; the first reason stays.
	before := takeSnapshot(t, s)
	must(t, s.Retire(t.Context(), PK(3), "another reason", at(30)))
	unchanged(t, s, before)

	err := s.Retire(t.Context(), PK(99), "unknown", at(30))
	if err == nil {
		t.Fatal("Retire of an unknown key: no error")
	}
	wantErr(t, err, store.ErrNotFound)
	unchanged(t, s, before)
	wantCounts(t, s, map[store.State]int{store.StateRetired: 4, store.StateAssigned: 1})
}

func testRetireNeverComesBack(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4)
	wantClaim(t, claim(t, s, "pod-a", "", 2, at(1)), pks(1, 2), 0, 2)
	release(t, s, "pod-a", "", at(5), at(2)) // k1, k2 cooling until 5
	must(t, s.Retire(t.Context(), PK(1), "r", at(3)))
	must(t, s.Retire(t.Context(), PK(3), "r", at(3)))
	n, err := s.Sweep(t.Context(), at(10))
	must(t, err)
	if n != 1 {
		t.Errorf("Sweep = %d, want 1 (k2 only)", n)
	}
	wantClaim(t, claim(t, s, "pod-b", "", 10, at(10)), pks(2, 4), 8, 2)
	release(t, s, "pod-b", "", at(10), at(10))
	wantClaim(t, claim(t, s, "pod-c", "", 10, at(20)), pks(2, 4), 8, 2)
	for _, i := range []int{1, 3} {
		if k := getKey(t, s, PK(i)); k.State != store.StateRetired {
			t.Errorf("k%d state = %s, want retired", i, k.State)
		}
	}
}

func testSweep(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4)
	wantClaim(t, claim(t, s, "pod-a", "", 2, at(1)), pks(1, 2), 0, 2)
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(1)), pks(3), 0, 1)
	release(t, s, "pod-a", "", at(20), at(10))
	release(t, s, "pod-b", "", at(30), at(10))

	sweep := func(now time.Time, want int) {
		t.Helper()
		n, err := s.Sweep(t.Context(), now)
		must(t, err)
		if n != want {
			t.Errorf("Sweep(%v) = %d, want %d", now, n, want)
		}
	}
	before := takeSnapshot(t, s)
	sweep(at(20).Add(-time.Microsecond), 0)
	unchanged(t, s, before)
	sweep(at(20), 2)
	for _, i := range []int{1, 2} {
		wantKey(t, getKey(t, s, PK(i)), store.Key{
			Pubkey: PK(i), State: store.StateAvailable, Origin: store.OriginRandom,
			LastPod: "pod-a", Since: us(at(20)), ReleasedAt: us(at(10)),
			CreatedAt: us(at(0)), SealedSecret: sealed(i), Deposit: deposit(i),
		})
	}
	if k := getKey(t, s, PK(3)); k.State != store.StateCoolingDown {
		t.Errorf("k3 state = %s, want cooling-down", k.State)
	}
	sweep(at(25), 0)
	sweep(at(40), 1)
	wantCounts(t, s, map[store.State]int{store.StateAvailable: 4})
}

func testCounts(t *testing.T, s store.Store) {
	got := counts(t, s)
	if len(got) != len(store.States) {
		t.Errorf("Counts() of an empty store = %v, want every state with 0", got)
	}
	for _, st := range store.States {
		if n, ok := got[st]; !ok || n != 0 {
			t.Errorf("Counts()[%s] = %d, %t; want 0, present", st, n, ok)
		}
	}
	addKeys(t, s, store.StatePendingDeposit, at(0), 1, 2)
	addKeys(t, s, store.StateAvailable, at(0), 3, 4, 5, 6, 7)
	claim(t, s, "pod-a", "", 2, at(1)) // k3, k4
	claim(t, s, "pod-b", "", 1, at(1)) // k5
	release(t, s, "pod-b", "", at(9), at(2))
	must(t, s.Retire(t.Context(), PK(1), "r", at(3)))
	must(t, s.Retire(t.Context(), PK(6), "r", at(3)))
	wantCounts(t, s, map[store.State]int{
		store.StatePendingDeposit: 1, store.StateAvailable: 1, store.StateAssigned: 2,
		store.StateCoolingDown: 1, store.StateRetired: 2,
	})
}
