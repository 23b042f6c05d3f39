package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var pendingTests = []testCase{
	{name: "Claim/PendingCountsAsHeld", fn: testClaimPendingCountsAsHeld},
	{name: "Claim/PendingAllOrNothing", fn: testClaimPendingAllOrNothing},
	{name: "AddPending/Targeting", fn: testAddPendingTargeting},
	{name: "AddPending/Errors", fn: testAddPendingErrors},
	{name: "AddPending/PodUID", fn: testAddPendingPodUID},
	{name: "AddAssigned/PendingCountsAsHeld", fn: testAddAssignedPending},
}

// Pending-deposit keys intended for a pod count as held: Claim tops the pod
// up only to Want minus its assigned and pending keys, and returns them.
func testClaimPendingCountsAsHeld(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4)
	addPending(t, s, "pod-a", "A", 2, nks(10), at(1))

	c := claim(t, s, "pod-a", "A", 3, at(2))
	wantClaim(t, c, pks(1, 2), 0, 2)
	wantPending(t, c, pks(10))
	if len(c.Pending) == 1 {
		wantKey(t, c.Pending[0], store.Key{
			Pubkey: PK(10), State: store.StatePendingDeposit, Origin: store.OriginRandom,
			Pod: "pod-a", PodUID: "A", Since: us(at(1)), CreatedAt: us(at(1)),
		})
	}

	// Assigned plus pending reach Want: the pod gets its set back, nothing
	// is taken, nothing changes.
	before := takeSnapshot(t, s)
	for _, aon := range []bool{false, true} {
		c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 3, Now: at(3), AllOrNothing: aon})
		must(t, err)
		wantClaim(t, c, pks(1, 2), 0, 0)
		wantPending(t, c, pks(10))
	}
	unchanged(t, s, before)

	// A pod holding only pending keys that reach Want takes nothing.
	addPending(t, s, "pod-b", "B", 2, nks(20, 21), at(4))
	before = takeSnapshot(t, s)
	c = claim(t, s, "pod-b", "B", 2, at(5))
	wantClaim(t, c, nil, 0, 0)
	wantPending(t, c, pks(20, 21))
	unchanged(t, s, before)

	// Shortfall = Want - assigned - pending.
	c = claim(t, s, "pod-b", "B", 5, at(6))
	wantClaim(t, c, pks(3, 4), 1, 2)
	wantPending(t, c, pks(20, 21))
	if c.Available != 0 {
		t.Errorf("Available = %d, want 0", c.Available)
	}
	for _, k := range c.Keys {
		if k.PodUID != "B" {
			t.Errorf("key %s taken for pod-b carries UID %q, want B", name(k.Pubkey), k.PodUID)
		}
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 4, store.StatePendingDeposit: 3})
}

func testClaimPendingAllOrNothing(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	addPending(t, s, "pod-c", "C", 1, nks(10), at(1))
	before := takeSnapshot(t, s)

	// Wants 4, counts 1 pending: needs 3 from a pool of 2, so nothing moves.
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-c", PodUID: "C", Want: 4, Now: at(2), AllOrNothing: true})
	must(t, err)
	wantClaim(t, c, nil, 3, 0)
	wantPending(t, c, pks(10))
	if c.Available != 2 {
		t.Errorf("Available = %d, want 2", c.Available)
	}
	unchanged(t, s, before)

	// Wants 3: needs exactly the 2 the pool has.
	c, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-c", PodUID: "C", Want: 3, Now: at(3), AllOrNothing: true})
	must(t, err)
	wantClaim(t, c, pks(1, 2), 0, 2)
	wantPending(t, c, pks(10))
	if c.Available != 0 {
		t.Errorf("Available = %d after a full claim, want 0", c.Available)
	}
}

