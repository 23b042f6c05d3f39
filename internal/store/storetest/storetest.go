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

// testCase is one subtest. It sets fn, or withFresh when it needs more
// empty stores than the one it is given (each call of fresh opens one).
type testCase struct {
	name      string
	fn        func(t *testing.T, s store.Store)
	withFresh func(t *testing.T, s store.Store, fresh func() store.Store)
}

// Run runs the conformance suite: every subtest gets a fresh store from open,
// behind the checking front (store.Front, as storeurl.Open serves it), and
// ends with CheckInvariants on it. Subtests run one after another.
func Run(t *testing.T, open OpenFunc) {
	open = fronted(open)
	groups := [][]testCase{
		claimTests, addTests, lifecycleTests, readTests, miscTests,
		pendingTests, depositTests, auditTests, dumpTests, concurrencyTests, reserveTests, chainTests, podRuleTests, handoffTests, validatorTests, activeTests, podSizeTests,
	}
	for _, g := range groups {
		for _, tc := range g {
			t.Run(tc.name, func(t *testing.T) {
				s := open(t)
				if tc.withFresh != nil {
					tc.withFresh(t, s, func() store.Store { return open(t) })
				} else {
					tc.fn(t, s)
				}
				if !t.Failed() {
					CheckInvariants(t, s)
				}
			})
		}
	}
}

// RunReopen runs the persistence tests, for backends whose data outlives a
// Store value: what one store wrote must be read back, unchanged and fully
// usable, by the store that reopen returns. Both stores are behind the
// front; reopen is given the backend that open returned.
func RunReopen(t *testing.T, open OpenFunc, reopen ReopenFunc) {
	t.Run("PersistsAcrossReopen", func(t *testing.T) {
		testPersistence(t, fronted(open)(t), func(t *testing.T, s store.Store) store.Store {
			return store.Front(reopen(t, backend(s)))
		})
	})
}

// fronted puts the stores open returns behind the checking front: the
// suite tests a backend as it is served.
func fronted(open OpenFunc) OpenFunc {
	return func(t *testing.T) store.Store { return store.Front(open(t)) }
}

// backend is the store behind the front.
func backend(s store.Store) store.Store {
	if u, ok := s.(interface{ Unwrap() store.Store }); ok {
		return u.Unwrap()
	}
	return s
}

// CheckInvariants walks the store and fails t when a rule of the contract
// that holds between calls is broken: every key is in exactly one defined
// state, listings are in pubkey order, an assigned key has a pod (and equal
// LastPod), only assigned and pending-deposit keys have a pod, a PodUID
// only comes with a pod, no key is in two pods, all keys of one pod
// (assigned and pending-deposit) carry one PodUID, CoolingUntil is set
// exactly in cooling-down, RetiredReason only in retired, deposit-failed, still-signing and exiting,
// and Counts and the per-state and per-pod listings agree with the full
// listing (a pod's listing is its assigned keys and the pending keys
// intended for it). It must not run concurrently with changes to s.
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
		if len(k.SealedSecret) != 0 || k.Deposit != nil || k.DepositTx != nil || k.Protection != nil {
			fail(k, "ListKeys without WithDeposit filled SealedSecret, Deposit, DepositTx or Protection")
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
		if k.RetiredReason != "" && !k.State.HasReason() {
			fail(k, "%s with RetiredReason %q", k.State, k.RetiredReason)
		}
		if k.Pod != "" {
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

	// Each pod's listing is exactly its assigned and intended pending keys,
	// and no key is listed under two pods.
	owner := make(map[store.Pubkey]string)
	for pod, want := range perPod {
		var listed []store.Pubkey
		for _, k := range list(t, s, store.ListOptions{Pod: pod}) {
			if prev, dup := owner[k.Pubkey]; dup {
				t.Errorf("invariant: key %s is listed under pods %s and %s", name(k.Pubkey), prev, pod)
			}
			owner[k.Pubkey] = pod
			if k.Pod != pod {
				t.Errorf("invariant: ListKeys(pod %s) lists %s held by %q", pod, name(k.Pubkey), k.Pod)
			}
			listed = append(listed, k.Pubkey)
		}
		if !slices.Equal(listed, want) {
			t.Errorf("invariant: ListKeys(pod %s) = %s, full listing says %s", pod, names(listed), names(want))
		}
	}
	// PodSizes has exactly the pods of the full listing, with their keys.
	sizes := podSizes(t, s)
	for pod, want := range perPod {
		if sizes[pod] != len(want) {
			t.Errorf("invariant: PodSizes()[%s] = %d, the full listing has %d keys under it", pod, sizes[pod], len(want))
		}
	}
	for pod, n := range sizes {
		if _, ok := perPod[pod]; !ok {
			t.Errorf("invariant: PodSizes()[%s] = %d, the full listing has no key under it", pod, n)
		}
	}
}
