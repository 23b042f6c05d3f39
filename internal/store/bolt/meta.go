package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Dump walks every key with all its fields and returns the rest of the
// store, all in one read-only transaction; see store.Store.
func (s *Store) Dump(ctx context.Context, fn func(store.Key) error) (store.Snapshot, error) {
	var (
		snap  store.Snapshot
		fnErr error
	)
	err := s.view(func(t *txn) error {
		secrets, deposits, txs, protect := &follower{b: t.secrets}, &follower{b: t.deposits}, &follower{b: t.txs}, &follower{b: t.protect}
		c := t.keys.Cursor()
		n := 0
		for kb, v := c.First(); kb != nil; kb, v = c.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(kb) != store.PubkeyLength {
				return fmt.Errorf("%w: key of %d bytes in keys bucket", errCorrupt, len(kb))
			}
			pk := store.Pubkey(kb)
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("key %s: %w", pk, err)
			}
			k := r.key(pk)
			sealed := secrets.get(kb)
			if sealed == nil {
				return fmt.Errorf("%w: key %s has no sealed secret", errCorrupt, pk)
			}
			k.SealedSecret = bytes.Clone(sealed)
			if d := deposits.get(kb); d != nil {
				if k.Deposit, err = decodeDeposit(d, nil); err != nil {
					return fmt.Errorf("key %s: %w", pk, err)
				}
			}
			if d := txs.get(kb); d != nil {
				if k.DepositTx, err = decodeTx(d); err != nil {
					return fmt.Errorf("key %s: %w", pk, err)
				}
			}
			if d := protect.get(kb); d != nil {
				if k.Protection, err = decodeProtection(d); err != nil {
					return fmt.Errorf("key %s: %w", pk, err)
				}
			}
			if err := fn(k); err != nil {
				fnErr = err
				return err
			}
		}

		snap.Bindings = make(map[string]string)
		err := t.bindings.ForEach(func(k, v []byte) error {
			snap.Bindings[string(k)] = string(v)
			return nil
		})
		if err != nil {
			return err
		}
		next, err := nextIndex(t)
		if err != nil {
			return err
		}
		if next > math.MaxUint32 {
			return fmt.Errorf("every derivation index is reserved; a snapshot cannot record the next index %d", next)
		}
		snap.NextIndex = uint32(next)
		return t.audit.ForEach(func(k, v []byte) error {
			e, err := decodeAudit(k, v)
			if err != nil {
				return err
			}
			snap.Audit = append(snap.Audit, e)
			return nil
		})
	})
	if fnErr != nil {
		return store.Snapshot{}, fnErr
	}
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", s.wrap(err))
	}
	return snap, nil
}

