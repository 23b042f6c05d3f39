package storetest

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var readTests = []testCase{
	{name: "ListKeys/OrderAndFilters", fn: testListKeys},
	{name: "ListKeys/StopOnError", fn: testListKeysStop},
	{name: "ListKeys/Pages", fn: testListKeysPages},
	{name: "ListKeys/Pods", fn: testListKeysPods},
	{name: "GetKey/RoundTrip", fn: testGetKeyRoundTrip},
	{name: "GetKey/TimePrecision", fn: testTimePrecision},
}

func testListKeys(t *testing.T, s store.Store) {
	avail := nks(7, 3, 9)
	avail[2].Deposit = nil
	must(t, s.AddKeys(t.Context(), avail, store.StateAvailable, at(0)))
	addKeys(t, s, store.StatePendingDeposit, at(0), 5, 1)
	addAssigned(t, s, "pod-a", "A", 2, nks(8, 4), 1)
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(2)), pks(3), 0, 1)

	all := list(t, s, store.ListOptions{})
	if got := pubkeysOf(all); !slices.Equal(got, pks(1, 3, 4, 5, 7, 8, 9)) {
		t.Fatalf("ListKeys() = %s, want pubkey order [k1 k3 k4 k5 k7 k8 k9]", names(got))
	}
	for _, k := range all {
		if k.SealedSecret != nil || k.Deposit != nil {
			t.Errorf("ListKeys() key %s has SealedSecret %x, Deposit %v; want neither", name(k.Pubkey), k.SealedSecret, k.Deposit)
		}
		full := getKey(t, s, k.Pubkey)
		full.SealedSecret, full.Deposit = nil, nil
		wantKey(t, k, full)
	}
	for _, k := range list(t, s, store.ListOptions{WithDeposit: true}) {
		want := deposit(int(k.Pubkey[4]))
		if k.Pubkey == PK(9) {
			want = nil
		}
		if !equalDeposit(k.Deposit, want) || k.SealedSecret != nil {
			t.Errorf("ListKeys(WithDeposit) key %s: deposit %+v, secret %x; want deposit %+v, no secret", name(k.Pubkey), k.Deposit, k.SealedSecret, want)
		}
	}

	for _, tc := range []struct {
		opts store.ListOptions
		want []store.Pubkey
	}{
		{store.ListOptions{States: []store.State{store.StatePendingDeposit}}, pks(1, 5)},
		{store.ListOptions{States: []store.State{store.StateAvailable}}, pks(7, 9)},
		{store.ListOptions{States: []store.State{store.StateAssigned, store.StateAvailable}}, pks(3, 4, 7, 8, 9)},
		{store.ListOptions{States: []store.State{store.StateCoolingDown, store.StateRetired}}, nil},
		{store.ListOptions{Pod: "pod-a"}, pks(4, 8)},
		{store.ListOptions{Pod: "pod-b"}, pks(3)},
		{store.ListOptions{Pod: "pod-a", States: []store.State{store.StateAssigned}}, pks(4, 8)},
		{store.ListOptions{Pod: "pod-a", States: []store.State{store.StateAvailable}}, nil},
		{store.ListOptions{Pod: "no-such-pod"}, nil},
	} {
		got := list(t, s, tc.opts)
		if !slices.Equal(pubkeysOf(got), tc.want) {
			t.Errorf("ListKeys(%+v) = %s, want %s", tc.opts, names(pubkeysOf(got)), names(tc.want))
		}
		for _, k := range got {
			if len(tc.opts.States) > 0 && !slices.Contains(tc.opts.States, k.State) {
				t.Errorf("ListKeys(%+v) listed %s in state %s", tc.opts, name(k.Pubkey), k.State)
			}
		}
	}
	withDep := list(t, s, store.ListOptions{Pod: "pod-a", WithDeposit: true})
	for _, k := range withDep {
		if !equalDeposit(k.Deposit, deposit(int(k.Pubkey[4]))) {
			t.Errorf("ListKeys(pod-a, WithDeposit) key %s: deposit %+v", name(k.Pubkey), k.Deposit)
		}
	}

	called := 0
	err := s.ListKeys(t.Context(), store.ListOptions{States: []store.State{"bogus"}}, func(store.Key) error { called++; return nil })
	wantErr(t, err, store.ErrInvalidArgument)
	if called != 0 {
		t.Errorf("ListKeys with an unknown state called fn %d times", called)
	}
}

