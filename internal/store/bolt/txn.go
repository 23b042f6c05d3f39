package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// txn wraps one bbolt transaction with the store's buckets and the per-state
// counters, which it loads on first use and writes back with flushCounts.
type txn struct {
	tx                                                  *bbolt.Tx
	meta, keys, secrets, deposits, pods, avail, cooling *bbolt.Bucket

	counts       [5]int64
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
		pods:     tx.Bucket(bucketPods),
		avail:    tx.Bucket(bucketAvail),
		cooling:  tx.Bucket(bucketCooling),
	}
	if t.meta == nil || t.keys == nil || t.secrets == nil || t.deposits == nil || t.pods == nil || t.avail == nil || t.cooling == nil {
		return nil, fmt.Errorf("%w: bucket missing", errCorrupt)
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

func (t *txn) putRecord(pk store.Pubkey, r *record) error {
	return t.keys.Put(pkBytes(pk), r.encode())
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
	return e, true, nil
}

// putPod stores e, or deletes the pod's entry when it holds no keys.
func (t *txn) putPod(pod string, e *podEntry) error {
	if len(e.keys) == 0 {
		return t.pods.Delete([]byte(pod))
	}
	slices.SortFunc(e.keys, func(a, b store.Pubkey) int { return bytes.Compare(a[:], b[:]) })
	return t.pods.Put([]byte(pod), e.encode())
}

// podSet returns the pod's keys with their sealed secrets, in pubkey order.
func (t *txn) podSet(e *podEntry) ([]store.Key, error) {
	out := make([]store.Key, 0, len(e.keys))
	for _, pk := range e.keys {
		r, err := t.mustRecord(pk, store.StateAssigned)
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

// checkUID applies the pod UID rule shared by Claim, AddAssigned and Release.
func checkUID(op, pod string, e *podEntry, uid string) error {
	if uid != "" && e.uid != "" && uid != e.uid && len(e.keys) > 0 {
		return fmt.Errorf("%s pod %s: its keys are held under pod UID %s, not %s: %w", op, pod, e.uid, uid, store.ErrPodUIDMismatch)
	}
	return nil
}

// adoptUID returns the UID the pod's keys carry after the call and whether
// its existing keys must be rewritten to fill in an empty UID.
func adoptUID(e *podEntry, uid string) (string, bool) {
	if e.uid != "" {
		return e.uid, false
	}
	return uid, uid != "" && len(e.keys) > 0
}

// fillInUID rewrites the pod UID of the pod's existing keys.
func (t *txn) fillInUID(e *podEntry, uid string) error {
	for _, pk := range e.keys {
		r, err := t.mustRecord(pk, store.StateAssigned)
		if err != nil {
			return err
		}
		r.podUID = uid
		if err := t.putRecord(pk, &r); err != nil {
			return err
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

// insert stores a new key in state (available, pending-deposit or assigned to
// pod under uid).
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
	if state == store.StateAssigned {
		r.pod, r.podUID, r.lastPod = pod, uid, pod
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
	if err := checkUID("claim for", p.Pod, &e, p.PodUID); err != nil {
		return res, false, err
	}
	uid, fillIn := adoptUID(&e, p.PodUID)
	now := micros(p.Now)

	// Pick the keys to take: available keys in index order, then expired
	// cooling-down keys. Index keys are copied: they are deleted below.
	var fromAvail, fromCooling [][]byte
	need := p.Want - len(e.keys)
	if need > 0 {
		c := t.avail.Cursor()
		for k, _ := c.First(); k != nil && len(fromAvail) < need; k, _ = c.Next() {
			fromAvail = append(fromAvail, bytes.Clone(k))
		}
		c = t.cooling.Cursor()
		for k, _ := c.First(); k != nil && len(fromAvail)+len(fromCooling) < need; k, _ = c.Next() {
			if len(k) < 8 || getSortable(k) > now {
				break
			}
			fromCooling = append(fromCooling, bytes.Clone(k))
		}
	}
	taken := len(fromAvail) + len(fromCooling)
	heldBack := p.AllOrNothing && taken < need
	if heldBack || (taken == 0 && !fillIn) || dryRun {
		if dryRun && !heldBack && (taken > 0 || fillIn) {
			return res, true, nil
		}
		res.Keys, err = t.podSet(&e)
		if err != nil {
			return res, false, err
		}
		res.Shortfall = max(0, p.Want-len(e.keys))
		if res.Shortfall > 0 && heldBack {
			res.Available = taken
		}
		return res, false, nil
	}

	if fillIn {
		if err := t.fillInUID(&e, uid); err != nil {
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
	if err := t.putPod(p.Pod, &e); err != nil {
		return res, false, err
	}
	if err := t.flushCounts(); err != nil {
		return res, false, err
	}
	res.Keys, err = t.podSet(&e)
	if err != nil {
		return res, false, err
	}
	res.Recycled = taken
	res.Shortfall = max(0, p.Want-len(e.keys))
	return res, false, nil
}

// addAssigned runs AddAssigned in t.
func (t *txn) addAssigned(p *store.AddParams) (store.Claim, error) {
	var res store.Claim
	if err := t.checkAbsent(p.Keys); err != nil {
		return res, err
	}
	e, _, err := t.getPod(p.Pod)
	if err != nil {
		return res, err
	}
	if err := checkUID("add keys for", p.Pod, &e, p.PodUID); err != nil {
		return res, err
	}
	uid, fillIn := adoptUID(&e, p.PodUID)
	if fillIn {
		if err := t.fillInUID(&e, uid); err != nil {
			return res, err
		}
	}
	now := micros(p.Now)
	lack := p.Want - len(e.keys)
	for i := range p.Keys {
		state := store.StateAvailable
		if i < lack {
			state = store.StateAssigned
			e.keys = append(e.keys, p.Keys[i].Pubkey)
		}
		if err := t.insert(&p.Keys[i], state, now, p.Pod, uid); err != nil {
			return res, err
		}
	}
	if fillIn || lack > 0 {
		e.uid = uid
		if err := t.putPod(p.Pod, &e); err != nil {
			return res, err
		}
	}
	if err := t.flushCounts(); err != nil {
		return res, err
	}
	res.Keys, err = t.podSet(&e)
	if err != nil {
		return res, err
	}
	res.Shortfall = max(0, p.Want-len(e.keys))
	return res, nil
}

// release runs Release in t. With dryRun it only reports through needWrite
// whether the pod holds keys to release.
func (t *txn) release(pod, podUID string, until, now int64, dryRun bool) (n int, needWrite bool, err error) {
	e, ok, err := t.getPod(pod)
	if err != nil || !ok {
		return 0, false, err
	}
	if err := checkUID("release", pod, &e, podUID); err != nil {
		return 0, false, err
	}
	if dryRun {
		return 0, len(e.keys) > 0, nil
	}
	for _, pk := range e.keys {
		r, err := t.mustRecord(pk, store.StateAssigned)
		if err != nil {
			return 0, false, err
		}
		if r.pod != pod {
			return 0, false, fmt.Errorf("%w: key %s is listed under pod %s but held by %q", errCorrupt, pk, pod, r.pod)
		}
		r.state = store.StateCoolingDown
		r.coolingUntil = until
		r.releasedAt, r.since = now, now
		r.lastPod = pod
		r.pod, r.podUID = "", ""
		if err := t.putRecord(pk, &r); err != nil {
			return 0, false, err
		}
		if err := t.cooling.Put(coolingKey(pk, until), nil); err != nil {
			return 0, false, err
		}
		if err := t.move(store.StateAssigned, store.StateCoolingDown); err != nil {
			return 0, false, err
		}
	}
	if err := t.pods.Delete([]byte(pod)); err != nil {
		return 0, false, err
	}
	if err := t.flushCounts(); err != nil {
		return 0, false, err
	}
	return len(e.keys), false, nil
}

// retire runs Retire in t.
func (t *txn) retire(pk store.Pubkey, reason string, now int64) error {
	r, ok, err := t.getRecord(pk)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("retire key %s: %w", pk, store.ErrNotFound)
	}
	switch r.state {
	case store.StateRetired:
		return nil
	case store.StateAvailable:
		err = t.avail.Delete(availKey(pk, &r))
	case store.StateCoolingDown:
		err = t.cooling.Delete(coolingKey(pk, r.coolingUntil))
	case store.StateAssigned:
		err = t.dropFromPod(r.pod, pk)
	}
	if err != nil {
		return err
	}
	from := r.state
	r.state = store.StateRetired
	r.retiredReason = reason
	r.since = now
	r.pod, r.podUID = "", ""
	r.coolingUntil = noTime
	if err := t.putRecord(pk, &r); err != nil {
		return err
	}
	if err := t.move(from, store.StateRetired); err != nil {
		return err
	}
	return t.flushCounts()
}

// dropFromPod removes pk from the pod's set.
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

// sweep runs Sweep in t. With dryRun it only reports through needWrite
// whether some key is due.
func (t *txn) sweep(now int64, dryRun bool) (n int, needWrite bool, err error) {
	var due [][]byte
	c := t.cooling.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) < 8 || getSortable(k) > now {
			break
		}
		if dryRun {
			return 0, true, nil
		}
		due = append(due, bytes.Clone(k))
	}
	for _, k := range due {
		_, pk, err := parseCoolingKey(k)
		if err != nil {
			return 0, false, err
		}
		r, err := t.mustRecord(pk, store.StateCoolingDown)
		if err != nil {
			return 0, false, err
		}
		if err := t.cooling.Delete(k); err != nil {
			return 0, false, err
		}
		r.state = store.StateAvailable
		r.since = now
		r.coolingUntil = noTime
		if err := t.putRecord(pk, &r); err != nil {
			return 0, false, err
		}
		if err := t.avail.Put(availKey(pk, &r), nil); err != nil {
			return 0, false, err
		}
		if err := t.move(store.StateCoolingDown, store.StateAvailable); err != nil {
			return 0, false, err
		}
	}
	if err := t.flushCounts(); err != nil {
		return 0, false, err
	}
	return len(due), false, nil
}
