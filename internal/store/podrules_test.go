package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// The table every backend also runs (storetest.PodRuleCases).
func TestPodUID(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, c := range storetest.PodRuleCases {
		op := "claim for"
		if c.Release {
			op = "release"
		}
		uid, fillIn, err := store.PodUID(op, "p", c.State(now), c.Call(now))
		if c.Mismatch != errors.Is(err, store.ErrPodUIDMismatch) || (!c.Mismatch && err != nil) {
			t.Errorf("%s: err = %v, want mismatch %v", c.Name, err, c.Mismatch)
			continue
		}
		if c.Mismatch || c.Release {
			continue
		}
		if uid != c.WantUID {
			t.Errorf("%s: uid %q, want %q", c.Name, uid, c.WantUID)
		}
		wantFill := c.Held > 0 && c.UID == "" && c.WantUID != ""
		if fillIn != wantFill {
			t.Errorf("%s: fillIn %v, want %v", c.Name, fillIn, wantFill)
		}
	}
}

func TestClaimReservation(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	until := now.Add(time.Minute)
	own := func(d time.Duration) *store.Reservation {
		return &store.Reservation{Token: "t", Count: 2, Until: now.Add(d)}
	}
	other := func(d time.Duration) *store.Reservation {
		return &store.Reservation{Token: "x", Count: 2, Until: now.Add(d)}
	}
	for _, c := range []struct {
		name                        string
		res                         *store.Reservation
		token                       string
		need, taken                 int
		heldBack, contended, fillIn bool
		wantRes                     *store.Reservation
		wantChanged                 bool
		wantReport                  *store.Reservation
	}{
		{name: "nothing lacking, no reservation", token: "t", need: 2, taken: 2},
		{name: "the caller reserves what the pool lacks", token: "t", need: 3, taken: 1,
			wantRes: &store.Reservation{Token: "t", Count: 2, Until: until}, wantChanged: true, wantReport: &store.Reservation{Token: "t", Count: 2, Until: until}},
		{name: "without a token nothing is reserved", need: 3, taken: 1},
		{name: "another caller's live reservation stands", res: other(time.Second), token: "t", need: 3, taken: 1,
			wantRes: other(time.Second), wantReport: other(time.Second)},
		{name: "an expired one is replaced", res: other(-time.Second), token: "t", need: 3, taken: 0,
			wantRes: &store.Reservation{Token: "t", Count: 3, Until: until}, wantChanged: true, wantReport: &store.Reservation{Token: "t", Count: 3, Until: until}},
		{name: "an expired one goes when keys are taken", res: other(-time.Second), need: 1, taken: 1, wantChanged: true},
		{name: "an expired one goes with a UID fill-in", res: other(-time.Second), fillIn: true, wantChanged: true},
		{name: "an expired one stays when nothing changes", res: other(-time.Second), wantRes: other(-time.Second)},
		{name: "the caller's own goes when no longer needed", res: own(time.Second), token: "t", need: 1, taken: 1, wantChanged: true},
		{name: "held back: nothing changes", res: own(time.Second), token: "t", need: 3, heldBack: true, wantRes: own(time.Second), wantReport: own(time.Second)},
		{name: "contended: no new reservation", token: "t", need: 3, taken: 1, contended: true},
		{name: "contended: the caller's own live one stays", res: own(time.Second), token: "t", need: 3, taken: 1, contended: true,
			wantRes: own(time.Second), wantReport: own(time.Second)},
		{name: "contended: an expired one goes when keys were taken", res: own(-time.Second), token: "t", need: 3, taken: 1, contended: true, wantChanged: true},
		{name: "contended: an expired one stays when nothing was taken", res: other(-time.Second), need: 3, contended: true, wantRes: other(-time.Second)},
	} {
		p := store.PodState{Res: c.res}
		got := store.ClaimReservation(p, store.PodCall{Token: c.token, Now: now}, c.need, c.taken, c.heldBack, c.contended, c.fillIn, until)
		if !sameRes(got.Res, c.wantRes) || got.Changed != c.wantChanged || !sameRes(got.Report, c.wantReport) {
			t.Errorf("%s: got %+v (res %+v, report %+v), want res %+v changed %v report %+v", c.name, got, got.Res, got.Report, c.wantRes, c.wantChanged, c.wantReport)
		}
	}
}

func sameRes(a, b *store.Reservation) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Token == b.Token && a.Count == b.Count && a.Until.Equal(b.Until)
}
