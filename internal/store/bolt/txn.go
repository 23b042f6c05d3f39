package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// txn wraps one bbolt transaction with the store's buckets and the per-state
// counters, which it loads on first use and writes back with flushCounts.
type txn struct {
	tx *bbolt.Tx

	meta, keys, secrets, deposits, txs, pods, avail, cooling, bindings, audit, reserve, protect, chain *bbolt.Bucket

	counts       [numStates]int64
	countsLoaded bool
	countsDirty  bool
}

func newTxn(tx *bbolt.Tx) (*txn, error) {
	t := &txn{
		tx:       tx,
		meta:     tx.Bucket(bucketMeta),
		keys:     tx.Bucket(bucketKeys),
		secrets:  tx.Bucket(bucketSecrets),
		deposits: tx.Bucket(bucketDeposits),
		txs:      tx.Bucket(bucketTxs),
		pods:     tx.Bucket(bucketPods),
		avail:    tx.Bucket(bucketAvail),
		cooling:  tx.Bucket(bucketCooling),
		bindings: tx.Bucket(bucketBindings),
		audit:    tx.Bucket(bucketAudit),
		reserve:  tx.Bucket(bucketReserve),
		protect:  tx.Bucket(bucketProtect),
		chain:    tx.Bucket(bucketChain),
	}
	for _, b := range []*bbolt.Bucket{t.meta, t.keys, t.secrets, t.deposits, t.txs, t.pods, t.avail, t.cooling, t.bindings, t.audit, t.reserve, t.protect, t.chain} {
		if b == nil {
			return nil, fmt.Errorf("%w: bucket missing", errCorrupt)
		}
	}
	return t, nil
}

func (t *txn) loadCounts() error {
	if t.countsLoaded {
		return nil
	}
	v := t.meta.Get(metaCounts)
	if len(v) != 8*len(t.counts) {
		return fmt.Errorf("%w: counters of %d bytes", errCorrupt, len(v))
	}
	for i := range t.counts {
		t.counts[i] = int64(binary.BigEndian.Uint64(v[8*i:]))
	}
	t.countsLoaded = true
	return nil
}

// move counts one key leaving state from ("" for a new key) for state to.
func (t *txn) move(from, to store.State) error {
	if err := t.loadCounts(); err != nil {
		return err
	}
	if from != "" {
		t.counts[stateIndex(from)]--
	}
	t.counts[stateIndex(to)]++
	t.countsDirty = true
	return nil
}

func (t *txn) flushCounts() error {
	if !t.countsDirty {
		return nil
	}
	b := make([]byte, 8*len(t.counts))
	for i, n := range t.counts {
		if n < 0 {
			return fmt.Errorf("%w: counter of %s would be %d", errCorrupt, store.States[i], n)
		}
		binary.BigEndian.PutUint64(b[8*i:], uint64(n))
	}
	t.countsDirty = false
	return t.meta.Put(metaCounts, b)
}

// pkBytes returns a fresh copy of pk for use as a bbolt key (bbolt keeps
// key slices until commit).
func pkBytes(pk store.Pubkey) []byte { return append([]byte(nil), pk[:]...) }

func comparePK(a, b store.Pubkey) int { return bytes.Compare(a[:], b[:]) }

func (t *txn) getRecord(pk store.Pubkey) (record, bool, error) {
	v := t.keys.Get(pk[:])
	if v == nil {
		return record{}, false, nil
	}
	r, err := decodeRecord(v)
	if err != nil {
		return r, true, fmt.Errorf("key %s: %w", pk, err)
	}
	return r, true, nil
}

// mustRecord loads a key that an index or pod entry says exists in state want.
func (t *txn) mustRecord(pk store.Pubkey, want store.State) (record, error) {
	r, ok, err := t.getRecord(pk)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, fmt.Errorf("%w: key %s is indexed but has no record", errCorrupt, pk)
	}
	if r.state != want {
		return r, fmt.Errorf("%w: key %s is indexed as %s but is %s", errCorrupt, pk, want, r.state)
	}
	return r, nil
}

