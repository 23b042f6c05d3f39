package bolt

import (
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// view runs fn in a read-only transaction that is rolled back even when fn
// panics (ListKeys runs caller code inside it).
func (s *Store) view(fn func(*txn) error) error {
	tx, err := s.db.Begin(false)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	t, err := newTxn(tx)
	if err != nil {
		return err
	}
	return fn(t)
}

// update runs fn in its own read-write transaction.
func (s *Store) update(fn func(*txn) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		t, err := newTxn(tx)
		if err != nil {
			return err
		}
		return fn(t)
	})
}

// batch runs fn in a read-write transaction shared with concurrent callers
// (group commit). It may run fn more than once, and alone when it fails,
// so fn must set all its results afresh on every run and fail only on what
// it reads in the transaction.
func (s *Store) batch(fn func(*txn) error) error {
	return s.gc.run(s.db, func(tx *bbolt.Tx) error {
		t, err := newTxn(tx)
		if err != nil {
			return err
		}
		return fn(t)
	})
}

// wrap names the file in errors that say the store is damaged.
func (s *Store) wrap(err error) error {
	if errors.Is(err, errCorrupt) {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	return err
}
