package store

import (
	"fmt"
	"time"
)

// The pod rules: which UID a pod's keys carry, when a caller's UID is
// refused, and what happens to the pod's mint reservation. Both backends
// call these functions inside their transactions (with the pod locked), so
// the rules of Claim, AddAssigned, AddPending and Release are written once;
// PostgreSQL's pkm_claim function implements Claim's in SQL, and the
// conformance suite runs one table of cases (storetest.PodRuleCases)
// against these functions and against every backend.

// PodState is what a transaction knows about a pod under its lock.
type PodState struct {
	// Held counts the pod's assigned keys and the pending-deposit keys
	// intended for it.
	Held int
	// UID is the UID the pod's keys and reservation are recorded under
	// (may be empty; meaningless while the pod holds nothing).
	UID string
	// Res is the pod's mint reservation, live or expired; nil for none.
	Res *Reservation
}

// PodCall is what a call brings to the pod rules.
type PodCall struct {
	// UID is the caller's pod UID ("" when unknown).
	UID string
	// Token is the caller's reservation token ("" for none).
	Token string
	Now   time.Time
	// StrictUID: keys recorded without a UID are never adopted by a caller
	// with one, because they may be held by an earlier pod of that name
	// (the pod watcher decides); such a call fails with
	// ErrPodUIDMismatch. Servers set it while the pod watcher or token
	// authentication is on.
	StrictUID bool
	// ExactUID (Release): release only if the pod's keys are held under
	// exactly UID, also when UID is empty (only keys recorded without a
	// UID); else ErrPodUIDMismatch.
	ExactUID bool
}

// Live reports whether r holds other callers back at now.
func (r *Reservation) Live(now time.Time) bool { return r != nil && now.Before(r.Until) }

// OwnedBy reports whether r is held under the non-empty token.
func (r *Reservation) OwnedBy(token string) bool { return r != nil && token != "" && r.Token == token }

// Holds reports whether the pod counts as holding keys for the UID rules of
// call c: it has keys, or a reservation that counts as its keys (live, or
// the caller's own).
func (p PodState) Holds(c PodCall) bool {
	return p.Held > 0 || p.Res.Live(c.Now) || p.Res.OwnedBy(c.Token)
}

// RecordedUID is the UID the pod's keys are held under for call c ("" when
// it holds none, or they were recorded without one).
func (p PodState) RecordedUID(c PodCall) string {
	if !p.Holds(c) {
		return ""
	}
	return p.UID
}

// PodUID applies the pod UID rule of Claim, AddAssigned, AddPending and
// Release (op names the call in the error): it fails with ErrPodUIDMismatch
// when the pod's keys are held under another non-empty UID than a
// non-empty c.UID, or (c.StrictUID) without a UID while c.UID is not empty,
// or (c.ExactUID) under any other UID than c.UID. Otherwise it returns the
// UID the pod's keys carry after the call (the recorded one, else c.UID)
// and whether the keys it already holds must be rewritten to it (an empty
// UID filled in).
func PodUID(op, pod string, p PodState, c PodCall) (uid string, fillIn bool, err error) {
	holds := p.Holds(c)
	rec := ""
	if holds {
		rec = p.UID
	}
	switch {
	case c.ExactUID && holds && rec != c.UID:
		return "", false, fmt.Errorf("%s pod %s: its keys are held under pod UID %q, not %q: %w", op, pod, rec, c.UID, ErrPodUIDMismatch)
	case c.UID != "" && rec != "" && rec != c.UID:
		return "", false, fmt.Errorf("%s pod %s: its keys are held under pod UID %s, not %s: %w", op, pod, rec, c.UID, ErrPodUIDMismatch)
	case c.StrictUID && c.UID != "" && holds && rec == "":
		return "", false, fmt.Errorf("%s pod %s: its keys were recorded without a pod UID, so an earlier pod of that name may hold them; "+
			"the pod watcher decides (the caller is pod UID %s): %w", op, pod, c.UID, ErrPodUIDMismatch)
	}
	if rec != "" {
		return rec, false, nil
	}
	return c.UID, c.UID != "" && holds, nil
}

// OtherReservation returns the pod's live reservation when another caller
// holds it (it counts as keys in progress), else nil.
func OtherReservation(p PodState, c PodCall) *Reservation {
	if p.Res.Live(c.Now) && !p.Res.OwnedBy(c.Token) {
		return p.Res
	}
	return nil
}

// ClaimResult is what a claim does to the pod's reservation.
type ClaimResult struct {
	// Res is the pod's reservation after the call (nil for none), Changed
	// whether it differs from the one before.
	Res     *Reservation
	Changed bool
	// Report is the live reservation Claim reports: another caller's, or
	// the caller's new one.
	Report *Reservation
}

// ClaimReservation decides the pod's reservation after a claim that needed
// need keys from the pool and took taken of them. heldBack: AllOrNothing
// held the claim back; contended: the pool's claimable keys were locked by
// other transactions when the claim gave up (it claims again, so it
// reserves nothing); fillIn: the claim filled in the pod's UID; until: the
// expiry of a reservation the caller takes. The caller reserves what the
// pod still lacks unless another caller's live reservation stands; an
// expired reservation, or the caller's own that is no longer needed, goes
// when the call changes the pod.
func ClaimReservation(p PodState, c PodCall, need, taken int, heldBack, contended, fillIn bool, until time.Time) ClaimResult {
	other := OtherReservation(p, c)
	out := ClaimResult{Res: p.Res}
	switch lack := need - taken; {
	case heldBack || other != nil:
	case contended:
		// The pool may still cover the rest: no new reservation (the
		// caller claims again); the caller's own live one stays for that
		// claim to settle, an expired one goes when the pod changed.
		if p.Res != nil && !p.Res.Live(c.Now) && (taken > 0 || fillIn) {
			out.Res, out.Changed = nil, true
		}
	case c.Token != "" && lack > 0:
		out.Res, out.Changed = &Reservation{Token: c.Token, Count: lack, Until: until}, true
	case p.Res != nil && (c.Token != "" || taken > 0 || fillIn):
		out.Res, out.Changed = nil, true
	}
	out.Report = other
	if other == nil && out.Res.Live(c.Now) {
		out.Report = out.Res
	}
	return out
}
