package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// PodRuleCase is one case of the pod UID rules (store.PodUID): a pod in a
// state, a call, and what must come of it. The same table runs against the
// pure function (package store's tests) and against every backend (Run),
// PostgreSQL's pkm_claim included.
type PodRuleCase struct {
	Name string
	// The pod: Held keys (0 or 1) recorded under UID; Res is its mint
	// reservation: "" none, "other-live", "other-expired", "own-expired"
	// (held under the call's token), recorded under UID too.
	Held int
	UID  string
	Res  string
	// The call: a claim (Release false) or a release, with the caller's
	// UID, its token when the pod's reservation is its own, and the flags.
	Release   bool
	CallUID   string
	StrictUID bool
	ExactUID  bool
	// Want: ErrPodUIDMismatch or nil, and without error the UID the pod's
	// keys carry after a claim.
	Mismatch bool
	WantUID  string
}

// PodRuleCases is the table of the pod UID rules.
var PodRuleCases = []PodRuleCase{
	{Name: "empty pod, no UID", CallUID: "", WantUID: ""},
	{Name: "empty pod adopts the caller's UID", CallUID: "A", WantUID: "A"},
	{Name: "empty pod adopts the caller's UID, strict", CallUID: "A", StrictUID: true, WantUID: "A"},
	{Name: "same UID", Held: 1, UID: "A", CallUID: "A", WantUID: "A"},
	{Name: "other UID", Held: 1, UID: "A", CallUID: "B", Mismatch: true},
	{Name: "no caller UID keeps the recorded one", Held: 1, UID: "A", CallUID: "", WantUID: "A"},
	{Name: "recorded without UID: filled in", Held: 1, UID: "", CallUID: "A", WantUID: "A"},
	{Name: "recorded without UID, strict: refused", Held: 1, UID: "", CallUID: "A", StrictUID: true, Mismatch: true},
	{Name: "recorded without UID, strict, caller without UID", Held: 1, UID: "", CallUID: "", StrictUID: true, WantUID: ""},
	{Name: "live reservation of another caller counts as keys", Held: 0, UID: "A", Res: "other-live", CallUID: "B", Mismatch: true},
	{Name: "expired reservation of another caller holds nothing", Held: 0, UID: "A", Res: "other-expired", CallUID: "B", WantUID: "B"},
	{Name: "the caller's own expired reservation counts", Held: 0, UID: "A", Res: "own-expired", CallUID: "B", Mismatch: true},
	{Name: "release, no UID", Release: true, Held: 1, UID: "A", CallUID: ""},
	{Name: "release, same UID", Release: true, Held: 1, UID: "A", CallUID: "A"},
	{Name: "release, other UID", Release: true, Held: 1, UID: "A", CallUID: "B", Mismatch: true},
	{Name: "release, recorded without UID", Release: true, Held: 1, UID: "", CallUID: "B"},
	{Name: "exact release, same UID", Release: true, ExactUID: true, Held: 1, UID: "A", CallUID: "A"},
	{Name: "exact release, no UID given, keys under one", Release: true, ExactUID: true, Held: 1, UID: "A", CallUID: "", Mismatch: true},
	{Name: "exact release of keys without UID", Release: true, ExactUID: true, Held: 1, UID: "", CallUID: ""},
	{Name: "exact release for a UID, keys without one", Release: true, ExactUID: true, Held: 1, UID: "", CallUID: "B", Mismatch: true},
	{Name: "exact release of an empty pod", Release: true, ExactUID: true, CallUID: "B"},
}

// PodRuleToken is the token of the reservations of PodRuleCases: the
// caller's for "own-*", another's for "other-*".
const PodRuleToken, podRuleOtherToken = "own", "other"

// State and Call turn a case into the pure function's arguments, at now.
func (c PodRuleCase) State(now time.Time) store.PodState {
	p := store.PodState{Held: c.Held, UID: c.UID}
	switch c.Res {
	case "other-live":
		p.Res = &store.Reservation{Token: podRuleOtherToken, Count: 1, Until: now.Add(time.Minute)}
	case "other-expired":
		p.Res = &store.Reservation{Token: podRuleOtherToken, Count: 1, Until: now.Add(-time.Minute)}
	case "own-expired":
		p.Res = &store.Reservation{Token: PodRuleToken, Count: 1, Until: now.Add(-time.Minute)}
	}
	return p
}

