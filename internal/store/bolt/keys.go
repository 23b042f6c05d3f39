package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Retire takes a key out of circulation; see store.Store.
func (s *Store) Retire(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error {
	actor := store.ActorFrom(ctx)
	if err := s.update(func(t *txn) error { return t.retire(pubkey, reason, micros(now), actor) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// retire runs Retire in t.
func (t *txn) retire(pk store.Pubkey, reason string, now int64, actor string) error {
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
	case store.StatePendingDeposit:
		if r.pod != "" {
			var e podEntry
			if e, err = t.dropPending(r.pod, pk); err == nil {
				err = t.putPod(r.pod, &e)
			}
		}
	}
	if err != nil {
		return err
	}
	from, pod, uid := r.state, r.pod, r.podUID
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
	if err := t.flushCounts(); err != nil {
		return err
	}
	return t.appendAudit(&store.AuditEvent{
		Time: fromMicros(now), Action: store.AuditRetire, Pod: pod, PodUID: uid,
		Pubkeys: []store.Pubkey{pk}, Reason: reason, Actor: actor,
	})
}

// Sweep makes cooled-down keys available; see store.Store.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	var (
		n         int
		needWrite bool
	)
	err := s.view(func(t *txn) (err error) {
		_, needWrite, err = t.sweep(micros(now), true)
		return err
	})
	if err == nil && needWrite {
		err = s.update(func(t *txn) (err error) {
			n, _, err = t.sweep(micros(now), false)
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", s.wrap(err))
	}
	return n, nil
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

// GetKey returns one key with its sealed secret, deposit and deposit
// transaction; see store.Store.
func (s *Store) GetKey(ctx context.Context, pubkey store.Pubkey) (store.Key, error) {
	var k store.Key
	err := s.view(func(t *txn) error {
		r, ok, err := t.getRecord(pubkey)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("key %s: %w", pubkey, store.ErrNotFound)
		}
		k = r.key(pubkey)
		sealed := t.secrets.Get(pubkey[:])
		if sealed == nil {
			return fmt.Errorf("%w: key %s has no sealed secret", errCorrupt, pubkey)
		}
		k.SealedSecret = bytes.Clone(sealed)
		if k.Deposit, err = t.getDeposit(pubkey); err != nil {
			return err
		}
		if k.Protection, err = t.getProtection(pubkey); err != nil {
			return err
		}
		k.DepositTx, err = t.getTx(pubkey)
		return err
	})
	if err != nil {
		return store.Key{}, s.wrap(err)
	}
	return k, nil
}

// ctxCheckEvery is how many keys ListKeys, Dump and Load handle between
// context checks.
const ctxCheckEvery = 1024

// follower finds values of a bucket keyed by pubkey for a walk that visits
// pubkeys in increasing order: it advances its own cursor alongside instead
// of searching the tree for each key.
type follower struct {
	b    *bbolt.Bucket
	c    *bbolt.Cursor
	k, v []byte
}

func (f *follower) get(pk []byte) []byte {
	if f.c == nil {
		f.c = f.b.Cursor()
		f.k, f.v = f.c.Seek(pk)
	}
	for f.k != nil && bytes.Compare(f.k, pk) < 0 {
		f.k, f.v = f.c.Next()
	}
	if f.k != nil && bytes.Equal(f.k, pk) {
		return f.v
	}
	return nil
}

// ListKeys walks the keys matching opts in pubkey order; see store.Store.
// With opts.Pod it reads only the pod's entry in the pods bucket, which
// lists the pod's assigned keys and the pending keys intended for it (the
// only keys this backend ever gives a Pod).
func (s *Store) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	var want [len(stateByCode)]bool
	for _, st := range opts.States {
		want[stateCodes[st]] = true
	}
	all := len(opts.States) == 0
	// after reports whether pk comes after opts.After; visited counts the
	// keys given to fn against opts.Limit.
	after := func(pk []byte) bool { return opts.After == nil || bytes.Compare(pk, opts.After[:]) > 0 }
	visited := 0
	full := func() bool { return opts.Limit > 0 && visited >= opts.Limit }

	var fnErr error
	err := s.view(func(t *txn) error {
		deposits, txs, protect := &follower{b: t.deposits}, &follower{b: t.txs}, &follower{b: t.protect}
		var networkName string
		// visit gives fn the key of record v, its strings shared with
		// like's where equal (decodeRecordLike); pod is the pod whose
		// entry listed it, "" in a walk of every key.
		visit := func(pk store.Pubkey, v []byte, like *record, pod string) error {
			// Skip unwanted states before decoding; a bad code is left to
			// decodeRecord to report.
			if len(v) > offState && !all && int(v[offState]) < len(want) && !want[v[offState]] {
				return nil
			}
			r, err := decodeRecordLike(v, like)
			if err != nil {
				return fmt.Errorf("key %s: %w", pk, err)
			}
			if pod != "" && r.pod != pod {
				return fmt.Errorf("%w: key %s is listed under pod %s but its record says %q", errCorrupt, pk, pod, r.pod)
			}
			if pod == "" {
				*like = r
			}
			k := r.key(pk)
			if opts.WithDeposit {
				if d := deposits.get(pk[:]); d != nil {
					if k.Deposit, err = decodeDeposit(d, &networkName); err != nil {
						return fmt.Errorf("key %s: %w", pk, err)
					}
				}
				if v := txs.get(pk[:]); v != nil {
					if k.DepositTx, err = decodeTx(v); err != nil {
						return fmt.Errorf("key %s: %w", pk, err)
					}
				}
				if v := protect.get(pk[:]); v != nil {
					if k.Protection, err = decodeProtection(v); err != nil {
						return fmt.Errorf("key %s: %w", pk, err)
					}
				}
			}
			visited++
			if err := fn(k); err != nil {
				fnErr = err
				return err
			}
			return nil
		}
		if names := opts.PodNames(); names != nil {
			members, likes, err := t.podMembers(names)
			if err != nil {
				return err
			}
			start := 0
			if opts.After != nil {
				start, _ = slices.BinarySearchFunc(members, *opts.After, func(m podMember, pk store.Pubkey) int { return comparePK(m.pk, pk) })
			}
			// One cursor sought from key to key in pubkey order: no
			// cursor (and stack) made per key as by Bucket.Get.
			c := t.keys.Cursor()
			for i := start; i < len(members) && !full(); i++ {
				if (i-start+1)%ctxCheckEvery == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				m := &members[i]
				if !after(m.pk[:]) {
					continue
				}
				pod := names[m.pod]
				k, v := c.Seek(m.pk[:])
				if !bytes.Equal(k, m.pk[:]) {
					return fmt.Errorf("%w: key %s of pod %s has no record", errCorrupt, m.pk, pod)
				}
				if err := visit(m.pk, v, &likes[m.pod], pod); err != nil {
					return err
				}
			}
			return nil
		}
		c := t.keys.Cursor()
		var prev record
		n := 0
		k, v := c.First()
		if opts.After != nil {
			k, v = c.Seek(opts.After[:])
			if k != nil && !after(k) {
				k, v = c.Next()
			}
		}
		for ; k != nil && !full(); k, v = c.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(k) != store.PubkeyLength {
				return fmt.Errorf("%w: key of %d bytes in keys bucket", errCorrupt, len(k))
			}
			if err := visit(store.Pubkey(k), v, &prev, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("list keys: %w", s.wrap(err))
	}
	return nil
}

// podMember is a key a pod's entry lists: its pubkey and the pod, by
// index in the names given to podMembers.
type podMember struct {
	pk  store.Pubkey
	pod int32
}

// podMembers returns the keys the entries of the named pods list
// (assigned and pending), in pubkey order, and for each pod a record
// holding the strings its keys' records repeat (decodeRecordLike).
func (t *txn) podMembers(names []string) ([]podMember, []record, error) {
	var members []podMember
	likes := make([]record, len(names))
	for i, name := range names {
		v := t.pods.Get([]byte(name))
		if v == nil {
			continue
		}
		uid, _, keys, err := splitPodEntry(v)
		if err != nil {
			return nil, nil, fmt.Errorf("pod %s: %w", name, err)
		}
		likes[i] = record{pod: name, podUID: string(uid), lastPod: name}
		members = slices.Grow(members, len(keys)/store.PubkeyLength)
		for off := 0; off < len(keys); off += store.PubkeyLength {
			members = append(members, podMember{pk: store.Pubkey(keys[off : off+store.PubkeyLength]), pod: int32(i)})
		}
	}
	slices.SortFunc(members, func(a, b podMember) int { return comparePK(a.pk, b.pk) })
	return members, likes, nil
}

// Counts returns the number of keys in each state, from counters kept in the
// meta bucket by every change.
func (s *Store) Counts(ctx context.Context) (map[store.State]int, error) {
	out := make(map[store.State]int, len(store.States))
	err := s.view(func(t *txn) error {
		if err := t.loadCounts(); err != nil {
			return err
		}
		for _, st := range store.States {
			out[st] = int(t.counts[stateIndex(st)])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count keys: %w", s.wrap(err))
	}
	return out, nil
}

// SetDepositTx records a pending key's deposit transaction; see store.Store.
func (s *Store) SetDepositTx(ctx context.Context, pubkey store.Pubkey, tx store.DepositTx, now time.Time) error {
	rec := store.DepositTx{Nonce: tx.Nonce, Hash: tx.Hash, Raw: tx.Raw, RecordedAt: now}
	if err := s.batch(func(t *txn) error { return t.setDepositTx(pubkey, &rec) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// setDepositTx runs SetDepositTx in t.
func (t *txn) setDepositTx(pk store.Pubkey, tx *store.DepositTx) error {
	if _, err := t.pendingRecord("record deposit transaction of", pk); err != nil {
		return err
	}
	return t.txs.Put(pkBytes(pk), encodeTx(tx))
}

// ConfirmDeposit moves a pending key to its pod or the pool once its
// deposit is on chain; see store.Store.
func (s *Store) ConfirmDeposit(ctx context.Context, pubkey store.Pubkey, block uint64, now time.Time) (store.Key, error) {
	var k store.Key
	err := s.batch(func(t *txn) (err error) {
		k, err = t.confirmDeposit(pubkey, block, micros(now))
		return err
	})
	if err != nil {
		return store.Key{}, s.wrap(err)
	}
	return k, nil
}

// pendingRecord loads a key that must be pending-deposit for op.
func (t *txn) pendingRecord(op string, pk store.Pubkey) (record, error) {
	r, ok, err := t.getRecord(pk)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, fmt.Errorf("%s key %s: %w", op, pk, store.ErrNotFound)
	}
	if r.state != store.StatePendingDeposit {
		return r, fmt.Errorf("%s key %s: it is %s, not %s: %w", op, pk, r.state, store.StatePendingDeposit, store.ErrWrongState)
	}
	return r, nil
}

// confirmDeposit runs ConfirmDeposit in t.
func (t *txn) confirmDeposit(pk store.Pubkey, block uint64, now int64) (store.Key, error) {
	r, err := t.pendingRecord("confirm deposit of", pk)
	if err != nil {
		return store.Key{}, err
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
	r.since = now
	if r.pod != "" {
		e, err := t.dropPending(r.pod, pk)
		if err != nil {
			return store.Key{}, err
		}
		e.keys = append(e.keys, pk)
		if err := t.putPod(r.pod, &e); err != nil {
			return store.Key{}, err
		}
		r.state, r.lastPod = store.StateAssigned, r.pod
	} else {
		r.state = store.StateAvailable
		if err := t.avail.Put(availKey(pk, &r), nil); err != nil {
			return store.Key{}, err
		}
	}
	if err := t.putRecord(pk, &r); err != nil {
		return store.Key{}, err
	}
	if err := t.move(store.StatePendingDeposit, r.state); err != nil {
		return store.Key{}, err
	}
	if err := t.flushCounts(); err != nil {
		return store.Key{}, err
	}
	k := r.key(pk)
	k.DepositTx = dtx
	k.Deposit, err = t.getDeposit(pk)
	return k, err
}

// FailDeposit moves a pending key to deposit-failed; see store.Store.
func (s *Store) FailDeposit(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error {
	actor := store.ActorFrom(ctx)
	if err := s.update(func(t *txn) error { return t.failDeposit(pubkey, reason, micros(now), actor) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// failDeposit runs FailDeposit in t.
func (t *txn) failDeposit(pk store.Pubkey, reason string, now int64, actor string) error {
	r, err := t.pendingRecord("fail deposit of", pk)
	if err != nil {
		return err
	}
	pod, uid := r.pod, r.podUID
	if pod != "" {
		e, err := t.dropPending(pod, pk)
		if err != nil {
			return err
		}
		if err := t.putPod(pod, &e); err != nil {
			return err
		}
		r.lastPod = pod
	}
	r.state = store.StateDepositFailed
	r.retiredReason = reason
	r.pod, r.podUID = "", ""
	r.since = now
	if err := t.putRecord(pk, &r); err != nil {
		return err
	}
	if err := t.move(store.StatePendingDeposit, store.StateDepositFailed); err != nil {
		return err
	}
	if err := t.flushCounts(); err != nil {
		return err
	}
	return t.appendAudit(&store.AuditEvent{
		Time: fromMicros(now), Action: store.AuditDepositFailed, Pod: pod, PodUID: uid,
		Pubkeys: []store.Pubkey{pk}, Reason: reason, Actor: actor,
	})
}