// podRecord loads a key that the pod's entry lists in state want.
func (t *txn) podRecord(pod string, pk store.Pubkey, want store.State) (record, error) {
	r, err := t.mustRecord(pk, want)
	if err == nil && r.pod != pod {
		err = fmt.Errorf("%w: key %s is listed under pod %s but its record says %q", errCorrupt, pk, pod, r.pod)
	}
	return r, err
}

func (t *txn) putRecord(pk store.Pubkey, r *record) error {
	return t.keys.Put(pkBytes(pk), r.encode())
}

// getDeposit and getTx return a key's deposit data and transaction, or nil.
func (t *txn) getDeposit(pk store.Pubkey) (*store.DepositData, error) {
	v := t.deposits.Get(pk[:])
	if v == nil {
		return nil, nil
	}
	d, err := decodeDeposit(v, nil)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", pk, err)
	}
	return d, nil
}

func (t *txn) getTx(pk store.Pubkey) (*store.DepositTx, error) {
	v := t.txs.Get(pk[:])
	if v == nil {
		return nil, nil
	}
	tx, err := decodeTx(v)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", pk, err)
	}
	return tx, nil
}

// getPod returns the pod's entry with its reservation, and whether it has
// an entry.
// getProtection reads a key's slashing-protection watermarks (nil: none).
func (t *txn) getProtection(pk store.Pubkey) (*store.Protection, error) {
	v := t.protect.Get(pk[:])
	if v == nil {
		return nil, nil
	}
	p, err := decodeProtection(v)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", pk, err)
	}
	return p, nil
}

// mergeProtection merges p into a key's stored watermarks.
func (t *txn) mergeProtection(pk store.Pubkey, p store.Protection) error {
	cur, err := t.getProtection(pk)
	if err != nil {
		return err
	}
	if cur != nil {
		p = cur.Merge(p)
	}
	if p.Empty() {
		return nil
	}
	return t.protect.Put(pkBytes(pk), encodeProtection(p))
}

func (t *txn) getPod(pod string) (podEntry, bool, error) {
	v := t.pods.Get([]byte(pod))
	if v == nil {
		return podEntry{}, false, nil
	}
	e, err := decodePodEntry(v)
	if err != nil {
		return e, true, fmt.Errorf("pod %s: %w", pod, err)
	}
	if rv := t.reserve.Get([]byte(pod)); rv != nil {
		if e.res, err = decodeReservation(rv); err != nil {
			return e, true, fmt.Errorf("pod %s: %w", pod, err)
		}
	}
	return e, true, nil
}

// putPod stores e (and its reservation, when changed), or deletes the
// pod's entry when it holds no keys and has no reservation.
func (t *txn) putPod(pod string, e *podEntry) error {
	if e.resDirty {
		var err error
		if e.res == nil {
			err = t.reserve.Delete([]byte(pod))
		} else {
			err = t.reserve.Put([]byte(pod), e.res.encode())
		}
		if err != nil {
			return err
		}
		e.resDirty = false
	}
	if e.size() == 0 && e.res == nil {
		return t.pods.Delete([]byte(pod))
	}
	slices.SortFunc(e.keys, comparePK)
	slices.SortFunc(e.pending, comparePK)
	return t.pods.Put([]byte(pod), e.encode())
}

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
// pending.
func (t *txn) fillInUID(pod string, e *podEntry, uid string) error {
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
	return nil
}