// Call is the case's call at now.
func (c PodRuleCase) Call(now time.Time) store.PodCall {
	pc := store.PodCall{UID: c.CallUID, Now: now, StrictUID: c.StrictUID, ExactUID: c.ExactUID}
	if c.Res == "own-expired" {
		pc.Token = PodRuleToken
	}
	return pc
}

var podRuleTests = []testCase{
	{name: "PodRules", withFresh: testPodRules},
	{name: "Claim/WantZeroAdoptsUID", fn: testClaimWantZero},
}

// A claim of 0 keys takes nothing, whatever the pool holds, and only
// applies the UID rules: the pod watcher records a holder's UID with it.
func testClaimWantZero(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	claim(t, s, "pod-a", "", 2, at(1)) // recorded without a UID
	before := takeSnapshot(t, s)
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-empty", PodUID: "E", Want: 0, Now: at(2)})
	must(t, err)
	if len(c.Keys) != 0 || c.Recycled != 0 || c.Shortfall != 0 {
		t.Errorf("Claim(want 0) of an empty pod = %+v, want nothing", c)
	}
	unchanged(t, s, before)
	// Strict: refused, as any strict claim with a UID.
	_, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 0, Now: at(3), StrictUID: true})
	wantErr(t, err, store.ErrPodUIDMismatch)
	unchanged(t, s, before)
	c, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 0, Now: at(3)})
	must(t, err)
	if len(c.Keys) != 2 || c.Recycled != 0 {
		t.Errorf("Claim(want 0, adopt) = %d keys, recycled %d; want the pod's 2 and none taken", len(c.Keys), c.Recycled)
	}
	for _, k := range list(t, s, store.ListOptions{Pod: "pod-a"}) {
		if k.PodUID != "A" {
			t.Errorf("key %s carries UID %q after the adoption, want A", name(k.Pubkey), k.PodUID)
		}
	}
	if n := counts(t, s)[store.StateAvailable]; n != 1 {
		t.Errorf("%d available keys, want 1: a claim of 0 keys takes none", n)
	}
}

// testPodRules runs PodRuleCases against the backend, each case on a fresh
// store: it builds the pod state with store calls, makes the call, and
// checks the error and the UID the pod's keys carry.
func testPodRules(t *testing.T, _ store.Store, fresh func() store.Store) {
	for i, c := range PodRuleCases {
		t.Run(c.Name, func(t *testing.T) {
			s := fresh()
			pod := fmt.Sprintf("pod-%d", i)
			base := 100 * i
			// A reservation first (from an empty pool), then the key.
			if c.Res != "" {
				tok := podRuleOtherToken
				if c.Res == "own-expired" {
					tok = PodRuleToken
				}
				until := at(base + 10)
				if c.Res == "other-live" {
					until = at(base + 1000)
				}
				res, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: c.UID, Want: 1, Now: at(base), ReserveToken: tok, ReserveUntil: until})
				must(t, err)
				if res.Reservation == nil || res.Reservation.Token != tok || len(res.Keys) != 0 {
					t.Fatalf("setting up the reservation: %+v (the pool must be empty)", res)
				}
			}
			if c.Held > 0 {
				addKeys(t, s, store.StateAvailable, at(base), 10_000+i)
				res, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: c.UID, Want: 1, Now: at(base + 1)})
				must(t, err)
				if len(res.Keys) != 1 || res.Keys[0].PodUID != c.UID {
					t.Fatalf("setting up the held key: %+v", res)
				}
			}
			now := at(base + 50)
			pc := c.Call(now)
			var err error
			if c.Release {
				_, err = s.Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: c.CallUID, ExactUID: c.ExactUID, Until: now, Now: now, Reason: "test"})
			} else {
				addKeys(t, s, store.StateAvailable, at(base), 20_000+i) // one to take
				_, err = s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: c.CallUID, Want: c.Held + 1, Now: now,
					StrictUID: c.StrictUID, ReserveToken: pc.Token, ReserveUntil: now.Add(time.Minute)})
			}
			if c.Mismatch != errors.Is(err, store.ErrPodUIDMismatch) || (!c.Mismatch && err != nil) {
				t.Fatalf("call: err = %v, want mismatch %v", err, c.Mismatch)
			}
			if c.Mismatch || c.Release {
				return
			}
			for _, k := range list(t, s, store.ListOptions{Pod: pod}) {
				if k.PodUID != c.WantUID {
					t.Errorf("key %s of the pod carries UID %q, want %q", name(k.Pubkey), k.PodUID, c.WantUID)
				}
			}
		})
	}
}
