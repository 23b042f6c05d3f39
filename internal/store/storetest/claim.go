package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var claimTests = []testCase{
	{name: "Claim/EmptyPool", fn: testClaimEmptyPool},
	{name: "Claim/RecycleOrder", fn: testClaimRecycleOrder},
	{name: "Claim/OrderTies", fn: testClaimOrderTies},
	{name: "Claim/HoldingEnough", fn: testClaimHoldingEnough},
	{name: "Claim/TopUp", fn: testClaimTopUp},
	{name: "Claim/CoolingDown", fn: testClaimCoolingDown},
	{name: "Claim/CoolingOrder", fn: testClaimCoolingOrder},
	{name: "Claim/AvailableBeforeCooled", fn: testClaimAvailableBeforeCooled},
	{name: "Claim/SkipsPendingAndRetired", fn: testClaimSkipsPendingAndRetired},
	{name: "Claim/AllOrNothing", fn: testClaimAllOrNothing},
	{name: "Claim/SecretsAndFields", fn: testClaimSecretsAndFields},
	{name: "Claim/PodUID", fn: testClaimPodUID},
}

func testClaimEmptyPool(t *testing.T, s store.Store) {
	c := claim(t, s, "pod-a", "uid-a", 3, at(0))
	wantClaim(t, c, nil, 3, 0)
	if c.Available != 0 {
		t.Errorf("Available = %d, want 0", c.Available)
	}
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", Want: 2, Now: at(0), AllOrNothing: true})
	must(t, err)
	wantClaim(t, c, nil, 2, 0)
	if c.Available != 0 {
		t.Errorf("AllOrNothing: Available = %d, want 0", c.Available)
	}
	wantCounts(t, s, nil)
	if _, err := s.GetKey(t.Context(), PK(1)); err == nil {
		t.Error("GetKey of a key never added: no error")
	} else {
		wantErr(t, err, store.ErrNotFound)
	}
}

// Available keys go oldest ReleasedAt first, then never-released keys by
// CreatedAt. Pubkey order is the reverse of creation order here, so a backend
// that falls back to pubkey order fails.
func testClaimRecycleOrder(t *testing.T, s store.Store) {
	for i, k := range []int{5, 4, 3, 2, 1} {
		addKeys(t, s, store.StateAvailable, at(i+1), k)
	}
	wantClaim(t, claim(t, s, "p-a", "", 1, at(10)), pks(5), 0, 1)
	wantClaim(t, claim(t, s, "p-b", "", 1, at(10)), pks(4), 0, 1)
	wantClaim(t, claim(t, s, "p-c", "", 1, at(10)), pks(3), 0, 1)
	release(t, s, "p-c", "", at(20), at(20))
	release(t, s, "p-a", "", at(21), at(21))
	release(t, s, "p-b", "", at(22), at(22))
	n, err := s.Sweep(t.Context(), at(30))
	must(t, err)
	if n != 3 {
		t.Fatalf("Sweep moved %d keys, want 3", n)
	}
	// Released at 20, 21, 22, then never released (created at 4, 5).
	for i, want := range []int{3, 5, 4, 2, 1} {
		pod := []string{"q1", "q2", "q3", "q4", "q5"}[i]
		wantClaim(t, claim(t, s, pod, "", 1, at(40)), pks(want), 0, 1)
	}
	wantClaim(t, claim(t, s, "q6", "", 1, at(40)), nil, 1, 0)
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 5})
}

// Ties: equal CreatedAt goes by pubkey; equal ReleasedAt by CreatedAt, then
// pubkey; a released key goes before a never-released one however old.
func testClaimOrderTies(t *testing.T, s store.Store) {
	must(t, s.AddKeys(t.Context(), nks(9, 7, 8), store.StateAvailable, at(1)))
	addKeys(t, s, store.StateAvailable, at(2), 6)
	for i, want := range []int{7, 8, 9, 6} {
		pod := []string{"p7", "p8", "p9", "p6"}[i]
		wantClaim(t, claim(t, s, pod, "", 1, at(3)), pks(want), 0, 1)
	}
	addKeys(t, s, store.StateAvailable, at(0), 3) // never released, oldest CreatedAt
	for _, pod := range []string{"p6", "p9", "p7"} {
		if n := release(t, s, pod, "", at(10), at(10)); n != 1 {
			t.Fatalf("Release(%s) = %d, want 1", pod, n)
		}
	}
	if _, err := s.Sweep(t.Context(), at(10)); err != nil {
		t.Fatal(err)
	}
	// k7 and k9: released at 10, created at 1 (pubkey decides); k6 released
	// at 10, created at 2; k3 never released.
	for i, want := range []int{7, 9, 6, 3} {
		pod := []string{"r1", "r2", "r3", "r4"}[i]
		wantClaim(t, claim(t, s, pod, "", 1, at(11)), pks(want), 0, 1)
	}
}

