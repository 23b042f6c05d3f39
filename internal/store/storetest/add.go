package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

var addTests = []testCase{
	{name: "AddAssigned/AssignsWhatPodLacks", fn: testAddAssignedLacks},
	{name: "AddAssigned/KeyExists", fn: testAddAssignedKeyExists},
	{name: "AddAssigned/PodUID", fn: testAddAssignedPodUID},
	{name: "Add/DuplicateInCall", fn: testAddDuplicateInCall},
	{name: "AddKeys/States", fn: testAddKeysStates},
	{name: "AddKeys/InvalidKeys", fn: testAddKeysInvalid},
}

func addAssigned(t *testing.T, s store.Store, pod, uid string, want int, keys []store.NewKey, sec int) store.Claim {
	t.Helper()
	c, err := s.AddAssigned(t.Context(), store.AddParams{Pod: pod, PodUID: uid, Want: want, Keys: keys, Now: at(sec)})
	if err != nil {
		t.Fatalf("AddAssigned(%s, want %d, %d keys): %v", pod, want, len(keys), err)
	}
	return c
}

func testAddAssignedLacks(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	wantClaim(t, claim(t, s, "pod-a", "U", 1, at(1)), pks(1), 0, 1)

	// Holds 1, wants 3: the first two new keys are assigned, the rest pooled.
	keys := nks(13, 10, 12, 11)
	keys[1].Deposit = nil
	c := addAssigned(t, s, "pod-a", "U", 3, keys, 5)
	wantClaim(t, c, pks(1, 10, 13), 0, 0)
	if c.Available != 0 {
		t.Errorf("Available = %d, want 0", c.Available)
	}
	for _, k := range c.Keys {
		if k.Deposit != nil {
			t.Errorf("key %s: AddAssigned result has a Deposit", name(k.Pubkey))
		}
	}
	for _, i := range []int{13, 10} {
		want := store.Key{
			Pubkey: PK(i), State: store.StateAssigned, Origin: store.OriginRandom,
			Pod: "pod-a", PodUID: "U", LastPod: "pod-a",
			Since: us(at(5)), CreatedAt: us(at(5)), SealedSecret: sealed(i), Deposit: deposit(i),
		}
		if i == 10 {
			want.Deposit = nil
		}
		wantKey(t, getKey(t, s, PK(i)), want)
	}
	for _, i := range []int{12, 11} {
		wantKey(t, getKey(t, s, PK(i)), store.Key{
			Pubkey: PK(i), State: store.StateAvailable, Origin: store.OriginRandom,
			Since: us(at(5)), CreatedAt: us(at(5)), SealedSecret: sealed(i), Deposit: deposit(i),
		})
	}

	// Holds 3, wants 2: every new key goes to the pool.
	c = addAssigned(t, s, "pod-a", "U", 2, nks(14), 6)
	wantClaim(t, c, pks(1, 10, 13), 0, 0)
	if k := getKey(t, s, PK(14)); k.State != store.StateAvailable {
		t.Errorf("k14 state = %s, want %s", k.State, store.StateAvailable)
	}

	// Fewer keys than lacking: all assigned, the rest is shortfall.
	c = addAssigned(t, s, "pod-b", "", 5, nks(15, 16), 7)
	wantClaim(t, c, pks(15, 16), 3, 0)
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 5, store.StateAvailable: 3})

	// The pooled keys are claimable (never released, CreatedAt 5, pubkey order).
	wantClaim(t, claim(t, s, "pod-c", "", 2, at(8)), pks(11, 12), 0, 2)
}

func testAddAssignedKeyExists(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	addKeys(t, s, store.StatePendingDeposit, at(0), 2)
	addKeys(t, s, store.StateAvailable, at(0), 3)
	must(t, s.Retire(t.Context(), PK(3), "old", at(1)))
	wantClaim(t, claim(t, s, "pod-x", "", 1, at(2)), pks(1), 0, 1)
	before := takeSnapshot(t, s)

	for _, existing := range []int{1, 2, 3} {
		_, err := s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-a", PodUID: "A", Want: 2, Keys: nks(20, existing, 21), Now: at(3)})
		wantErr(t, err, store.ErrKeyExists)
		err = s.AddKeys(t.Context(), nks(22, existing), store.StateAvailable, at(3))
		wantErr(t, err, store.ErrKeyExists)
		err = s.AddKeys(t.Context(), nks(23, existing), store.StatePendingDeposit, at(3))
		wantErr(t, err, store.ErrKeyExists)
	}
	unchanged(t, s, before)
	for _, i := range []int{20, 21, 22, 23} {
		if _, err := s.GetKey(t.Context(), PK(i)); err == nil {
			t.Errorf("k%d was stored by a failed call", i)
		}
	}
}

