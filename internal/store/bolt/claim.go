package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// podSet returns the pod's assigned keys with their sealed secrets, in
// pubkey order.
func (t *txn) podSet(pod string, e *podEntry) ([]store.Key, error) {
	out := make([]store.Key, 0, len(e.keys))
	for _, pk := range e.keys {
		r, err := t.podRecord(pod, pk, store.StateAssigned)
		if err != nil {
			return nil, err
		}
		k := r.key(pk)
		sealed := t.secrets.Get(pk[:])
		if sealed == nil {
			return nil, fmt.Errorf("%w: key %s has no sealed secret", errCorrupt, pk)
		}
		k.SealedSecret = bytes.Clone(sealed)
		out = append(out, k)
	}
	return out, nil
}

// pendingSet returns the pending keys intended for the pod, in pubkey order.
func (t *txn) pendingSet(pod string, e *podEntry) ([]store.Key, error) {
	if len(e.pending) == 0 {
		return nil, nil
	}
	out := make([]store.Key, 0, len(e.pending))
	for _, pk := range e.pending {
		r, err := t.podRecord(pod, pk, store.StatePendingDeposit)
		if err != nil {
			return nil, err
		}
		out = append(out, r.key(pk))
	}
	return out, nil
}

// result fills the pod's part of a Claim: Keys, Pending, Reservation (the
// live reservation res, or none when nil) and Shortfall.
func (t *txn) result(pod string, e *podEntry, want int, res *store.Reservation) (c store.Claim, err error) {
	if c.Keys, err = t.podSet(pod, e); err != nil {
		return c, err
	}
	if c.Pending, err = t.pendingSet(pod, e); err != nil {
		return c, err
	}
	reserved := 0
	if res != nil {
		r := *res
		c.Reservation = &r
		reserved = res.Count
	}
	c.Shortfall = max(0, want-e.size()-reserved)
	return c, nil
}

// state is the pod as the pod rules see it (store.PodState).
func (e *podEntry) state() store.PodState {
	return store.PodState{Held: e.size(), UID: e.uid, Res: e.res.public()}
}

// public is the reservation as the store package has it (nil for none).
func (r *reservation) public() *store.Reservation {
	if r == nil {
		return nil
	}
	return &store.Reservation{Token: r.token, Count: r.count, Until: fromMicros(r.until)}
}

// fromPublic is the inverse of public.
func fromPublic(r *store.Reservation) *reservation {
	if r == nil {
		return nil
	}
	return &reservation{token: r.Token, count: r.Count, until: micros(r.Until)}
}

// fillInUID rewrites the pod UID of the pod's existing keys, assigned and
// pending, and records it in the audit trail (store.UIDAdoptedEvent).
func (t *txn) fillInUID(pod string, e *podEntry, uid string, now int64, reason, actor string) error {
	for _, l := range []struct {
		keys  []store.Pubkey
		state store.State
	}{{e.keys, store.StateAssigned}, {e.pending, store.StatePendingDeposit}} {
		for _, pk := range l.keys {
			r, err := t.podRecord(pod, pk, l.state)
			if err != nil {
				return err
			}
			r.podUID = uid
			if err := t.putRecord(pk, &r); err != nil {
				return err
			}
		}
	}
	pks := slices.Concat(e.keys, e.pending)
	slices.SortFunc(pks, comparePK)
	ev := store.UIDAdoptedEvent(fromMicros(now), pod, uid, pks, reason, actor)
	return t.appendAudit(&ev)
}

// assign moves a key from the pool (state from, index entry idx) to pod.
func (t *txn) assign(pk store.Pubkey, from store.State, idx *poolBucket, idxKey []byte, pod, uid string, now int64) error {
	r, err := t.mustRecord(pk, from)
	if err != nil {
		return err
	}
	if err := idx.Delete(idxKey); err != nil {
		return err
	}
	r.state = store.StateAssigned
	r.pod, r.podUID, r.lastPod = pod, uid, pod
	r.since = now
	r.coolingUntil = noTime
	if err := t.putRecord(pk, &r); err != nil {
		return err
	}
	return t.move(from, store.StateAssigned)
}