func nextIndex(t *txn) (uint64, error) {
	v := t.meta.Get(metaNextIndex)
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: next derivation index", errCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Load fills an empty store from a Dump, in one read-write transaction that
// writes every record and rebuilds every index and counter; see
// store.Store.
func (s *Store) Load(ctx context.Context, snap store.Snapshot, keys []store.Key) error {
	err := s.update(func(t *txn) error {
		if err := t.checkEmpty(); err != nil {
			return err
		}
		// Without keys, pod entries are left only by mint reservations,
		// which a load drops.
		for _, b := range []*bbolt.Bucket{t.reserve, t.pods} {
			if err := clearBucket(b); err != nil {
				return err
			}
		}
		if err := t.loadKeys(ctx, keys); err != nil {
			return err
		}
		for _, name := range sortedKeys(snap.Bindings) {
			if err := t.bindings.Put([]byte(name), []byte(snap.Bindings[name])); err != nil {
				return err
			}
		}
		if err := t.meta.Put(metaNextIndex, binary.BigEndian.AppendUint64(nil, uint64(snap.NextIndex))); err != nil {
			return err
		}
		for i := range snap.Audit {
			if err := t.audit.Put(seqKey(snap.Audit[i].Seq), encodeAudit(&snap.Audit[i])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load store: %w", s.wrap(err))
	}
	return nil
}

// checkEmpty fails with ErrNotEmpty unless the store has no keys, no
// bindings, no audit events and reserved no derivation index.
func (t *txn) checkEmpty() error {
	next, err := nextIndex(t)
	if err != nil {
		return err
	}
	var what string
	switch {
	case first(t.keys) != nil:
		what = "keys"
	case first(t.bindings) != nil:
		what = "bindings"
	case first(t.audit) != nil:
		what = "audit events"
	case next != 0:
		what = "reserved derivation indices"
	default:
		return nil
	}
	return fmt.Errorf("it holds %s: %w", what, store.ErrNotEmpty)
}

// loadKeys writes keys (checked by store.ValidateLoad) with their indexes,
// pod entries and counters, and checks the result: no key twice, pod
// entries that agree with the records, counters that add up.
func (t *txn) loadKeys(ctx context.Context, keys []store.Key) error {
	pods := make(map[string]*podEntry)
	var tally [numStates]int64
	for i := range keys {
		if i%ctxCheckEvery == ctxCheckEvery-1 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		k := &keys[i]
		if t.keys.Get(k.Pubkey[:]) != nil {
			return fmt.Errorf("key %s is given twice: %w", k.Pubkey, store.ErrInvalidArgument)
		}
		r := record{
			state:         k.State,
			origin:        k.Origin,
			derivIndex:    k.DerivationIndex,
			hasDerivIndex: k.HasDerivationIndex,
			since:         micros(k.Since),
			coolingUntil:  micros(k.CoolingUntil),
			releasedAt:    micros(k.ReleasedAt),
			createdAt:     micros(k.CreatedAt),
			pod:           k.Pod,
			podUID:        k.PodUID,
			lastPod:       k.LastPod,
			retiredReason: k.RetiredReason,
		}
		if err := t.putRecord(k.Pubkey, &r); err != nil {
			return err
		}
		if err := t.secrets.Put(pkBytes(k.Pubkey), bytes.Clone(k.SealedSecret)); err != nil {
			return err
		}
		if k.Deposit != nil {
			if err := t.deposits.Put(pkBytes(k.Pubkey), encodeDeposit(k.Deposit)); err != nil {
				return err
			}
		}
		if k.DepositTx != nil {
			if err := t.txs.Put(pkBytes(k.Pubkey), encodeTx(k.DepositTx)); err != nil {
				return err
			}
		}
		if k.Protection != nil && !k.Protection.Empty() {
			if err := t.protect.Put(pkBytes(k.Pubkey), encodeProtection(*k.Protection)); err != nil {
				return err
			}
		}
		var err error
		switch k.State {
		case store.StateAvailable:
			err = t.avail.Put(availKey(k.Pubkey, &r), nil)
		case store.StateCoolingDown:
			err = t.cooling.Put(coolingKey(k.Pubkey, r.coolingUntil), nil)
		}
		if err != nil {
			return err
		}
		if k.Pod != "" {
			e := pods[k.Pod]
			if e == nil {
				e = &podEntry{uid: k.PodUID}
				pods[k.Pod] = e
			}
			if e.uid != k.PodUID {
				return fmt.Errorf("pod %s holds keys under UIDs %q and %q: %w", k.Pod, e.uid, k.PodUID, store.ErrInvalidArgument)
			}
			if k.State == store.StateAssigned {
				e.keys = append(e.keys, k.Pubkey)
			} else {
				e.pending = append(e.pending, k.Pubkey)
			}
		}
		if err := t.move("", k.State); err != nil {
			return err
		}
		tally[stateIndex(k.State)]++
	}
	for _, pod := range sortedKeys(pods) {
		if err := t.putPod(pod, pods[pod]); err != nil {
			return err
		}
	}
	if err := t.flushCounts(); err != nil {
		return err
	}
	// The counters were empty and each key counted once: they must now be
	// exactly the per-state tally, adding up to the number of keys.
	t.countsLoaded = false
	if err := t.loadCounts(); err != nil {
		return err
	}
	var sum int64
	for i, n := range t.counts {
		if n != tally[i] {
			return fmt.Errorf("%w: counter of %s is %d after loading %d such keys", errCorrupt, store.States[i], n, tally[i])
		}
		sum += n
	}
	if sum != int64(len(keys)) {
		return fmt.Errorf("%w: counters add up to %d after loading %d keys", errCorrupt, sum, len(keys))
	}
	return nil
}

// first returns the first key of b, or nil when b is empty.
func first(b *bbolt.Bucket) []byte {
	k, _ := b.Cursor().First()
	return k
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// entryKeys returns copies of the keys of b's entries, in order.
func entryKeys(b *bbolt.Bucket) ([][]byte, error) {
	var keys [][]byte
	err := b.ForEach(func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	return keys, err
}

// clearBucket deletes every entry of b.
func clearBucket(b *bbolt.Bucket) error {
	keys, err := entryKeys(b)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ReserveIndices reserves count consecutive derivation indices; see
// store.Store.
func (s *Store) ReserveIndices(ctx context.Context, count int) (uint32, error) {
	var first uint64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(metaNextIndex)
		if len(v) != 8 {
			return fmt.Errorf("next derivation index: %w", errCorrupt)
		}
		first = binary.BigEndian.Uint64(v)
		if uint64(count) > 1<<32-first {
			return fmt.Errorf("reserve %d derivation indices from %d: past the last index %d", count, first, uint32(1<<32-1))
		}
		return meta.Put(metaNextIndex, binary.BigEndian.AppendUint64(nil, first+uint64(count)))
	})
	if err != nil {
		return 0, fmt.Errorf("store %s: %w", s.path, err)
	}
	return uint32(first), nil
}

// Bind records value under name once; see store.Store.
func (s *Store) Bind(ctx context.Context, name, value string) error {
	check := func(tx *bbolt.Tx) (bound bool, err error) {
		v := tx.Bucket(bucketBindings).Get([]byte(name))
		if v == nil {
			return false, nil
		}
		if string(v) != value {
			return true, fmt.Errorf("store %s: binding %q holds another value: %w", s.path, name, store.ErrBindingMismatch)
		}
		return true, nil
	}
	var bound bool
	err := s.db.View(func(tx *bbolt.Tx) (err error) {
		bound, err = check(tx)
		return err
	})
	if err != nil || bound {
		return err
	}
	return s.db.Update(func(tx *bbolt.Tx) error {
		if bound, err := check(tx); err != nil || bound {
			return err
		}
		return tx.Bucket(bucketBindings).Put([]byte(name), []byte(value))
	})
}

// Bindings returns every binding; see store.Store.
func (s *Store) Bindings(ctx context.Context) (map[string]string, error) {
	out := make(map[string]string)
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketBindings).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: read bindings: %w", s.path, err)
	}
	return out, nil
}

// AppendAudit appends a caller's event to the audit trail; see store.Store.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	if e.Actor == "" {
		e.Actor = store.ActorFrom(ctx)
	}
	if err := s.update(func(t *txn) error { return t.appendAudit(&e) }); err != nil {
		return fmt.Errorf("append audit event %q: %w", e.Action, s.wrap(err))
	}
	return nil
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

// ListAudit returns audit events after a Seq; see store.Store.
func (s *Store) ListAudit(ctx context.Context, after uint64, limit int) ([]store.AuditEvent, error) {
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []store.AuditEvent
	err := s.view(func(t *txn) error {
		c := t.audit.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			e, err := decodeAudit(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", s.wrap(err))
	}
	return out, nil
}
