package bolt

import (
	"errors"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// planClaim decides a claim from its facts alone: each case is the facts a
// transaction read and the plan it must carry out.
func TestPlanClaim(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	later := now.Add(time.Minute)
	claim := func(want int) store.ClaimParams {
		return store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: want, Now: now}
	}
	with := func(p store.ClaimParams, f func(*store.ClaimParams)) store.ClaimParams { f(&p); return p }
	reserving := func(p *store.ClaimParams) { p.ReserveToken, p.ReserveUntil = "tok", later }
	held := func(n int, uid string) store.PodState { return store.PodState{Held: n, UID: uid} }
	tests := []struct {
		name string
		p    store.ClaimParams
		f    claimFacts
		err  error
		// want: the plan's write, heldBack, fillIn, uid, activating, and
		// the reservation after it (count, -1 for none) and whether it changed.
		write, heldBack, fillIn bool
		uid                     string
		activating              int
		resCount                int
		resChanged              bool
	}{
		{name: "pod holds enough", p: claim(2), f: claimFacts{pod: held(2, "A")}, uid: "A", resCount: -1},
		{name: "takes from the pool", p: claim(2), f: claimFacts{found: 2}, write: true, uid: "A", resCount: -1},
		{name: "empty pool", p: claim(2), f: claimFacts{}, uid: "A", resCount: -1},
		{name: "all or nothing, too few", p: with(claim(3), func(p *store.ClaimParams) { p.AllOrNothing = true }),
			f: claimFacts{found: 2}, heldBack: true, uid: "A", resCount: -1},
		{name: "all or nothing, enough", p: with(claim(3), func(p *store.ClaimParams) { p.AllOrNothing = true }),
			f: claimFacts{found: 3}, write: true, uid: "A", resCount: -1},
		{name: "another UID", p: claim(2), f: claimFacts{pod: held(1, "B"), found: 1}, err: store.ErrPodUIDMismatch},
		{name: "fills in the UID", p: claim(1), f: claimFacts{pod: held(1, "")}, write: true, fillIn: true, uid: "A", resCount: -1},
		{name: "strict UID adopts nothing", p: with(claim(1), func(p *store.ClaimParams) { p.StrictUID = true }),
			f: claimFacts{pod: held(1, "")}, err: store.ErrPodUIDMismatch},
		{name: "reserves what the pool lacks", p: with(claim(3), reserving), f: claimFacts{found: 1},
			write: true, uid: "A", resCount: 2, resChanged: true},
		{name: "reserves with nothing taken", p: with(claim(3), reserving), f: claimFacts{},
			write: true, uid: "A", resCount: 3, resChanged: true},
		{name: "another caller's live reservation counts as held", p: with(claim(2), reserving),
			f:   claimFacts{pod: store.PodState{UID: "A", Res: &store.Reservation{Token: "other", Count: 2, Until: later}}},
			uid: "A", resCount: 2},
		{name: "activating keys count as in progress", p: with(claim(3), func(p *store.ClaimParams) { reserving(p); p.RequireActive = true }),
			f: claimFacts{found: 1, activating: 5}, write: true, uid: "A", activating: 2, resCount: -1},
		{name: "an expired reservation goes when the pod changes", p: claim(1),
			f:     claimFacts{pod: store.PodState{UID: "A", Res: &store.Reservation{Token: "old", Count: 1, Until: now}}, found: 1},
			write: true, uid: "A", resCount: -1, resChanged: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := planClaim(&tc.p, tc.f)
			if tc.err != nil || err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				return
			}
			if pl.write != tc.write || pl.heldBack != tc.heldBack || pl.fillIn != tc.fillIn || pl.uid != tc.uid || pl.activating != tc.activating {
				t.Errorf("plan write %v heldBack %v fillIn %v uid %q activating %d; want %v %v %v %q %d",
					pl.write, pl.heldBack, pl.fillIn, pl.uid, pl.activating, tc.write, tc.heldBack, tc.fillIn, tc.uid, tc.activating)
			}
			count := -1
			if pl.res.Res != nil {
				count = pl.res.Res.Count
			}
			if count != tc.resCount || pl.res.Changed != tc.resChanged {
				t.Errorf("reservation after: count %d changed %v; want %d %v", count, pl.res.Changed, tc.resCount, tc.resChanged)
			}
		})
	}
}