func equalDeposit(a, b *store.DepositData) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func testListKeysStop(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), rng(1, 10)...)
	claim(t, s, "pod-a", "", 3, at(1))
	errStop := errors.New("stop here")
	for _, tc := range []struct {
		opts      store.ListOptions
		stopAfter int
	}{
		{store.ListOptions{}, 2},
		{store.ListOptions{States: []store.State{store.StateAvailable}}, 4},
		{store.ListOptions{Pod: "pod-a"}, 1},
	} {
		var seen []store.Pubkey
		err := s.ListKeys(t.Context(), tc.opts, func(k store.Key) error {
			seen = append(seen, k.Pubkey)
			if len(seen) == tc.stopAfter {
				return errStop
			}
			return nil
		})
		if !errors.Is(err, errStop) {
			t.Errorf("ListKeys(%+v) = %v, want the error fn returned", tc.opts, err)
		}
		if len(seen) != tc.stopAfter {
			t.Errorf("ListKeys(%+v) called fn %d times after it failed at call %d", tc.opts, len(seen), tc.stopAfter)
		}
	}
}

// After and Limit cut a listing into pages (filters apply first), and
// ListPages puts them together again, whatever the page size.
func testListKeysPages(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), rng(1, 10)...)
	addAssigned(t, s, "pod-a", "A", 3, nks(12, 14, 16), 1)
	after := func(i int) *store.Pubkey { p := PK(i); return &p }
	avail := []store.State{store.StateAvailable}
	for _, tc := range []struct {
		opts store.ListOptions
		want []store.Pubkey
	}{
		{store.ListOptions{Limit: 3}, pks(1, 2, 3)},
		{store.ListOptions{After: after(3), Limit: 3}, pks(4, 5, 6)},
		{store.ListOptions{After: after(9), Limit: 2}, pks(10, 12)},
		{store.ListOptions{After: after(11)}, pks(12, 14, 16)},
		{store.ListOptions{After: after(16)}, nil},
		{store.ListOptions{After: after(8), States: avail}, pks(9, 10)},
		{store.ListOptions{After: after(5), States: avail, Limit: 1}, pks(6)},
		{store.ListOptions{Pod: "pod-a", Limit: 2}, pks(12, 14)},
		{store.ListOptions{Pod: "pod-a", After: after(12)}, pks(14, 16)},
		{store.ListOptions{Pod: "pod-a", After: after(13), Limit: 1}, pks(14)},
	} {
		if got := pubkeysOf(list(t, s, tc.opts)); !slices.Equal(got, tc.want) {
			t.Errorf("ListKeys(%+v) = %s, want %s", tc.opts, names(got), names(tc.want))
		}
	}
	for _, opts := range []store.ListOptions{{}, {States: avail}, {Pod: "pod-a"}, {WithDeposit: true}} {
		want := list(t, s, opts)
		for _, page := range []int{1, 2, 3, len(want), len(want) + 1} {
			var got []store.Key
			pages := 0
			err := store.ListPages(t.Context(), s, opts, page, func(ks []store.Key) error {
				pages++
				if len(ks) > page {
					t.Errorf("ListPages(%+v, %d) gave a page of %d keys", opts, page, len(ks))
				}
				got = append(got, ks...)
				return nil
			})
			must(t, err)
			if !slices.EqualFunc(got, want, func(a, b store.Key) bool { return describe(a) == describe(b) }) {
				t.Errorf("ListPages(%+v, %d) = %s, want %s", opts, page, names(pubkeysOf(got)), names(pubkeysOf(want)))
			}
			if wantPages := max(1, (len(want)+page)/page); pages > wantPages {
				t.Errorf("ListPages(%+v, %d) read %d pages for %d keys", opts, page, pages, len(want))
			}
		}
	}
}