// Claim gives a pod its keys; see store.Store. A pod that already holds
// enough keys, or asks an empty pool, is answered from a read-only
// transaction without a commit.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (store.Claim, error) {
	var (
		res   store.Claim
		write bool
	)
	actor := store.ActorFrom(ctx)
	err := s.view(func(t *txn) (err error) {
		res, write, err = t.claim(&p, "", false)
		return err
	})
	if err == nil && write {
		err = s.batch(func(t *txn) (err error) {
			res, _, err = t.claim(&p, actor, true)
			return err
		})
	}
	if err != nil {
		return store.Claim{}, s.wrap(err)
	}
	return res, nil
}

// claim runs Claim in t: it reads the facts (readClaim), decides
// (planClaim) and, when the plan changes the store, applies it
// (applyClaim) if canWrite, else only reports that it would write (res is
// then not set); a plan that changes nothing is answered from what t
// holds. actor is the audit actor of what it takes.
func (t *txn) claim(p *store.ClaimParams, actor string, canWrite bool) (res store.Claim, write bool, err error) {
	c, err := t.readClaim(p)
	if err != nil {
		return res, false, err
	}
	pl, err := planClaim(p, c.facts)
	switch {
	case err != nil:
		return res, false, err
	case pl.write && !canWrite:
		return res, true, nil
	case pl.write:
		res, err = t.applyClaim(p, &c, &pl, actor)
		return res, true, err
	}
	if res, err = t.result(p.Pod, &c.entry, p.Want, pl.res.Report); err != nil {
		return res, false, err
	}
	if res.Shortfall > 0 && pl.heldBack {
		res.Available = c.facts.found
	}
	return res, false, t.activeResult(p, &res, pl.activating)
}

// claimFacts is what a claim reads before it decides.
type claimFacts struct {
	// pod is the pod's entry as the pod rules see it.
	pod store.PodState
	// found counts the claimable pool keys found (at most claimNeed),
	// activating the pool keys passed over because their validators are
	// not active yet (p.RequireActive).
	found, activating int
}

// claimRead is what readClaim read: the facts, the pod's entry and the
// index entries of the pool keys found (copied: applyClaim deletes them).
type claimRead struct {
	facts                  claimFacts
	entry                  podEntry
	fromAvail, fromCooling [][]byte
}

// claimPlan is what a claim does.
type claimPlan struct {
	// uid is the pod's UID after the claim; fillIn: the claim records it
	// on keys held without one.
	uid    string
	fillIn bool
	// heldBack: AllOrNothing found too few keys, so the claim takes none.
	heldBack bool
	// activating is what the caller reports as keys in progress.
	activating int
	// res is the pod's reservation after the claim.
	res store.ClaimResult
	// write: the claim changes the store (it takes keys, fills in the
	// UID or changes the reservation).
	write bool
}

// podCall is the claim as the pod rules see it.
func podCall(p *store.ClaimParams) store.PodCall {
	return store.PodCall{UID: p.PodUID, Token: p.ReserveToken, Now: fromMicros(micros(p.Now)), StrictUID: p.StrictUID}
}

// claimNeed is how many pool keys a claim looks for: what the pod lacks
// after its own keys (assigned and pending) and another caller's live
// reservation, which counts as keys in progress.
func claimNeed(p *store.ClaimParams, pod store.PodState) int {
	reserved := 0
	if other := store.OtherReservation(pod, podCall(p)); other != nil {
		reserved = other.Count
	}
	return p.Want - pod.Held - reserved
}