func testAddPendingTargeting(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	wantClaim(t, claim(t, s, "pod-a", "A", 1, at(1)), pks(1), 0, 1)

	// Holds 1, wants 4: the first three new keys, in the order given, are
	// intended for the pod; the rest are spares.
	keys := nks(13, 10, 12, 11, 14)
	keys[1].Deposit = nil
	keys[2].Origin, keys[2].DerivationIndex, keys[2].HasDerivationIndex = store.OriginDerived, 42, true
	addPending(t, s, "pod-a", "A", 4, keys, at(2))
	for _, k := range keys {
		want := store.Key{
			Pubkey: k.Pubkey, State: store.StatePendingDeposit, Origin: k.Origin,
			DerivationIndex: k.DerivationIndex, HasDerivationIndex: k.HasDerivationIndex,
			Since: us(at(2)), CreatedAt: us(at(2)), SealedSecret: k.SealedSecret, Deposit: k.Deposit,
		}
		if k.Pubkey == PK(13) || k.Pubkey == PK(10) || k.Pubkey == PK(12) {
			want.Pod, want.PodUID = "pod-a", "A"
		}
		wantKey(t, getKey(t, s, k.Pubkey), want)
	}
	c := claim(t, s, "pod-a", "A", 4, at(3))
	wantClaim(t, c, pks(1), 0, 0)
	wantPending(t, c, pks(10, 12, 13))

	for _, tc := range []struct {
		opts store.ListOptions
		want []store.Pubkey
	}{
		{store.ListOptions{Pod: "pod-a"}, pks(1, 10, 12, 13)},
		{store.ListOptions{Pod: "pod-a", States: []store.State{store.StatePendingDeposit}}, pks(10, 12, 13)},
		{store.ListOptions{Pod: "pod-a", States: []store.State{store.StateAssigned}}, pks(1)},
		{store.ListOptions{States: []store.State{store.StatePendingDeposit}}, pks(10, 11, 12, 13, 14)},
	} {
		if got := pubkeysOf(list(t, s, tc.opts)); !slices.Equal(got, tc.want) {
			t.Errorf("ListKeys(%+v) = %s, want %s", tc.opts, names(got), names(tc.want))
		}
	}

	// Already at Want (or above it): every new key is a spare. An empty UID
	// matches the recorded one.
	addPending(t, s, "pod-a", "", 4, nks(15), at(4))
	addPending(t, s, "pod-a", "A", 2, nks(16), at(4))
	// No pod: all spares, Want ignored.
	must(t, s.AddPending(t.Context(), store.AddParams{Want: 0, Keys: nks(17, 18), Now: at(4)}))
	for _, i := range []int{11, 14, 15, 16, 17, 18} {
		if k := getKey(t, s, PK(i)); k.State != store.StatePendingDeposit || k.Pod != "" || k.PodUID != "" || k.LastPod != "" {
			t.Errorf("k%d = %s, want a pending spare without pod", i, describe(k))
		}
	}

	// Fewer keys than lacking: all intended, the rest is shortfall.
	addPending(t, s, "pod-z", "Z", 5, nks(20, 21), at(5))
	c = claim(t, s, "pod-z", "Z", 5, at(6))
	wantClaim(t, c, nil, 3, 0)
	wantPending(t, c, pks(20, 21))
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 1, store.StatePendingDeposit: 11})
}

func testAddPendingErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	addKeys(t, s, store.StatePendingDeposit, at(0), 2)
	addKeys(t, s, store.StateAvailable, at(0), 3)
	must(t, s.Retire(t.Context(), PK(3), "old", at(1)))
	wantClaim(t, claim(t, s, "pod-x", "X", 1, at(2)), pks(1), 0, 1)
	addPending(t, s, "pod-p", "P", 1, nks(5), at(2))
	before := takeSnapshot(t, s)
	ctx := t.Context()

	for _, existing := range []int{1, 2, 3, 5} {
		err := s.AddPending(ctx, store.AddParams{Pod: "pod-a", PodUID: "A", Want: 2, Keys: nks(20, existing, 21), Now: at(3)})
		wantErr(t, err, store.ErrKeyExists)
		err = s.AddPending(ctx, store.AddParams{Keys: nks(22, existing), Now: at(3)})
		wantErr(t, err, store.ErrKeyExists)
	}
	// The pod's keys are held under another UID: assigned ones, or only
	// pending ones.
	err := s.AddPending(ctx, store.AddParams{Pod: "pod-x", PodUID: "Y", Want: 3, Keys: nks(23), Now: at(3)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	err = s.AddPending(ctx, store.AddParams{Pod: "pod-p", PodUID: "Q", Want: 3, Keys: nks(24), Now: at(3)})
	wantErr(t, err, store.ErrPodUIDMismatch)

	bad := map[string]store.AddParams{
		"UID without pod":   {PodUID: "U", Keys: nks(25), Now: at(3)},
		"want 0 for a pod":  {Pod: "pod-a", Want: 0, Keys: nks(25), Now: at(3)},
		"want -1 for a pod": {Pod: "pod-a", Want: -1, Keys: nks(25), Now: at(3)},
		"no keys, pod":      {Pod: "pod-a", Want: 1, Now: at(3)},
		"no keys, spares":   {Now: at(3)},
		"duplicate key":     {Pod: "pod-a", Want: 1, Keys: nks(25, 26, 25), Now: at(3)},
		"duplicate spare":   {Keys: nks(25, 25), Now: at(3)},
		"zero now":          {Pod: "pod-a", Want: 1, Keys: nks(25)},
		"zero now, spares":  {Keys: nks(25)},
		"year 10000":        {Keys: nks(25), Now: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	invalid := nks(25, 26)
	invalid[1].SealedSecret = nil
	bad["invalid key"] = store.AddParams{Pod: "pod-a", Want: 2, Keys: invalid, Now: at(3)}
	for what, p := range bad {
		if err := s.AddPending(ctx, p); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("AddPending with %s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	unchanged(t, s, before)
	for i := 20; i <= 26; i++ {
		if _, err := s.GetKey(ctx, PK(i)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("k%d: GetKey error = %v, want ErrNotFound: a failed AddPending stored it", i, err)
		}
	}
}

func testAddPendingPodUID(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Adoption by a pod holding nothing.
	addPending(t, s, "pod-a", "A1", 2, nks(1, 2), at(1))
	for _, i := range []int{1, 2} {
		if k := getKey(t, s, PK(i)); k.PodUID != "A1" {
			t.Errorf("k%d PodUID = %q, want A1", i, k.PodUID)
		}
	}
	// A pod holding only pending keys enforces their UID everywhere.
	addKeys(t, s, store.StateAvailable, at(1), 3)
	before := takeSnapshot(t, s)
	_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "A2", Want: 3, Now: at(2)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	_, err = s.AddAssigned(ctx, store.AddParams{Pod: "pod-a", PodUID: "A2", Want: 3, Keys: nks(30), Now: at(2)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	_, err = s.Release(ctx, store.ReleaseParams{Pod: "pod-a", PodUID: "A2", Until: at(3), Now: at(2)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	unchanged(t, s, before)

	// Empty UID: new intended keys carry the recorded one.
	addPending(t, s, "pod-a", "", 3, nks(4), at(3))
	if k := getKey(t, s, PK(4)); k.Pod != "pod-a" || k.PodUID != "A1" {
		t.Errorf("k4 = %s, want intended for pod-a under A1", describe(k))
	}

	// Fill-in: pending keys recorded without a UID take the first non-empty
	// one, with the keys Claim takes...
	addPending(t, s, "pod-b", "", 2, nks(5), at(4))
	c := claim(t, s, "pod-b", "B1", 2, at(5))
	wantClaim(t, c, pks(3), 0, 1)
	wantPending(t, c, pks(5))
	if got := getKey(t, s, PK(5)).PodUID; got != "B1" || len(c.Pending) != 1 || c.Pending[0].PodUID != "B1" || c.Keys[0].PodUID != "B1" {
		t.Errorf("filled-in UID of k5 = %q (claim: %+v), want B1 on every key", got, c)
	}
	// ... and also when nothing is taken.
	addPending(t, s, "pod-c", "", 1, nks(6), at(6))
	c = claim(t, s, "pod-c", "C1", 1, at(7))
	wantPending(t, c, pks(6))
	if got := getKey(t, s, PK(6)).PodUID; got != "C1" {
		t.Errorf("filled-in UID of k6 = %q, want C1", got)
	}
	err = s.AddPending(ctx, store.AddParams{Pod: "pod-c", PodUID: "C2", Want: 2, Keys: nks(7), Now: at(8)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	// AddPending fills in too.
	addPending(t, s, "pod-d", "", 1, nks(8), at(8))
	addPending(t, s, "pod-d", "D1", 1, nks(9), at(9))
	if k8, k9 := getKey(t, s, PK(8)), getKey(t, s, PK(9)); k8.PodUID != "D1" || k9.Pod != "" {
		t.Errorf("k8 = %s, k9 = %s; want k8 under D1 and k9 a spare", describe(k8), describe(k9))
	}

	// The UID survives confirmation.
	if k := confirm(t, s, PK(4), 10, at(10)); k.State != store.StateAssigned || k.Pod != "pod-a" || k.PodUID != "A1" {
		t.Errorf("confirmed k4 = %s, want assigned to pod-a under A1", describe(k))
	}
}

// AddAssigned counts the pod's pending keys as held, like Claim.
func testAddAssignedPending(t *testing.T, s store.Store) {
	addPending(t, s, "pod-a", "A", 2, nks(1), at(1))
	c := addAssigned(t, s, "pod-a", "A", 3, nks(10, 11, 12), 2)
	wantClaim(t, c, pks(10, 11), 0, 0)
	wantPending(t, c, pks(1))
	if k := getKey(t, s, PK(12)); k.State != store.StateAvailable {
		t.Errorf("k12 state = %s, want available: the pod holds 2 and has 1 pending", k.State)
	}
	c = addAssigned(t, s, "pod-a", "A", 5, nks(13), 3)
	wantClaim(t, c, pks(10, 11, 13), 1, 0)
	wantPending(t, c, pks(1))
}