// assign moves a key from the pool (state from, index entry idx) to pod.
func (t *txn) assign(pk store.Pubkey, from store.State, idx *bbolt.Bucket, idxKey []byte, pod, uid string, now int64) error {
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

// claim runs Claim in t. With dryRun it changes nothing and reports through
// needWrite whether the real call would change something; res is then only
// valid when needWrite is false.
func (t *txn) claim(p *store.ClaimParams, dryRun bool) (res store.Claim, needWrite bool, err error) {
	e, _, err := t.getPod(p.Pod)
	if err != nil {
		return res, false, err
	}
	now := micros(p.Now)
	ps := e.state()
	pc := store.PodCall{UID: p.PodUID, Token: p.ReserveToken, Now: fromMicros(now), StrictUID: p.StrictUID}
	uid, fillIn, err := store.PodUID("claim for", p.Pod, ps, pc)
	if err != nil {
		return res, false, err
	}
	// Another caller's live reservation counts as keys in progress.
	reserved := 0
	if other := store.OtherReservation(ps, pc); other != nil {
		reserved = other.Count
	}

	// Pick the keys to take: available keys in index order, then expired
	// cooling-down keys. Pending keys intended for the pod count as held.
	// Index keys are copied: they are deleted below.
	// With p.RequireActive only keys ready for duties are taken (pick).
	var fromAvail, fromCooling [][]byte
	activating := 0
	need := p.Want - e.size() - reserved
	if need > 0 {
		c := t.avail.Cursor()
		for k, _ := c.First(); k != nil && len(fromAvail) < need; k, _ = c.Next() {
			ok, err := t.pick(p, k, availPubkey, &activating)
			if err != nil {
				return res, false, err
			}
			if ok {
				fromAvail = append(fromAvail, bytes.Clone(k))
			}
		}
		c = t.cooling.Cursor()
		for k, _ := c.First(); k != nil && len(fromAvail)+len(fromCooling) < need; k, _ = c.Next() {
			if len(k) < 8 || getSortable(k) > now {
				break
			}
			ok, err := t.pick(p, k, coolingPubkey, &activating)
			if err != nil {
				return res, false, err
			}
			if ok {
				fromCooling = append(fromCooling, bytes.Clone(k))
			}
		}
	}
	taken := len(fromAvail) + len(fromCooling)
	heldBack := p.AllOrNothing && taken < need
	activating = min(activating, max(0, need-taken))

	// The pod's reservation after the call (bbolt's claims are never
	// contended: transactions are serialized); activating keys count as
	// keys in progress.
	cr := store.ClaimReservation(ps, pc, need-activating, taken, heldBack, false, fillIn, fromMicros(micros(p.ReserveUntil)))
	resChanged, report := cr.Changed, cr.Report

	if heldBack || (taken == 0 && !fillIn && !resChanged) || dryRun {
		if dryRun && !heldBack && (taken > 0 || fillIn || resChanged) {
			return res, true, nil
		}
		if res, err = t.result(p.Pod, &e, p.Want, report); err != nil {
			return res, false, err
		}
		if res.Shortfall > 0 && heldBack {
			res.Available = taken
		}
		return res, false, t.activeResult(p, &res, activating)
	}

	if fillIn {
		if err := t.fillInUID(p.Pod, &e, uid); err != nil {
			return res, false, err
		}
	}
	for _, k := range fromAvail {
		pk, err := availPubkey(k)
		if err != nil {
			return res, false, err
		}
		if err := t.assign(pk, store.StateAvailable, t.avail, k, p.Pod, uid, now); err != nil {
			return res, false, err
		}
		e.keys = append(e.keys, pk)
	}
	for _, k := range fromCooling {
		_, pk, err := parseCoolingKey(k)
		if err != nil {
			return res, false, err
		}
		if err := t.assign(pk, store.StateCoolingDown, t.cooling, k, p.Pod, uid, now); err != nil {
			return res, false, err
		}
		e.keys = append(e.keys, pk)
	}
	e.uid = uid
	if resChanged {
		e.setRes(fromPublic(cr.Res))
	}
	if err := t.putPod(p.Pod, &e); err != nil {
		return res, false, err
	}
	if err := t.flushCounts(); err != nil {
		return res, false, err
	}
	if res, err = t.result(p.Pod, &e, p.Want, report); err != nil {
		return res, false, err
	}
	res.Recycled = taken
	res.Taken = slices.Clone(e.keys[len(e.keys)-taken:])
	slices.SortFunc(res.Taken, comparePK)
	return res, false, t.activeResult(p, &res, activating)
}

// addForPod inserts p.Keys: the first p.Want - (keys the pod counts as held)
// in state target for the pod, the rest in state spare without a pod. It
// applies the pod UID rules, fulfils the reservation named by
// p.ReserveToken, and returns the pod's entry afterwards with the live
// reservation left (nil for none).
func (t *txn) addForPod(op string, p *store.AddParams, target, spare store.State) (podEntry, *store.Reservation, error) {
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
		if err := t.fillInUID(p.Pod, &e, uid); err != nil {
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

// addAssigned runs AddAssigned in t.
func (t *txn) addAssigned(p *store.AddParams) (store.Claim, error) {
	e, live, err := t.addForPod("add keys for", p, store.StateAssigned, store.StateAvailable)
	if err != nil {
		return store.Claim{}, err
	}
	return t.result(p.Pod, &e, p.Want, live)
}

// addPending runs AddPending in t.
func (t *txn) addPending(p *store.AddParams) error {
	if p.Pod != "" {
		_, _, err := t.addForPod("add pending keys for", p, store.StatePendingDeposit, store.StatePendingDeposit)
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
		Time: fromMicros(now), Action: "release", Pod: p.Pod, PodUID: uid,
		Pubkeys: moved, Reason: p.Reason, Actor: actor,
	})
	return len(e.keys), err
}

// dropFromPod removes the assigned key pk from the pod's set.
func (t *txn) dropFromPod(pod string, pk store.Pubkey) error {
	e, ok, err := t.getPod(pod)
	if err != nil {
		return err
	}
	i := slices.Index(e.keys, pk)
	if !ok || i < 0 {
		return fmt.Errorf("%w: assigned key %s is not in the set of pod %s", errCorrupt, pk, pod)
	}
	e.keys = slices.Delete(e.keys, i, i+1)
	return t.putPod(pod, &e)
}

// dropPending removes the pending key pk from the pod's entry and returns
// the entry, for the caller to change further and store.
func (t *txn) dropPending(pod string, pk store.Pubkey) (podEntry, error) {
	e, ok, err := t.getPod(pod)
	if err != nil {
		return e, err
	}
	i := slices.Index(e.pending, pk)
	if !ok || i < 0 {
		return e, fmt.Errorf("%w: pending key %s intended for pod %s is not in its entry", errCorrupt, pk, pod)
	}
	e.pending = slices.Delete(e.pending, i, i+1)
	return e, nil
}

// appendAudit stores e under the next Seq (one more than the last stored).
func (t *txn) appendAudit(e *store.AuditEvent) error {
	seq := uint64(1)
	if k, _ := t.audit.Cursor().Last(); k != nil {
		if len(k) != 8 {
			return fmt.Errorf("%w: audit key of %d bytes", errCorrupt, len(k))
		}
		last := binary.BigEndian.Uint64(k)
		if last == math.MaxUint64 {
			return fmt.Errorf("audit trail is full (Seq %d)", last)
		}
		seq = last + 1
	}
	return t.audit.Put(seqKey(seq), encodeAudit(e))
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

// recoverDeposit runs RecoverDeposit in t.
func (t *txn) recoverDeposit(pk store.Pubkey, block uint64, reason string, now int64, actor string) (store.Key, error) {
	r, ok, err := t.getRecord(pk)
	if err != nil {
		return store.Key{}, err
	}
	if !ok {
		return store.Key{}, fmt.Errorf("recover deposit of key %s: %w", pk, store.ErrNotFound)
	}
	if r.state != store.StateDepositFailed {
		return store.Key{}, fmt.Errorf("recover deposit of key %s: it is %s, not %s: %w", pk, r.state, store.StateDepositFailed, store.ErrWrongState)
	}
	dtx, err := t.getTx(pk)
	if err != nil {
		return store.Key{}, err
	}
	if dtx == nil {
		dtx = &store.DepositTx{RecordedAt: fromMicros(now)}
	}
	dtx.Block = block
	if err := t.txs.Put(pkBytes(pk), encodeTx(dtx)); err != nil {
		return store.Key{}, err
	}
	r.state, r.retiredReason, r.since = store.StateAvailable, "", now
	if err := t.avail.Put(availKey(pk, &r), nil); err != nil {
		return store.Key{}, err
	}
	if err := t.putRecord(pk, &r); err != nil {
		return store.Key{}, err
	}
	if err := t.move(store.StateDepositFailed, store.StateAvailable); err != nil {
		return store.Key{}, err
	}
	if err := t.flushCounts(); err != nil {
		return store.Key{}, err
	}
	if err := t.appendAudit(&store.AuditEvent{
		Time: fromMicros(now), Action: "deposit-recovered", Pubkeys: []store.Pubkey{pk}, Reason: reason, Actor: actor,
	}); err != nil {
		return store.Key{}, err
	}
	k := r.key(pk)
	k.DepositTx = dtx
	k.Deposit, err = t.getDeposit(pk)
	return k, err
}

// quarantine runs Quarantine in t.
func (t *txn) quarantine(pks []store.Pubkey, reason string, now int64, actor string) (int, error) {
	byPod := map[string][]store.Pubkey{}
	uids := map[string]string{}
	var pods []string
	for _, pk := range slices.Compact(slices.SortedFunc(slices.Values(pks), comparePK)) {
		r, ok, err := t.getRecord(pk)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		from := r.state
		switch from {
		case store.StateAvailable:
			if err := t.avail.Delete(availKey(pk, &r)); err != nil {
				return 0, err
			}
		case store.StateCoolingDown:
			if err := t.cooling.Delete(coolingKey(pk, r.coolingUntil)); err != nil {
				return 0, err
			}
		case store.StateAssigned:
			if err := t.dropFromPod(r.pod, pk); err != nil {
				return 0, err
			}
		default:
			continue
		}
		if _, seen := byPod[r.pod]; !seen {
			pods = append(pods, r.pod)
			uids[r.pod] = r.podUID
		}
		byPod[r.pod] = append(byPod[r.pod], pk)
		r.state, r.retiredReason, r.since = store.StateStillSigning, reason, now
		r.pod, r.podUID, r.coolingUntil = "", "", noTime
		if err := t.putRecord(pk, &r); err != nil {
			return 0, err
		}
		if err := t.move(from, store.StateStillSigning); err != nil {
			return 0, err
		}
	}
	if err := t.flushCounts(); err != nil {
		return 0, err
	}
	n := 0
	slices.Sort(pods)
	for _, pod := range pods {
		n += len(byPod[pod])
		if err := t.appendAudit(&store.AuditEvent{
			Time: fromMicros(now), Action: "still-signing", Pod: pod, PodUID: uids[pod], Pubkeys: byPod[pod], Reason: reason, Actor: actor,
		}); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// coolDown runs CoolDown in t.
func (t *txn) coolDown(pks []store.Pubkey, until, now int64, actor string) (int, error) {
	n := 0
	var quiet []store.Pubkey
	for _, pk := range slices.Compact(slices.SortedFunc(slices.Values(pks), comparePK)) {
		r, ok, err := t.getRecord(pk)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		switch r.state {
		case store.StateCoolingDown:
			if err := t.cooling.Delete(coolingKey(pk, r.coolingUntil)); err != nil {
				return 0, err
			}
		case store.StateStillSigning:
			if err := t.move(store.StateStillSigning, store.StateCoolingDown); err != nil {
				return 0, err
			}
			r.state, r.retiredReason, r.since = store.StateCoolingDown, "", now
			quiet = append(quiet, pk)
		default:
			continue
		}
		r.coolingUntil = until
		if err := t.putRecord(pk, &r); err != nil {
			return 0, err
		}
		if err := t.cooling.Put(coolingKey(pk, until), nil); err != nil {
			return 0, err
		}
		n++
	}
	if err := t.flushCounts(); err != nil {
		return 0, err
	}
	if len(quiet) > 0 {
		if err := t.appendAudit(&store.AuditEvent{
			Time: fromMicros(now), Action: "quiet", Pubkeys: quiet, Actor: actor,
			Reason: fmt.Sprintf("quiet long enough: cooling down until %s", fromMicros(until).UTC().Format(time.RFC3339)),
		}); err != nil {
			return 0, err
		}
	}
	return n, nil
}