// planClaim decides a claim from its facts alone (no store access): the
// pod's UID (store.PodUID, which may refuse the caller), whether
// AllOrNothing holds it back, the pod's reservation
// (store.ClaimReservation; activating keys count as keys in progress) and
// whether anything changes.
func planClaim(p *store.ClaimParams, f claimFacts) (claimPlan, error) {
	pc := podCall(p)
	uid, fillIn, err := store.PodUID("claim for", p.Pod, f.pod, pc)
	if err != nil {
		return claimPlan{}, err
	}
	need := claimNeed(p, f.pod)
	pl := claimPlan{uid: uid, fillIn: fillIn, heldBack: p.AllOrNothing && f.found < need}
	pl.activating = min(f.activating, max(0, need-f.found))
	// bbolt's claims are never contended: transactions are serialized.
	pl.res = store.ClaimReservation(f.pod, pc, need-pl.activating, f.found, pl.heldBack, false, fillIn, fromMicros(micros(p.ReserveUntil)))
	pl.write = !pl.heldBack && (f.found > 0 || fillIn || pl.res.Changed)
	return pl, nil
}

// readClaim reads a claim's facts: the pod's entry, and the pool keys it
// may take, as many as it lacks (claimNeed): available keys in index
// order, then expired cooling-down keys. With p.RequireActive only keys
// ready for duties are taken, read from their index (readActive).
func (t *txn) readClaim(p *store.ClaimParams) (c claimRead, err error) {
	if c.entry, _, err = t.getPod(p.Pod); err != nil {
		return c, err
	}
	c.facts.pod = c.entry.state()
	need := claimNeed(p, c.facts.pod)
	if need <= 0 {
		return c, nil
	}
	now := micros(p.Now)
	if p.RequireActive {
		t.readActive(need, now, &c)
		return c, nil
	}
	cur := t.avail.Cursor()
	for k, _ := cur.First(); k != nil && len(c.fromAvail) < need; k, _ = cur.Next() {
		c.fromAvail = append(c.fromAvail, bytes.Clone(k))
	}
	cur = t.cooling.Cursor()
	for k, _ := cur.First(); k != nil && len(c.fromAvail)+len(c.fromCooling) < need; k, _ = cur.Next() {
		if len(k) < 8 || getSortable(k) > now {
			break
		}
		c.fromCooling = append(c.fromCooling, bytes.Clone(k))
	}
	c.facts.found = len(c.fromAvail) + len(c.fromCooling)
	return c, nil
}

// applyClaim carries out a plan that writes: it fills in the UID, assigns
// the keys found to the pod and records the pod's entry and reservation.
func (t *txn) applyClaim(p *store.ClaimParams, c *claimRead, pl *claimPlan, actor string) (res store.Claim, err error) {
	now := micros(p.Now)
	e := &c.entry
	taken := make([]store.Pubkey, 0, c.facts.found)
	if pl.fillIn {
		if err := t.fillInUID(p.Pod, e, pl.uid, now, p.UIDReason, actor); err != nil {
			return res, err
		}
	}
	for _, k := range c.fromAvail {
		pk, err := availPubkey(k)
		if err != nil {
			return res, err
		}
		if err := t.assign(pk, store.StateAvailable, t.avail, k, p.Pod, pl.uid, now); err != nil {
			return res, err
		}
		taken = append(taken, pk)
	}
	for _, k := range c.fromCooling {
		_, pk, err := parseCoolingKey(k)
		if err != nil {
			return res, err
		}
		if err := t.assign(pk, store.StateCoolingDown, t.cooling, k, p.Pod, pl.uid, now); err != nil {
			return res, err
		}
		taken = append(taken, pk)
	}
	// putPod sorts e.keys: the keys taken are told apart here.
	e.keys = append(e.keys, taken...)
	slices.SortFunc(taken, comparePK)
	e.uid = pl.uid
	if pl.res.Changed {
		e.setRes(fromPublic(pl.res.Res))
	}
	if err := t.putPod(p.Pod, e); err != nil {
		return res, err
	}
	if err := t.flushCounts(); err != nil {
		return res, err
	}
	if res, err = t.result(p.Pod, e, p.Want, pl.res.Report); err != nil {
		return res, err
	}
	res.Recycled, res.Taken = len(taken), taken
	if len(taken) > 0 {
		if err := t.appendAudit(&store.AuditEvent{Time: fromMicros(now), Action: store.AuditAssign, Pod: p.Pod, PodUID: p.PodUID,
			Pubkeys: res.Taken, Reason: store.AssignReason(p.Want), Actor: actor}); err != nil {
			return res, err
		}
	}
	return res, t.activeResult(p, &res, pl.activating)
}