// Every field of a key survives the store: origins, derivation indices,
// deposits, pods, reasons and all four times.
func testGetKeyRoundTrip(t *testing.T, s store.Store) {
	derived := store.NewKey{
		Pubkey: PK(1), SealedSecret: sealed(1), Origin: store.OriginDerived,
		DerivationIndex: math.MaxUint32, HasDerivationIndex: true, Deposit: deposit(1),
	}
	imported := store.NewKey{
		Pubkey: PK(2), SealedSecret: sealed(2), Origin: store.OriginImported,
		DerivationIndex: 0, HasDerivationIndex: true,
	}
	random := store.NewKey{Pubkey: PK(3), SealedSecret: sealed(3), Origin: store.OriginRandom, Deposit: deposit(3)}
	must(t, s.AddKeys(t.Context(), []store.NewKey{derived, imported}, store.StatePendingDeposit, at(1)))
	addAssigned(t, s, "pod-with-a-long-name-0123456789", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", 1, []store.NewKey{random}, 2)

	want := map[store.Pubkey]store.Key{
		PK(1): {
			Pubkey: PK(1), State: store.StatePendingDeposit, Origin: store.OriginDerived,
			DerivationIndex: math.MaxUint32, HasDerivationIndex: true,
			Since: us(at(1)), CreatedAt: us(at(1)), SealedSecret: sealed(1), Deposit: deposit(1),
		},
		PK(2): {
			Pubkey: PK(2), State: store.StatePendingDeposit, Origin: store.OriginImported,
			HasDerivationIndex: true, Since: us(at(1)), CreatedAt: us(at(1)), SealedSecret: sealed(2),
		},
		PK(3): {
			Pubkey: PK(3), State: store.StateAssigned, Origin: store.OriginRandom,
			Pod: "pod-with-a-long-name-0123456789", PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
			LastPod: "pod-with-a-long-name-0123456789",
			Since:   us(at(2)), CreatedAt: us(at(2)), SealedSecret: sealed(3), Deposit: deposit(3),
		},
	}
	for pk, w := range want {
		wantKey(t, getKey(t, s, pk), w)
	}

	release(t, s, "pod-with-a-long-name-0123456789", "", at(4000), at(3))
	w := want[PK(3)]
	w.State, w.Pod, w.PodUID = store.StateCoolingDown, "", ""
	w.Since, w.ReleasedAt, w.CoolingUntil = us(at(3)), us(at(3)), us(at(4000))
	wantKey(t, getKey(t, s, PK(3)), w)

	reason := "exited: voluntary exit at epoch 123456 — ünïcödé"
	must(t, s.Retire(t.Context(), PK(3), reason, at(5)))
	w.State, w.RetiredReason, w.Since, w.CoolingUntil = store.StateRetired, reason, us(at(5)), time.Time{}
	wantKey(t, getKey(t, s, PK(3)), w)
}

// Times are kept to the microsecond, truncated, over the whole allowed range.
func testTimePrecision(t *testing.T, s store.Store) {
	for i, tm := range []time.Time{
		time.Date(2030, 1, 2, 3, 4, 5, 678901234, time.FixedZone("UTC-7", -7*3600)),
		time.Date(2030, 1, 2, 3, 4, 5, 999, time.UTC),                               // below a microsecond
		time.Date(1969, 12, 31, 23, 59, 59, 999999500, time.UTC),                    // before the Unix epoch
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),                                 // the epoch itself is a time, not "unset"
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),                                 // first microsecond after the zero Time
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", 3600*14)), // last allowed year (UTC)
	} {
		i := 100 + i
		addKeys(t, s, store.StateAvailable, tm, i)
		k := getKey(t, s, PK(i))
		if !k.CreatedAt.Equal(tm.Truncate(time.Microsecond)) || !k.Since.Equal(tm.Truncate(time.Microsecond)) {
			t.Errorf("time %s came back as CreatedAt %s, Since %s; want %s",
				tm.Format(time.RFC3339Nano), k.CreatedAt.Format(time.RFC3339Nano), k.Since.Format(time.RFC3339Nano),
				tm.Truncate(time.Microsecond).Format(time.RFC3339Nano))
		}
		if !k.ReleasedAt.IsZero() || !k.CoolingUntil.IsZero() {
			t.Errorf("unset times came back as ReleasedAt %v, CoolingUntil %v; want zero", k.ReleasedAt, k.CoolingUntil)
		}
	}
}
