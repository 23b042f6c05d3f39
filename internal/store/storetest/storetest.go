// Package storetest is the conformance suite of store.Store: every backend
// runs it from its own tests,
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
//	}
//
// The suite tests the contract written in package store and nothing a
// backend chooses for itself. It never reads the wall clock: every time it
// passes is fixed, with a sub-microsecond part and a non-UTC location, so the
// time rules of the contract (microsecond precision, CoolingUntil <= Now)
// are tested exactly.
package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// OpenFunc returns a new, empty store for one subtest. It registers the
// store's Close with t.Cleanup.
type OpenFunc func(t *testing.T) store.Store

// ReopenFunc closes s and opens the same store again, registering the new
// store's Close with t.Cleanup.
type ReopenFunc func(t *testing.T, s store.Store) store.Store

type testCase struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// Run runs the conformance suite: every subtest gets a fresh store from open,
// and ends with CheckInvariants on it.
func Run(t *testing.T, open OpenFunc) {
	groups := [][]testCase{claimTests, addTests, lifecycleTests, readTests, miscTests, concurrencyTests}
	for _, g := range groups {
		for _, tc := range g {
			t.Run(tc.name, func(t *testing.T) {
				s := open(t)
				tc.fn(t, s)
				if !t.Failed() {
					CheckInvariants(t, s)
				}
			})
		}
	}
}

// RunReopen runs the persistence tests, for backends whose data outlives a
// Store value: what one store wrote must be read back, unchanged and fully
// usable, by the store that reopen returns.
func RunReopen(t *testing.T, open OpenFunc, reopen ReopenFunc) {
	t.Run("PersistsAcrossReopen", func(t *testing.T) { testPersistence(t, open(t), reopen) })
}

// CheckInvariants walks the store and fails t when a rule of the contract
// that holds between calls is broken: every key is in exactly one defined
// state, listings are in pubkey order, an assigned key has a pod (and equal
// LastPod), only assigned (or pending-deposit) keys have a pod, no key is in
// two pods, all keys of one pod carry one PodUID, CoolingUntil is set exactly
// in cooling-down, a retired key has no pod, and Counts and the per-state
// and per-pod listings agree with the full listing. It must not run
// concurrently with changes to s.
func CheckInvariants(t *testing.T, s store.Store) {
	t.Helper()
	all := list(t, s, store.ListOptions{})
	byPK := make(map[store.Pubkey]store.Key, len(all))
	perState := make(map[store.State]int)
	perPod := make(map[string][]store.Pubkey)
	podUID := make(map[string]string)
	fail := func(k store.Key, format string, args ...any) {
		t.Helper()
		t.Errorf("invariant: key %s: %s (%s)", name(k.Pubkey), fmt.Sprintf(format, args...), describe(k))
	}
	for i, k := range all {
		if i > 0 && slices.Compare(all[i-1].Pubkey[:], k.Pubkey[:]) >= 0 {
			fail(k, "listed after %s: not in strictly increasing pubkey order", name(all[i-1].Pubkey))
		}
		if _, dup := byPK[k.Pubkey]; dup {
			fail(k, "listed twice")
		}
		byPK[k.Pubkey] = k
		if !k.State.Valid() {
			fail(k, "undefined state %q", k.State)
			continue
		}
		perState[k.State]++
		if len(k.SealedSecret) != 0 {
			fail(k, "ListKeys filled SealedSecret")
		}
		switch k.State {
		case store.StateAssigned:
			if k.Pod == "" {
				fail(k, "assigned without a pod")
			}
			if k.LastPod != k.Pod {
				fail(k, "assigned to %q but LastPod is %q", k.Pod, k.LastPod)
			}
		case store.StatePendingDeposit:
		default:
			if k.Pod != "" {
				fail(k, "%s but has pod %q", k.State, k.Pod)
			}
		}
		if k.Pod == "" && k.PodUID != "" {
			fail(k, "PodUID %q without a pod", k.PodUID)
		}
		if (k.State == store.StateCoolingDown) == k.CoolingUntil.IsZero() {
			fail(k, "CoolingUntil must be set exactly in %s", store.StateCoolingDown)
		}
		if k.State == store.StateAssigned {
			perPod[k.Pod] = append(perPod[k.Pod], k.Pubkey)
			if uid, seen := podUID[k.Pod]; seen && uid != k.PodUID {
				fail(k, "pod %s holds keys under UIDs %q and %q", k.Pod, uid, k.PodUID)
			}
			podUID[k.Pod] = k.PodUID
		}
		if k.CreatedAt.IsZero() || k.Since.IsZero() {
			fail(k, "CreatedAt and Since must be set")
		}
	}

	got := counts(t, s)
	for _, st := range store.States {
		n, ok := got[st]
		if !ok {
			t.Errorf("invariant: Counts() has no entry for state %s", st)
		}
		if n != perState[st] {
			t.Errorf("invariant: Counts()[%s] = %d, but ListKeys lists %d such keys", st, n, perState[st])
		}
		// The per-state listings partition the full listing.
		for _, k := range list(t, s, store.ListOptions{States: []store.State{st}}) {
			if full, ok := byPK[k.Pubkey]; !ok || full.State != st {
				t.Errorf("invariant: ListKeys(state %s) lists %s, which the full listing has as %q", st, name(k.Pubkey), full.State)
			}
			perState[st]--
		}
		if perState[st] != 0 {
			t.Errorf("invariant: ListKeys(state %s) misses %d keys of the full listing", st, perState[st])
		}
	}
	if len(got) != len(store.States) {
		t.Errorf("invariant: Counts() has %d entries, want one per state (%d): %v", len(got), len(store.States), got)
	}

	// Each pod's listing is exactly its assigned keys, and no key is listed
	// under two pods.
	owner := make(map[store.Pubkey]string)
	for pod, want := range perPod {
		var assigned []store.Pubkey
		for _, k := range list(t, s, store.ListOptions{Pod: pod}) {
			if prev, dup := owner[k.Pubkey]; dup {
				t.Errorf("invariant: key %s is listed under pods %s and %s", name(k.Pubkey), prev, pod)
			}
			owner[k.Pubkey] = pod
			if k.Pod != pod {
				t.Errorf("invariant: ListKeys(pod %s) lists %s held by %q", pod, name(k.Pubkey), k.Pod)
			}
			if k.State == store.StateAssigned {
				assigned = append(assigned, k.Pubkey)
			}
		}
		if !slices.Equal(assigned, want) {
			t.Errorf("invariant: ListKeys(pod %s) assigned keys = %s, full listing says %s", pod, names(assigned), names(want))
		}
	}
}