// insert stores a new key in state: available, assigned to pod under uid,
// or pending-deposit (intended for pod under uid when pod is not empty).
func (t *txn) insert(nk *store.NewKey, state store.State, now int64, pod, uid string) error {
	r := record{
		state:         state,
		origin:        nk.Origin,
		derivIndex:    nk.DerivationIndex,
		hasDerivIndex: nk.HasDerivationIndex,
		since:         now,
		coolingUntil:  noTime,
		releasedAt:    noTime,
		createdAt:     now,
	}
	switch state {
	case store.StateAssigned:
		r.pod, r.podUID, r.lastPod = pod, uid, pod
	case store.StatePendingDeposit:
		r.pod, r.podUID = pod, uid
	}
	if err := t.putRecord(nk.Pubkey, &r); err != nil {
		return err
	}
	if err := t.secrets.Put(pkBytes(nk.Pubkey), bytes.Clone(nk.SealedSecret)); err != nil {
		return err
	}
	if nk.Deposit != nil {
		if err := t.deposits.Put(pkBytes(nk.Pubkey), encodeDeposit(nk.Deposit)); err != nil {
			return err
		}
	}
	if state == store.StateAvailable {
		if err := t.avail.Put(availKey(nk.Pubkey, &r), nil); err != nil {
			return err
		}
	}
	return t.move("", state)
}

// checkAbsent fails with ErrKeyExists if any of keys is stored.
func (t *txn) checkAbsent(keys []store.NewKey) error {
	for i := range keys {
		if t.keys.Get(keys[i].Pubkey[:]) != nil {
			return fmt.Errorf("key %s: %w", keys[i].Pubkey, store.ErrKeyExists)
		}
	}
	return nil
}

// addForPod inserts p.Keys: the first p.Want - (keys the pod counts as held)
// in state target for the pod, the rest in state spare without a pod. It
// applies the pod UID rules, fulfils the reservation named by
// p.ReserveToken, and returns the pod's entry afterwards with the live
// reservation left (nil for none).
func (t *txn) addForPod(op string, p *store.AddParams, target, spare store.State, actor string) (podEntry, *store.Reservation, error) {
	if err := t.checkAbsent(p.Keys); err != nil {
		return podEntry{}, nil, err
	}
	e, _, err := t.getPod(p.Pod)
	if err != nil {
		return e, nil, err
	}
	now := micros(p.Now)
	tok := p.ReserveToken
	if tok != "" && !e.res.ownedBy(tok) {
		return e, nil, fmt.Errorf("%s pod %s: %w", op, p.Pod, store.ErrReservationLost)
	}
	ps := e.state()
	pc := store.PodCall{UID: p.PodUID, Token: tok, Now: fromMicros(now), StrictUID: p.StrictUID}
	uid, fillIn, err := store.PodUID(op, p.Pod, ps, pc)
	if err != nil {
		return e, nil, err
	}
	if fillIn {
		if err := t.fillInUID(p.Pod, &e, uid, now, "", actor); err != nil {
			return e, nil, err
		}
	}
	// The reservation these keys fulfil goes; another caller's live one
	// counts as held.
	var live *store.Reservation
	reserved := 0
	if tok != "" {
		e.setRes(nil)
	} else if live = store.OtherReservation(ps, pc); live != nil {
		reserved = live.Count
	}
	lack := p.Want - e.size() - reserved
	for i := range p.Keys {
		if i >= lack {
			if err := t.insert(&p.Keys[i], spare, now, "", ""); err != nil {
				return e, nil, err
			}
			continue
		}
		if err := t.insert(&p.Keys[i], target, now, p.Pod, uid); err != nil {
			return e, nil, err
		}
		if target == store.StateAssigned {
			e.keys = append(e.keys, p.Keys[i].Pubkey)
		} else {
			e.pending = append(e.pending, p.Keys[i].Pubkey)
		}
	}
	if fillIn || lack > 0 || e.resDirty {
		e.uid = uid
		if err := t.putPod(p.Pod, &e); err != nil {
			return e, nil, err
		}
	}
	return e, live, t.flushCounts()
}