func testAddAssignedPodUID(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	wantClaim(t, claim(t, s, "pod-x", "X", 1, at(1)), pks(1), 0, 1)
	before := takeSnapshot(t, s)
	_, err := s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-x", PodUID: "Y", Want: 3, Keys: nks(10, 11), Now: at(2)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	unchanged(t, s, before)

	// Empty UID: new keys carry the recorded one.
	c := addAssigned(t, s, "pod-x", "", 2, nks(10), 3)
	wantClaim(t, c, pks(1, 10), 0, 0)
	for _, k := range c.Keys {
		if k.PodUID != "X" {
			t.Errorf("key %s PodUID = %q, want X", name(k.Pubkey), k.PodUID)
		}
	}
	// Adoption by a pod holding nothing.
	c = addAssigned(t, s, "pod-z", "Z", 1, nks(20), 4)
	wantClaim(t, c, pks(20), 0, 0)
	if len(c.Keys) == 1 && c.Keys[0].PodUID != "Z" {
		t.Errorf("adoption: PodUID = %q, want Z", c.Keys[0].PodUID)
	}
	// Fill-in, even when every new key goes to the pool.
	wantClaim(t, claim(t, s, "pod-w", "", 1, at(5)), pks(2), 0, 1)
	c = addAssigned(t, s, "pod-w", "W", 1, nks(30), 6)
	wantClaim(t, c, pks(2), 0, 0)
	if got := getKey(t, s, PK(2)).PodUID; got != "W" {
		t.Errorf("filled-in PodUID = %q, want W", got)
	}
	// The filled-in UID is enforced from now on.
	_, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-w", PodUID: "W2", Want: 1, Now: at(7)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	_, err = s.Release(t.Context(), store.ReleaseParams{Pod: "pod-w", PodUID: "W2", Until: at(8), Now: at(7)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	if k := getKey(t, s, PK(30)); k.State != store.StateAvailable || k.PodUID != "" || k.Pod != "" {
		t.Errorf("pooled key = %s, want available without pod", describe(k))
	}
}

func testAddDuplicateInCall(t *testing.T, s store.Store) {
	before := takeSnapshot(t, s)
	_, err := s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-a", Want: 3, Keys: nks(30, 31, 30), Now: at(0)})
	wantErr(t, err, store.ErrInvalidArgument)
	err = s.AddKeys(t.Context(), nks(32, 33, 32), store.StateAvailable, at(0))
	wantErr(t, err, store.ErrInvalidArgument)
	unchanged(t, s, before)
	if len(before.keys) != 0 {
		t.Fatalf("store not empty at start")
	}
}

func testAddKeysStates(t *testing.T, s store.Store) {
	keys := nks(1, 2, 3, 4)
	keys[1].Origin, keys[1].DerivationIndex, keys[1].HasDerivationIndex = store.OriginDerived, 4242, true
	keys[2].Origin, keys[2].DerivationIndex, keys[2].HasDerivationIndex = store.OriginImported, 0, true
	keys[3].Origin, keys[3].Deposit = store.OriginImported, nil
	must(t, s.AddKeys(t.Context(), keys[:2], store.StateAvailable, at(3)))
	must(t, s.AddKeys(t.Context(), keys[2:], store.StatePendingDeposit, at(4)))
	must(t, s.AddKeys(t.Context(), nil, store.StateAvailable, at(5)))
	for i, k := range keys {
		state, sec := store.StateAvailable, 3
		if i >= 2 {
			state, sec = store.StatePendingDeposit, 4
		}
		wantKey(t, getKey(t, s, k.Pubkey), store.Key{
			Pubkey: k.Pubkey, State: state, Origin: k.Origin,
			DerivationIndex: k.DerivationIndex, HasDerivationIndex: k.HasDerivationIndex,
			Since: us(at(sec)), CreatedAt: us(at(sec)), SealedSecret: k.SealedSecret, Deposit: k.Deposit,
		})
	}
	wantCounts(t, s, map[store.State]int{store.StateAvailable: 2, store.StatePendingDeposit: 2})

	before := takeSnapshot(t, s)
	for _, st := range []store.State{store.StateAssigned, store.StateCoolingDown, store.StateRetired, "", "bogus"} {
		err := s.AddKeys(t.Context(), nks(10), st, at(6))
		wantErr(t, err, store.ErrInvalidArgument)
	}
	unchanged(t, s, before)
}

func testAddKeysInvalid(t *testing.T, s store.Store) {
	bad := map[string]func(*store.NewKey){
		"no sealed secret":    func(k *store.NewKey) { k.SealedSecret = nil },
		"empty sealed secret": func(k *store.NewKey) { k.SealedSecret = []byte{} },
		"empty origin":        func(k *store.NewKey) { k.Origin = "" },
		"unknown origin":      func(k *store.NewKey) { k.Origin = "found-on-the-street" },
		"derived, no index":   func(k *store.NewKey) { k.Origin, k.HasDerivationIndex = store.OriginDerived, false },
	}
	addKeys(t, s, store.StateAvailable, at(0), 1)
	before := takeSnapshot(t, s)
	for what, spoil := range bad {
		keys := nks(10, 11)
		spoil(&keys[1])
		if err := s.AddKeys(t.Context(), keys, store.StateAvailable, at(1)); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("AddKeys with %s: error = %v, want ErrInvalidArgument", what, err)
		}
		_, err := s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-a", Want: 1, Keys: keys, Now: at(1)})
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("AddAssigned with %s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	unchanged(t, s, before)
	if got := pubkeysOf(list(t, s, store.ListOptions{})); !slices.Equal(got, pks(1)) {
		t.Errorf("keys = %s, want [k1]", names(got))
	}
}
