package bolt

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// checkActiveIndex fails t unless the active bucket holds exactly the
// entries buildActive makes from the pool buckets and the readings: every
// writer of the avail and cooling buckets and of the readings kept it up
// to date. A closed store is not checked.
func checkActiveIndex(t testing.TB, s *Store) {
	t.Helper()
	var got, want [][]byte
	err := s.view(func(tx *txn) error {
		if err := tx.active.ForEach(func(k, _ []byte) error {
			got = append(got, bytes.Clone(k))
			return nil
		}); err != nil {
			return err
		}
		return nil
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return
	}
	if err != nil {
		t.Fatalf("read the active index: %v", err)
	}
	// Rebuild it in a transaction that is rolled back.
	err = s.db.Update(func(btx *bbolt.Tx) error {
		tx, err := newTxn(btx)
		if err != nil {
			return err
		}
		if err := btx.DeleteBucket(bucketActive); err != nil {
			return err
		}
		if tx.active, err = btx.CreateBucket(bucketActive); err != nil {
			return err
		}
		if err := tx.buildActive(); err != nil {
			return err
		}
		if err := tx.active.ForEach(func(k, _ []byte) error {
			want = append(want, bytes.Clone(k))
			return nil
		}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("rebuild the active index: %v", err)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("active index has %d entries %x, rebuilt from the pool and the readings %d entries %x", len(got), got, len(want), want)
	}
}

var errRollback = errors.New("rolled back")