// AddAssigned inserts minted keys for a pod; see store.Store.
func (s *Store) AddAssigned(ctx context.Context, p store.AddParams) (store.Claim, error) {
	var res store.Claim
	actor := store.ActorFrom(ctx)
	err := s.batch(func(t *txn) (err error) {
		if res, err = t.addAssigned(&p, actor); err != nil {
			return err
		}
		return t.recordMint(&p, actor)
	})
	if err != nil {
		return store.Claim{}, fmt.Errorf("add keys for pod %s: %w", p.Pod, s.wrap(err))
	}
	return res, nil
}

// addAssigned runs AddAssigned in t.
func (t *txn) addAssigned(p *store.AddParams, actor string) (store.Claim, error) {
	e, live, err := t.addForPod("add keys for", p, store.StateAssigned, store.StateAvailable, actor)
	if err != nil {
		return store.Claim{}, err
	}
	return t.result(p.Pod, &e, p.Want, live)
}

// AddPending inserts minted keys as pending-deposit, intended for a pod or
// spare; see store.Store.
func (s *Store) AddPending(ctx context.Context, p store.AddParams) error {
	actor := store.ActorFrom(ctx)
	err := s.batch(func(t *txn) error {
		if err := t.addPending(&p, actor); err != nil {
			return err
		}
		return t.recordMint(&p, actor)
	})
	if err != nil {
		return fmt.Errorf("add pending keys for pod %q: %w", p.Pod, s.wrap(err))
	}
	return nil
}

// recordMint appends p's AuditMint event, if it has one.
func (t *txn) recordMint(p *store.AddParams, actor string) error {
	e, ok := p.MintEvent(actor)
	if !ok {
		return nil
	}
	e.Time = fromMicros(micros(e.Time))
	return t.appendAudit(&e)
}

// addPending runs AddPending in t.
func (t *txn) addPending(p *store.AddParams, actor string) error {
	if p.Pod != "" {
		_, _, err := t.addForPod("add pending keys for", p, store.StatePendingDeposit, store.StatePendingDeposit, actor)
		return err
	}
	if err := t.checkAbsent(p.Keys); err != nil {
		return err
	}
	for i := range p.Keys {
		if err := t.insert(&p.Keys[i], store.StatePendingDeposit, micros(p.Now), "", ""); err != nil {
			return err
		}
	}
	return t.flushCounts()
}

// AddKeys inserts keys into the pool; see store.Store.
func (s *Store) AddKeys(ctx context.Context, keys []store.NewKey, state store.State, now time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.update(func(t *txn) error {
		if err := t.checkAbsent(keys); err != nil {
			return err
		}
		for i := range keys {
			if err := t.insert(&keys[i], state, micros(now), "", ""); err != nil {
				return err
			}
		}
		return t.flushCounts()
	})
	if err != nil {
		return fmt.Errorf("add keys: %w", s.wrap(err))
	}
	return nil
}

// Release returns a pod's keys to the pool after a cooling-down period,
// un-targets its pending keys and records the decision; see store.Store.
func (s *Store) Release(ctx context.Context, p store.ReleaseParams) (int, error) {
	actor := store.ActorFrom(ctx)
	var n int
	err := s.batch(func(t *txn) (err error) {
		n, err = t.release(&p, actor)
		return err
	})
	if err != nil {
		return 0, s.wrap(err)
	}
	return n, nil
}

