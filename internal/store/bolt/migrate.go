package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// init checks the schema of an existing store, read-only, and migrates a
// schema 1 store in place, or creates the layout in a new (empty) file. It
// reports whether it created the layout, and the version it migrated from
// (0 for none).
func (s *Store) init() (created bool, migratedFrom uint32, err error) {
	var (
		fresh   bool
		version uint32
	)
	err = s.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			fresh = true
			return tx.ForEach(func([]byte, *bbolt.Bucket) error {
				return fmt.Errorf("store %s is a bbolt database but not a pkmanager store (no meta bucket)", s.path)
			})
		}
		v := meta.Get(metaSchema)
		if len(v) != 4 {
			return fmt.Errorf("store %s has no valid schema version (%d bytes): %w", s.path, len(v), store.ErrUnsupportedSchema)
		}
		switch version = binary.BigEndian.Uint32(v); version {
		case SchemaVersion:
			return s.checkLayout(tx, allBuckets, numStates)
		case 6:
			return s.checkLayout(tx, bucketsV6, numStates)
		case 5:
			return s.checkLayout(tx, bucketsV5, numStatesV5)
		case 4:
			return s.checkLayout(tx, bucketsV4, numStatesV2)
		case 3:
			return s.checkLayout(tx, bucketsV3, numStatesV2)
		case 2:
			return s.checkLayout(tx, bucketsV2, numStatesV2)
		case 1:
			return s.checkLayout(tx, bucketsV1, numStatesV1)
		default:
			return fmt.Errorf("store %s has schema version %d, this pkmanager reads schema version %d (and migrates versions 1 to 6): %w", s.path, version, SchemaVersion, store.ErrUnsupportedSchema)
		}
	})
	switch {
	case err != nil:
		return false, 0, err
	case version >= 1 && version < SchemaVersion:
		// The file lock is held, so nobody migrates it meanwhile. Every
		// step runs in one transaction: a failure leaves the file as it was.
		err := s.db.Update(func(tx *bbolt.Tx) error {
			steps := []func(*bbolt.Tx) error{migrateV1, migrateV2, migrateV3, migrateV4, migrateV5, migrateV6}
			for _, step := range steps[version-1:] {
				if err := step(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return false, 0, fmt.Errorf("store %s: migrate from schema %d to %d: %w", s.path, version, SchemaVersion, err)
		}
		return false, version, nil
	case !fresh:
		return false, 0, nil
	}
	// The file lock is held, so nobody created the layout meanwhile.
	err = s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("store %s: create bucket %s: %w", s.path, name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, SchemaVersion)); err != nil {
			return err
		}
		if err := meta.Put(metaCounts, make([]byte, 8*numStates)); err != nil {
			return err
		}
		return meta.Put(metaNextIndex, make([]byte, 8))
	})
	return err == nil, 0, err
}

// numStatesV1, numStatesV2 and numStatesV5 are the numbers of counters in
// schema 1, schema 2 to 4 and schema 5 stores.
const (
	numStatesV1 = 5
	numStatesV2 = 6
	numStatesV5 = 7
)

// checkLayout checks that the buckets and meta values of a schema exist.
func (s *Store) checkLayout(tx *bbolt.Tx, buckets [][]byte, states int) error {
	for _, name := range buckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("store %s: bucket %s is missing: %w", s.path, name, errCorrupt)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if len(meta.Get(metaCounts)) != 8*states || len(meta.Get(metaNextIndex)) != 8 {
		return fmt.Errorf("store %s: meta bucket: %w", s.path, errCorrupt)
	}
	return nil
}

// migrateV6 turns a schema 6 store into schema 7: the active bucket,
// built from the avail and cooling buckets and the readings.
func migrateV6(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != 6 {
		return fmt.Errorf("schema changed during the migration: %w", errCorrupt)
	}
	if _, err := tx.CreateBucket(bucketActive); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketActive, err)
	}
	t, err := newTxn(tx)
	if err != nil {
		return err
	}
	if err := t.buildActive(); err != nil {
		return fmt.Errorf("build the active index: %w", err)
	}
	return meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, 7))
}

// migrateV5 turns a schema 5 store into schema 6: a zero counter for
// exiting and an empty chain bucket.
func migrateV5(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != 5 {
		return fmt.Errorf("schema changed during the migration: %w", errCorrupt)
	}
	counts := meta.Get(metaCounts)
	if len(counts) != 8*numStatesV5 {
		return fmt.Errorf("%w: schema 5 counters of %d bytes", errCorrupt, len(counts))
	}
	if err := meta.Put(metaCounts, append(bytes.Clone(counts), make([]byte, 8*(numStates-numStatesV5))...)); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketChain); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketChain, err)
	}
	return meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, 6))
}

// migrateV4 turns a schema 4 store into schema 5: a zero counter for
// still-signing and an empty protect bucket.
func migrateV4(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != 4 {
		return fmt.Errorf("schema changed during the migration: %w", errCorrupt)
	}
	counts := meta.Get(metaCounts)
	if len(counts) != 8*numStatesV2 {
		return fmt.Errorf("%w: schema 4 counters of %d bytes", errCorrupt, len(counts))
	}
	if err := meta.Put(metaCounts, append(bytes.Clone(counts), make([]byte, 8*(numStatesV5-numStatesV2))...)); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketProtect); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketProtect, err)
	}
	return meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, 5))
}

// migrateV3 turns a schema 3 store into schema 4: an empty depidx bucket.
func migrateV3(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != 3 {
		return fmt.Errorf("schema changed during the migration: %w", errCorrupt)
	}
	if _, err := tx.CreateBucket(bucketDepIdx); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketDepIdx, err)
	}
	return meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, 4))
}

// migrateV2 turns a schema 2 store into schema 3: an empty reserve bucket.
func migrateV2(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != 2 {
		return fmt.Errorf("schema changed during the migration: %w", errCorrupt)
	}
	if _, err := tx.CreateBucket(bucketReserve); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketReserve, err)
	}
	return meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, 3))
}

// migrateV1 turns a schema 1 store into schema 2: a zero counter for
// deposit-failed, the txs and audit buckets, and every pod entry rewritten
// in the schema 2 encoding (schema 1 never gave a pending key a pod, so no
// pod has pending keys). Key records keep their encoding.
func migrateV1(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != 1 {
		return fmt.Errorf("schema changed during the migration: %w", errCorrupt)
	}
	counts := meta.Get(metaCounts)
	if len(counts) != 8*numStatesV1 {
		return fmt.Errorf("%w: schema 1 counters of %d bytes", errCorrupt, len(counts))
	}
	if err := meta.Put(metaCounts, append(bytes.Clone(counts), make([]byte, 8*(numStatesV2-numStatesV1))...)); err != nil {
		return err
	}
	for _, name := range [][]byte{bucketTxs, bucketAudit} {
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	pods := tx.Bucket(bucketPods)
	type entry struct {
		name []byte
		e    podEntry
	}
	var entries []entry
	err := pods.ForEach(func(k, v []byte) error {
		e, err := decodePodEntryV1(v)
		if err != nil {
			return fmt.Errorf("pod %s: %w", k, err)
		}
		entries = append(entries, entry{bytes.Clone(k), e})
		return nil
	})
	if err != nil {
		return err
	}
	for _, en := range entries {
		if err := pods.Put(en.name, en.e.encode()); err != nil {
			return err
		}
	}
	return meta.Put(metaSchema, binary.BigEndian.AppendUint32(nil, 2))
}