func testClaimHoldingEnough(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), rng(1, 6)...)
	first := claim(t, s, "pod-a", "uid-a", 3, at(1))
	wantClaim(t, first, pks(1, 2, 3), 0, 3)
	before := takeSnapshot(t, s)
	for _, p := range []store.ClaimParams{
		{Pod: "pod-a", PodUID: "uid-a", Want: 3, Now: at(2)},
		{Pod: "pod-a", PodUID: "uid-a", Want: 2, Now: at(3)},
		{Pod: "pod-a", PodUID: "uid-a", Want: 1, Now: at(4), AllOrNothing: true},
		{Pod: "pod-a", Want: 3, Now: at(5)},
	} {
		c, err := s.Claim(t.Context(), p)
		must(t, err)
		// Exactly its set, even when it holds more than it wants.
		wantClaim(t, c, pks(1, 2, 3), 0, 0)
		if c.Available != 0 {
			t.Errorf("Available = %d, want 0", c.Available)
		}
		for i := range c.Keys {
			wantKey(t, c.Keys[i], first.Keys[i])
		}
	}
	unchanged(t, s, before)
}

func testClaimTopUp(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	wantClaim(t, claim(t, s, "pod-a", "", 1, at(1)), pks(1), 0, 1)
	c := claim(t, s, "pod-a", "", 3, at(2))
	wantClaim(t, c, pks(1, 2, 3), 0, 2)
	// The key it held keeps its Since; the new ones start now.
	for i, since := range []time.Time{at(1), at(2), at(2)} {
		if !c.Keys[i].Since.Equal(us(since)) {
			t.Errorf("key %s: Since = %v, want %v", name(c.Keys[i].Pubkey), c.Keys[i].Since, us(since))
		}
	}
	c = claim(t, s, "pod-a", "", 5, at(3))
	wantClaim(t, c, pks(1, 2, 3), 2, 0)
	if c.Available != 0 {
		t.Errorf("Available = %d, want 0", c.Available)
	}
	addKeys(t, s, store.StateAvailable, at(4), 4)
	wantClaim(t, claim(t, s, "pod-a", "", 5, at(5)), pks(1, 2, 3, 4), 1, 1)
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 4})
}

func testClaimCoolingDown(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	wantClaim(t, claim(t, s, "pod-a", "uid-a", 1, at(1)), pks(1), 0, 1)
	until := at(100)
	if n := release(t, s, "pod-a", "uid-a", until, at(50)); n != 1 {
		t.Fatalf("Release = %d, want 1", n)
	}
	cooling := getKey(t, s, PK(1))

	// Not before CoolingUntil, to the microsecond.
	before := takeSnapshot(t, s)
	c := claim(t, s, "pod-b", "", 1, until.Add(-time.Microsecond))
	wantClaim(t, c, nil, 1, 0)
	unchanged(t, s, before)

	// At CoolingUntil as stored (truncated to the microsecond) it is reusable.
	c = claim(t, s, "pod-b", "uid-b", 1, until.Truncate(time.Microsecond))
	wantClaim(t, c, pks(1), 0, 1)
	want := cooling
	want.State = store.StateAssigned
	want.Pod, want.PodUID, want.LastPod = "pod-b", "uid-b", "pod-b"
	want.Since = us(until)
	want.CoolingUntil = time.Time{}
	want.ReleasedAt = us(at(50))
	want.Deposit = nil // a Claim does not fill Deposit
	wantKey(t, c.Keys[0], want)
	want.Deposit = deposit(1)
	wantKey(t, getKey(t, s, PK(1)), want)
}

// Expired cooling-down keys are taken earliest CoolingUntil first (not by
// ReleasedAt), ties by pubkey; a key not yet expired is never taken.
func testClaimCoolingOrder(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4, 5)
	wantClaim(t, claim(t, s, "p1", "", 1, at(1)), pks(1), 0, 1)
	wantClaim(t, claim(t, s, "p2", "", 1, at(1)), pks(2), 0, 1)
	wantClaim(t, claim(t, s, "p3", "", 1, at(1)), pks(3), 0, 1)
	wantClaim(t, claim(t, s, "p45", "", 2, at(1)), pks(4, 5), 0, 2)
	release(t, s, "p45", "", at(30), at(4)) // k4, k5 until 30
	release(t, s, "p1", "", at(30), at(5))  // k1 until 30
	release(t, s, "p2", "", at(20), at(6))  // k2 until 20
	release(t, s, "p3", "", at(25), at(7))  // k3 until 25
	wantClaim(t, claim(t, s, "q0", "", 1, at(19)), nil, 1, 0)
	for i, want := range []int{2, 3, 1, 4} {
		pod := []string{"q1", "q2", "q3", "q4"}[i]
		wantClaim(t, claim(t, s, pod, "", 1, at(40)), pks(want), 0, 1)
	}
	if k := getKey(t, s, PK(5)); k.State != store.StateCoolingDown {
		t.Errorf("k5 state = %s, want %s: a Claim moves only the keys it takes", k.State, store.StateCoolingDown)
	}
}

