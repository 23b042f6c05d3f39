package storetest

import (
	"slices"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// ListOptions.Pods lists the keys of several pods (assigned and pending
// for them) in pubkey order, each once, as the whole listing shows them;
// filters and pages apply as with Pod.
func testListKeysPods(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 20, 21)
	addAssigned(t, s, "pod-a", "A", 2, nks(8, 4), 1)
	addAssigned(t, s, "pod-b", "B", 1, nks(6), 1)
	addPending(t, s, "pod-a", "A", 3, nks(5), at(2))
	addAssigned(t, s, "pod-c", "C", 2, nks(9, 1), 2)
	// A released key keeps pod-d as its last pod but is not pod-d's.
	addAssigned(t, s, "pod-d", "D", 1, nks(7), 2)
	if _, err := s.Release(t.Context(), store.ReleaseParams{Pod: "pod-d", PodUID: "D", Until: at(9), Now: at(3)}); err != nil {
		t.Fatal(err)
	}

	after := func(i int) *store.Pubkey { p := PK(i); return &p }
	assigned, pending := []store.State{store.StateAssigned}, []store.State{store.StatePendingDeposit}
	for _, tc := range []struct {
		opts store.ListOptions
		want []store.Pubkey
	}{
		{store.ListOptions{Pods: []string{"pod-a"}}, pks(4, 5, 8)},
		{store.ListOptions{Pods: []string{"pod-a", "pod-b"}}, pks(4, 5, 6, 8)},
		{store.ListOptions{Pods: []string{"pod-b", "pod-a", "pod-b"}}, pks(4, 5, 6, 8)},
		{store.ListOptions{Pods: []string{"pod-a", "no-such-pod"}}, pks(4, 5, 8)},
		{store.ListOptions{Pods: []string{"no-such-pod"}}, nil},
		{store.ListOptions{Pods: []string{"pod-d"}}, nil},
		{store.ListOptions{Pods: []string{"pod-a", "pod-c"}, States: assigned}, pks(1, 4, 8, 9)},
		{store.ListOptions{Pods: []string{"pod-a", "pod-c"}, States: pending}, pks(5)},
		{store.ListOptions{Pods: []string{"pod-a", "pod-b", "pod-c"}, After: after(5), Limit: 2}, pks(6, 8)},
		{store.ListOptions{Pods: []string{"pod-c", "pod-a"}, After: after(4)}, pks(5, 8, 9)},
		{store.ListOptions{Pods: []string{"pod-a", "pod-c"}, After: after(9)}, nil},
	} {
		if got := pubkeysOf(list(t, s, tc.opts)); !slices.Equal(got, tc.want) {
			t.Errorf("ListKeys(%+v) = %s, want %s", tc.opts, names(got), names(tc.want))
		}
	}

	// Every field as the whole listing has it, deposits too, and the
	// same keys page by page.
	for _, withDep := range []bool{false, true} {
		var want []store.Key
		for _, k := range list(t, s, store.ListOptions{WithDeposit: withDep}) {
			if k.Pod == "pod-a" || k.Pod == "pod-c" {
				want = append(want, k)
			}
		}
		opts := store.ListOptions{Pods: []string{"pod-c", "pod-a"}, WithDeposit: withDep}
		same := func(a, b store.Key) bool { return describe(a) == describe(b) }
		if got := list(t, s, opts); !slices.EqualFunc(got, want, same) {
			t.Errorf("ListKeys(%+v):\n got %v\nwant %v", opts, got, want)
		}
		for _, page := range []int{1, 2, 4} {
			var got []store.Key
			must(t, store.ListPages(t.Context(), s, opts, page, func(ks []store.Key) error {
				got = append(got, ks...)
				return nil
			}))
			if !slices.EqualFunc(got, want, same) {
				t.Errorf("ListPages(%+v, %d) = %s, want %s", opts, page, names(pubkeysOf(got)), names(pubkeysOf(want)))
			}
		}
	}

	for _, opts := range []store.ListOptions{
		{Pod: "pod-a", Pods: []string{"pod-b"}},
		{Pods: []string{"pod-a", ""}},
	} {
		called := 0
		err := s.ListKeys(t.Context(), opts, func(store.Key) error { called++; return nil })
		wantErr(t, err, store.ErrInvalidArgument)
		if called != 0 {
			t.Errorf("ListKeys(%+v) called fn %d times", opts, called)
		}
	}
}