// release runs Release in t and appends its audit event.
func (t *txn) release(p *store.ReleaseParams, actor string) (int, error) {
	e, ok, err := t.getPod(p.Pod)
	if err != nil {
		return 0, err
	}
	until, now := micros(p.Until), micros(p.Now)
	ps := e.state()
	pc := store.PodCall{UID: p.PodUID, Now: fromMicros(now), ExactUID: p.ExactUID}
	if _, _, err := store.PodUID("release", p.Pod, ps, pc); err != nil {
		return 0, err
	}
	uid := ps.RecordedUID(pc)
	for pk, pr := range p.Protection {
		if !slices.Contains(e.keys, pk) {
			return 0, fmt.Errorf("release pod %s: slashing protection for key %s, which the pod does not hold: %w", p.Pod, pk, store.ErrInvalidArgument)
		}
		if err := t.mergeProtection(pk, pr); err != nil {
			return 0, err
		}
	}
	for _, pk := range e.keys {
		r, err := t.podRecord(p.Pod, pk, store.StateAssigned)
		if err != nil {
			return 0, err
		}
		r.state = store.StateCoolingDown
		r.coolingUntil = until
		r.releasedAt, r.since = now, now
		r.lastPod = p.Pod
		r.pod, r.podUID = "", ""
		if err := t.putRecord(pk, &r); err != nil {
			return 0, err
		}
		if err := t.cooling.Put(coolingKey(pk, until), nil); err != nil {
			return 0, err
		}
		if err := t.move(store.StateAssigned, store.StateCoolingDown); err != nil {
			return 0, err
		}
	}
	for _, pk := range e.pending {
		r, err := t.podRecord(p.Pod, pk, store.StatePendingDeposit)
		if err != nil {
			return 0, err
		}
		r.lastPod = p.Pod
		r.pod, r.podUID = "", ""
		if err := t.putRecord(pk, &r); err != nil {
			return 0, err
		}
	}
	if ok {
		if err := t.pods.Delete([]byte(p.Pod)); err != nil {
			return 0, err
		}
		// The reservation goes with the entry.
		if err := t.reserve.Delete([]byte(p.Pod)); err != nil {
			return 0, err
		}
	}
	if err := t.flushCounts(); err != nil {
		return 0, err
	}
	if uid == "" {
		uid = p.PodUID
	}
	var moved []store.Pubkey
	if e.size() > 0 {
		moved = slices.Concat(e.keys, e.pending)
		slices.SortFunc(moved, comparePK)
	}
	err = t.appendAudit(&store.AuditEvent{
		Time: fromMicros(now), Action: store.AuditRelease, Pod: p.Pod, PodUID: uid,
		Pubkeys: moved, Reason: p.Reason, Actor: actor,
	})
	return len(e.keys), err
}

// RenewReservation moves the expiry of a pod's mint reservation; see
// store.Store.
func (s *Store) RenewReservation(ctx context.Context, pod, token string, until time.Time) error {
	u := micros(until)
	if err := s.batch(func(t *txn) error { return t.reservation(pod, token, &u) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// ReleaseReservation deletes a pod's mint reservation; see store.Store.
func (s *Store) ReleaseReservation(ctx context.Context, pod, token string) error {
	if err := s.batch(func(t *txn) error { return t.reservation(pod, token, nil) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// reservation runs RenewReservation (until not nil) or ReleaseReservation
// in t.
func (t *txn) reservation(pod, token string, until *int64) error {
	e, _, err := t.getPod(pod)
	if err != nil {
		return err
	}
	if !e.res.ownedBy(token) {
		return fmt.Errorf("mint reservation of pod %s: %w", pod, store.ErrReservationLost)
	}
	if until == nil {
		e.setRes(nil)
	} else {
		r := *e.res
		r.until = *until
		e.setRes(&r)
	}
	return t.putPod(pod, &e)
}