// Available keys come before expired cooling-down keys, whatever their
// ReleasedAt; expired keys a Claim does not take stay cooling-down.
func testClaimAvailableBeforeCooled(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4)
	wantClaim(t, claim(t, s, "pod-a", "", 2, at(1)), pks(1, 2), 0, 2)
	release(t, s, "pod-a", "", at(20), at(2)) // k1, k2: released at 2, until 20
	wantClaim(t, claim(t, s, "pod-c", "", 1, at(3)), pks(3), 0, 1)
	release(t, s, "pod-c", "", at(4), at(4)) // k3: released at 4
	n, err := s.Sweep(t.Context(), at(4))
	must(t, err)
	if n != 1 {
		t.Fatalf("Sweep = %d, want 1", n)
	}
	wantClaim(t, claim(t, s, "pod-d", "", 1, at(30)), pks(3), 0, 1)
	wantClaim(t, claim(t, s, "pod-e", "", 1, at(30)), pks(4), 0, 1)
	wantClaim(t, claim(t, s, "pod-f", "", 1, at(30)), pks(1), 0, 1)
	if k := getKey(t, s, PK(2)); k.State != store.StateCoolingDown || !k.CoolingUntil.Equal(us(at(20))) {
		t.Errorf("k2 = %s, want still cooling-down until %v", describe(k), us(at(20)))
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 3, store.StateCoolingDown: 1})
}

func testClaimSkipsPendingAndRetired(t *testing.T, s store.Store) {
	addKeys(t, s, store.StatePendingDeposit, at(0), 1, 2)
	addKeys(t, s, store.StateAvailable, at(0), 3)
	must(t, s.Retire(t.Context(), PK(3), "compromised", at(1)))
	before := takeSnapshot(t, s)
	wantClaim(t, claim(t, s, "pod-a", "", 2, at(2)), nil, 2, 0)
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", Want: 2, Now: at(2), AllOrNothing: true})
	must(t, err)
	wantClaim(t, c, nil, 2, 0)
	if c.Available != 0 {
		t.Errorf("Available = %d, want 0: pending-deposit and retired keys are not claimable", c.Available)
	}
	unchanged(t, s, before)
}

func testClaimAllOrNothing(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	wantClaim(t, claim(t, s, "pod-x", "", 1, at(1)), pks(1), 0, 1)
	release(t, s, "pod-x", "", at(10), at(5)) // k1 cooling until 10
	before := takeSnapshot(t, s)
	aon := func(pod, uid string, want int, now time.Time) store.Claim {
		t.Helper()
		c, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: now, AllOrNothing: true})
		must(t, err)
		return c
	}
	// At 20 the claimable pool is k2, k3 and the expired k1.
	c := aon("pod-a", "uid-a", 4, at(20))
	wantClaim(t, c, nil, 4, 0)
	if c.Available != 3 {
		t.Errorf("Available = %d, want 3", c.Available)
	}
	// At 9, k1 is still cooling down.
	if c = aon("pod-a", "uid-a", 4, at(9)); c.Available != 2 || c.Shortfall != 4 {
		t.Errorf("at 9: Available, Shortfall = %d, %d; want 2, 4", c.Available, c.Shortfall)
	}
	unchanged(t, s, before)

	c = aon("pod-a", "", 3, at(20))
	wantClaim(t, c, pks(1, 2, 3), 0, 3)
	if c.Available != 0 {
		t.Errorf("Available = %d after a full claim, want 0", c.Available)
	}
	addKeys(t, s, store.StateAvailable, at(21), 4)
	before = takeSnapshot(t, s)
	// Holds 3, pool has 1, wants 5: nothing moves, and the empty recorded
	// UID is not filled in either.
	c = aon("pod-a", "uid-late", 5, at(22))
	wantClaim(t, c, pks(1, 2, 3), 2, 0)
	if c.Available != 1 {
		t.Errorf("Available = %d, want 1", c.Available)
	}
	unchanged(t, s, before)
}

