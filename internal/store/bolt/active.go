package bolt

import (
	"bytes"
	"slices"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The RequireActive part of claim (store.ClaimParams.RequireActive): the
// rule is store.ReadyForDuties on each key's stored reading, kept as an
// index (the active bucket) so that a claim reads only the keys it may
// take, and counts only as many activating keys as it lacks, however many
// pool keys are not active yet (BenchmarkClaimRequireActiveWaiting).
//
// An entry of the active bucket is a pool key's entry in the avail or
// cooling bucket behind two bytes: its class (activeClass of its
// reading: ready or activating; a pool key in neither class, such as an
// active_exiting one, has no entry) and its pool bucket (poolAvail,
// poolCooling). So each class of each pool bucket is a run of the active
// bucket, in the pool bucket's order. The entries follow the pool buckets
// through poolBucket, the type of txn's avail and cooling (every Put and
// Delete of an entry changes the index with it), and the readings through
// reindexActive, which RecordValidators calls.

// The classes and pool buckets of active entries.
const (
	classReady      byte = 'r'
	classActivating byte = 'w'
	poolAvail       byte = 'a'
	poolCooling     byte = 'c'
)

// activeClass is the class of a pool key whose reading is v (nil: none):
// classReady when store.ReadyForDuties, classActivating when
// store.Activating, else 0 (no entry: it is never handed out under
// RequireActive).
func activeClass(v *store.ValidatorStatus) byte {
	switch {
	case store.ReadyForDuties(v):
		return classReady
	case store.Activating(v):
		return classActivating
	}
	return 0
}

// activeEntry is the active bucket's key of the pool entry idxKey.
func activeEntry(class, pool byte, idxKey []byte) []byte {
	return append([]byte{class, pool}, idxKey...)
}

// poolBucket is the avail or the cooling bucket, whose Put and Delete
// keep the active index in step.
type poolBucket struct {
	*bbolt.Bucket
	t    *txn
	pool byte // poolAvail or poolCooling
}

// pubkey is the pubkey of the entry k (both encodings end with it).
func (b *poolBucket) pubkey(k []byte) (store.Pubkey, error) {
	if b.pool == poolAvail {
		return availPubkey(k)
	}
	return coolingPubkey(k)
}

// Put adds the entry k (a fresh slice) to the bucket, and to the active
// index by the reading of its key.
func (b *poolBucket) Put(k, v []byte) error {
	if err := b.Bucket.Put(k, v); err != nil {
		return err
	}
	return b.index(k)
}

// index adds the bucket's entry k to the active index by its key's
// reading.
func (b *poolBucket) index(k []byte) error {
	pk, err := b.pubkey(k)
	if err != nil {
		return err
	}
	st, err := b.t.getStatus(pk)
	if err != nil {
		return err
	}
	if c := activeClass(st); c != 0 {
		return b.t.active.Put(activeEntry(c, b.pool, k), nil)
	}
	return nil
}

// Delete removes the entry k from the bucket and from the active index.
func (b *poolBucket) Delete(k []byte) error {
	if err := b.Bucket.Delete(k); err != nil {
		return err
	}
	for _, c := range []byte{classReady, classActivating} {
		if err := b.t.active.Delete(activeEntry(c, b.pool, k)); err != nil {
			return err
		}
	}
	return nil
}

// reindexActive moves the pool key pk (record r) to the class of its new
// reading cur from that of its previous one prev (nil: none); keys out of
// the pool have no entries.
func (t *txn) reindexActive(pk store.Pubkey, r *record, prev, cur *store.ValidatorStatus) error {
	var (
		pool   byte
		idxKey []byte
	)
	switch r.state {
	case store.StateAvailable:
		pool, idxKey = poolAvail, availKey(pk, r)
	case store.StateCoolingDown:
		pool, idxKey = poolCooling, coolingKey(pk, r.coolingUntil)
	default:
		return nil
	}
	from, to := activeClass(prev), activeClass(cur)
	if from == to {
		return nil
	}
	if from != 0 {
		if err := t.active.Delete(activeEntry(from, pool, idxKey)); err != nil {
			return err
		}
	}
	if to != 0 {
		return t.active.Put(activeEntry(to, pool, idxKey), nil)
	}
	return nil
}

// buildActive fills the empty active index from the pool buckets and the
// readings (the schema 7 migration).
func (t *txn) buildActive() error {
	for _, b := range []*poolBucket{t.avail, t.cooling} {
		keys, err := entryKeys(b.Bucket)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.index(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// activeRun walks the entries of one class and pool bucket in the pool
// bucket's order, passing fn each pool entry (valid until the next call)
// until fn returns false. Cooling-down entries stop at the first not due
// at now.
func (t *txn) activeRun(class, pool byte, now int64, fn func(idxKey []byte) bool) {
	pre := []byte{class, pool}
	cur := t.active.Cursor()
	for k, _ := cur.Seek(pre); k != nil && bytes.HasPrefix(k, pre); k, _ = cur.Next() {
		idxKey := k[len(pre):]
		if pool == poolCooling && (len(idxKey) < 8 || getSortable(idxKey) > now) {
			return
		}
		if !fn(idxKey) {
			return
		}
	}
}

// readActive is readClaim's pool part under p.RequireActive: the ready
// available keys, then the ready due cooling-down ones, as many as need;
// when they are fewer, the activating pool keys (available, due
// cooling-down) up to what is still lacking: the claim counts no more of
// them (planClaim).
func (t *txn) readActive(need int, now int64, c *claimRead) {
	t.activeRun(classReady, poolAvail, now, func(k []byte) bool {
		c.fromAvail = append(c.fromAvail, bytes.Clone(k))
		return len(c.fromAvail) < need
	})
	if len(c.fromAvail) < need {
		t.activeRun(classReady, poolCooling, now, func(k []byte) bool {
			c.fromCooling = append(c.fromCooling, bytes.Clone(k))
			return len(c.fromAvail)+len(c.fromCooling) < need
		})
	}
	c.facts.found = len(c.fromAvail) + len(c.fromCooling)
	lack := need - c.facts.found
	for _, pool := range []byte{poolAvail, poolCooling} {
		if c.facts.activating >= lack {
			break
		}
		t.activeRun(classActivating, pool, now, func([]byte) bool {
			c.facts.activating++
			return c.facts.activating < lack
		})
	}
}

func coolingPubkey(k []byte) (store.Pubkey, error) {
	_, pk, err := parseCoolingKey(k)
	return pk, err
}

// activeResult fills in res's Activating and Inactive (p.RequireActive
// only).
func (t *txn) activeResult(p *store.ClaimParams, res *store.Claim, activating int) error {
	if !p.RequireActive {
		return nil
	}
	res.Activating = activating
	for _, k := range res.Keys {
		v, err := t.getStatus(k.Pubkey)
		if err != nil {
			return err
		}
		if !store.ReadyForDuties(v) {
			res.Inactive = append(res.Inactive, k.Pubkey)
		}
	}
	slices.SortFunc(res.Inactive, comparePK)
	return nil
}
