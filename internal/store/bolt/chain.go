package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The deposit index (store.DepositIndex): bucket depidx holds one empty
// value per entry under the 16-byte key (IndexKey, block), both big-endian,
// so a lookup is a prefix seek; the cursor is meta "depidx-cursor":
// next (8 bytes) + hash (32) + source.

var metaDepIdxCursor = []byte("depidx-cursor")

func depIdxKey(e store.IndexEntry) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), e.Key), e.Block)
}

func encodeCursor(c store.IndexCursor) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 40+len(c.Source)), c.Next)
	b = append(b, c.Hash[:]...)
	return append(b, c.Source...)
}

func decodeCursor(v []byte) (store.IndexCursor, error) {
	if v == nil {
		return store.IndexCursor{}, nil
	}
	if len(v) < 40 {
		return store.IndexCursor{}, fmt.Errorf("%w: deposit index cursor of %d bytes", errCorrupt, len(v))
	}
	c := store.IndexCursor{Next: binary.BigEndian.Uint64(v), Source: string(v[40:])}
	copy(c.Hash[:], v[8:40])
	return c, nil
}

func depIdxBuckets(tx *bbolt.Tx) (meta, idx *bbolt.Bucket, err error) {
	meta, idx = tx.Bucket(bucketMeta), tx.Bucket(bucketDepIdx)
	if meta == nil || idx == nil {
		return nil, nil, fmt.Errorf("%w: bucket missing", errCorrupt)
	}
	return meta, idx, nil
}

// DepositIndexCursor returns the deposit index's cursor; see
// store.DepositIndex.
func (s *Store) DepositIndexCursor(ctx context.Context) (store.IndexCursor, error) {
	var c store.IndexCursor
	err := s.db.View(func(tx *bbolt.Tx) error {
		meta, _, err := depIdxBuckets(tx)
		if err != nil {
			return err
		}
		c, err = decodeCursor(meta.Get(metaDepIdxCursor))
		return err
	})
	if err != nil {
		return store.IndexCursor{}, fmt.Errorf("read the deposit index cursor: %w", s.wrap(err))
	}
	return c, nil
}

// MoveDepositIndex moves the deposit index's cursor and adds entries; see
// store.DepositIndex. A rewind walks every entry (reorganizations deeper
// than the index's margin are rare).
func (s *Store) MoveDepositIndex(ctx context.Context, from, to store.IndexCursor, entries []store.IndexEntry) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta, idx, err := depIdxBuckets(tx)
		if err != nil {
			return err
		}
		cur, err := decodeCursor(meta.Get(metaDepIdxCursor))
		if err != nil {
			return err
		}
		if cur != from {
			return fmt.Errorf("move the deposit index from block %d: it is at block %d of %q: %w", from.Next, cur.Next, cur.Source, store.ErrCursorMoved)
		}
		switch {
		case to.Source != from.Source:
			if err := tx.DeleteBucket(bucketDepIdx); err != nil {
				return err
			}
			if idx, err = tx.CreateBucket(bucketDepIdx); err != nil {
				return err
			}
		case to.Next < from.Next:
			var drop [][]byte
			err := idx.ForEach(func(k, _ []byte) error {
				if len(k) == 16 && binary.BigEndian.Uint64(k[8:]) >= to.Next {
					drop = append(drop, slices.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range drop {
				if err := idx.Delete(k); err != nil {
					return err
				}
			}
		}
		// In key order: bbolt fills pages best that way.
		keys := make([][]byte, len(entries))
		for i, e := range entries {
			keys[i] = depIdxKey(e)
		}
		slices.SortFunc(keys, bytes.Compare)
		for _, k := range keys {
			if err := idx.Put(k, nil); err != nil {
				return err
			}
		}
		return meta.Put(metaDepIdxCursor, encodeCursor(to))
	})
	if err != nil {
		return fmt.Errorf("move the deposit index: %w", s.wrap(err))
	}
	return nil
}

// LookupDepositIndex returns the blocks of the entries under keys; see
// store.DepositIndex.
func (s *Store) LookupDepositIndex(ctx context.Context, keys []uint64) (map[uint64][]uint64, error) {
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	out := make(map[uint64][]uint64)
	err := s.db.View(func(tx *bbolt.Tx) error {
		_, idx, err := depIdxBuckets(tx)
		if err != nil {
			return err
		}
		c := idx.Cursor()
		for i, key := range sorted {
			if i > 0 && sorted[i-1] == key {
				continue
			}
			prefix := binary.BigEndian.AppendUint64(nil, key)
			for k, _ := c.Seek(prefix); k != nil && len(k) == 16 && binary.BigEndian.Uint64(k) == key; k, _ = c.Next() {
				out[key] = append(out[key], binary.BigEndian.Uint64(k[8:]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up the deposit index: %w", s.wrap(err))
	}
	return out, nil
}

// RecoverDeposit returns a deposit-failed key whose deposit is on chain to
// the pool; see store.Store.
func (s *Store) RecoverDeposit(ctx context.Context, pubkey store.Pubkey, block uint64, reason string, now time.Time) (store.Key, error) {
	actor := store.ActorFrom(ctx)
	var k store.Key
	err := s.update(func(t *txn) (err error) {
		k, err = t.recoverDeposit(pubkey, block, reason, micros(now), actor)
		return err
	})
	if err != nil {
		return store.Key{}, s.wrap(err)
	}
	return k, nil
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
		Time: fromMicros(now), Action: store.AuditDepositRecovered, Pubkeys: []store.Pubkey{pk}, Reason: reason, Actor: actor,
	}); err != nil {
		return store.Key{}, err
	}
	k := r.key(pk)
	k.DepositTx = dtx
	k.Deposit, err = t.getDeposit(pk)
	return k, err
}
