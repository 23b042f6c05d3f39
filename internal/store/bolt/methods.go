package bolt

import (
	"context"
	"errors"
	"fmt"
	"math"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
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

// wrap names the file in errors that say the store is damaged.
func (s *Store) wrap(err error) error {
	if errors.Is(err, errCorrupt) {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	return err
}