func testClaimSecretsAndFields(t *testing.T, s store.Store) {
	keys := nks(1, 2, 3)
	keys[0].SealedSecret = []byte{0}
	keys[1].SealedSecret = bytes.Repeat([]byte{0xff, 0x00, 0x80}, 100)
	keys[1].Origin, keys[1].DerivationIndex, keys[1].HasDerivationIndex = store.OriginDerived, 77, true
	keys[2].Origin, keys[2].Deposit = store.OriginImported, nil
	secrets := make(map[store.Pubkey][]byte)
	for _, k := range keys {
		secrets[k.Pubkey] = bytes.Clone(k.SealedSecret)
	}
	must(t, s.AddKeys(t.Context(), keys, store.StateAvailable, at(0)))
	// The store must have copied what it was given.
	for _, k := range keys {
		k.SealedSecret[0] ^= 0x55
	}

	c := claim(t, s, "pod-a", "uid-a", 3, at(1))
	wantClaim(t, c, pks(1, 2, 3), 0, 3)
	for i, k := range c.Keys {
		want := store.Key{
			Pubkey: keys[i].Pubkey, State: store.StateAssigned, Origin: keys[i].Origin,
			DerivationIndex: keys[i].DerivationIndex, HasDerivationIndex: keys[i].HasDerivationIndex,
			Pod: "pod-a", PodUID: "uid-a", LastPod: "pod-a",
			Since: us(at(1)), CreatedAt: us(at(0)),
			SealedSecret: secrets[keys[i].Pubkey],
		}
		wantKey(t, k, want) // byte-for-byte secret, no Deposit in a Claim
	}
	// Returned secrets are the caller's to change.
	for _, k := range c.Keys {
		k.SealedSecret[0] ^= 0xaa
	}
	for _, k := range claim(t, s, "pod-a", "uid-a", 3, at(2)).Keys {
		if !bytes.Equal(k.SealedSecret, secrets[k.Pubkey]) {
			t.Errorf("key %s: sealed secret changed to %x, want %x", name(k.Pubkey), k.SealedSecret, secrets[k.Pubkey])
		}
	}
	for pk, want := range secrets {
		if got := getKey(t, s, pk).SealedSecret; !bytes.Equal(got, want) {
			t.Errorf("GetKey(%s).SealedSecret = %x, want %x", name(pk), got, want)
		}
	}
}

func testClaimPodUID(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), rng(1, 8)...)
	uids := func(c store.Claim) []string {
		var out []string
		for _, k := range c.Keys {
			out = append(out, k.PodUID)
		}
		return out
	}
	// Adoption: a pod holding nothing takes the caller's UID.
	c := claim(t, s, "pod-a", "A1", 2, at(1))
	wantClaim(t, c, pks(1, 2), 0, 2)
	if got := uids(c); !slices.Equal(got, []string{"A1", "A1"}) {
		t.Errorf("adopted UIDs = %q, want A1", got)
	}

	// Mismatch: another incarnation of the pod gets nothing, and nothing changes.
	before := takeSnapshot(t, s)
	for _, want := range []int{1, 2, 3} {
		_, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A2", Want: want, Now: at(2)})
		wantErr(t, err, store.ErrPodUIDMismatch)
	}
	unchanged(t, s, before)

	// An empty UID matches; keys it tops up carry the recorded UID.
	c = claim(t, s, "pod-a", "", 3, at(3))
	wantClaim(t, c, pks(1, 2, 3), 0, 1)
	if got := uids(c); !slices.Equal(got, []string{"A1", "A1", "A1"}) {
		t.Errorf("UIDs after an empty-UID top-up = %q, want A1", got)
	}

	// Fill-in: an empty recorded UID takes the first non-empty one, also when
	// the pod already holds enough.
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(4)), pks(4), 0, 1)
	if k := getKey(t, s, PK(4)); k.PodUID != "" {
		t.Fatalf("k4 PodUID = %q, want empty", k.PodUID)
	}
	c = claim(t, s, "pod-b", "B1", 1, at(5))
	wantClaim(t, c, pks(4), 0, 0)
	if got := getKey(t, s, PK(4)).PodUID; got != "B1" || c.Keys[0].PodUID != "B1" {
		t.Errorf("filled-in UID = %q (claim says %q), want B1", got, c.Keys[0].PodUID)
	}
	c = claim(t, s, "pod-b", "", 2, at(6))
	wantClaim(t, c, pks(4, 5), 0, 1)
	if got := uids(c); !slices.Equal(got, []string{"B1", "B1"}) {
		t.Errorf("UIDs = %q, want B1", got)
	}
	_, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-b", PodUID: "B2", Want: 1, Now: at(7)})
	wantErr(t, err, store.ErrPodUIDMismatch)

	// Once the old incarnation's keys are released, the new one may claim.
	if n := release(t, s, "pod-a", "A1", at(8), at(8)); n != 3 {
		t.Fatalf("Release = %d, want 3", n)
	}
	c = claim(t, s, "pod-a", "A2", 1, at(9))
	wantClaim(t, c, pks(6), 0, 1)
	if c.Keys[0].PodUID != "A2" {
		t.Errorf("new incarnation's UID = %q, want A2", c.Keys[0].PodUID)
	}
}
