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
	tx *bbolt.Tx

	meta, keys, secrets, deposits, txs, pods, bindings, audit, reserve, protect, chain, active *bbolt.Bucket
	// avail and cooling keep the active index with them (active.go).
	avail, cooling *poolBucket

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
		bindings: tx.Bucket(bucketBindings),
		audit:    tx.Bucket(bucketAudit),
		reserve:  tx.Bucket(bucketReserve),
		protect:  tx.Bucket(bucketProtect),
		chain:    tx.Bucket(bucketChain),
		active:   tx.Bucket(bucketActive),
	}
	t.avail = &poolBucket{Bucket: tx.Bucket(bucketAvail), t: t, pool: poolAvail}
	t.cooling = &poolBucket{Bucket: tx.Bucket(bucketCooling), t: t, pool: poolCooling}
	for _, b := range []*bbolt.Bucket{t.meta, t.keys, t.secrets, t.deposits, t.txs, t.pods, t.avail.Bucket, t.cooling.Bucket, t.bindings, t.audit, t.reserve, t.protect, t.chain, t.active} {
		if b == nil {
			return nil, fmt.Errorf("%w: bucket missing", errCorrupt)
		}
	}
	// The audit trail only grows at its end (appendAudit): a full page
	// split at the default 50% would stay half empty for good.
	t.audit.FillPercent = 1.0
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
