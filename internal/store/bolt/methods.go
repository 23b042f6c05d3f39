package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

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

// Claim gives a pod its keys; see store.Store. A pod that already holds
// enough keys, or asks an empty pool, is answered from a read-only
// transaction without a commit.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (store.Claim, error) {
	var (
		res       store.Claim
		needWrite bool
	)
	err := s.view(func(t *txn) (err error) {
		res, needWrite, err = t.claim(&p, true)
		return err
	})
	if err == nil && needWrite {
		err = s.batch(func(t *txn) (err error) {
			res, _, err = t.claim(&p, false)
			return err
		})
	}
	if err != nil {
		return store.Claim{}, s.wrap(err)
	}
	return res, nil
}

// AddAssigned inserts minted keys for a pod; see store.Store.
func (s *Store) AddAssigned(ctx context.Context, p store.AddParams) (store.Claim, error) {
	var res store.Claim
	err := s.batch(func(t *txn) (err error) {
		res, err = t.addAssigned(&p)
		return err
	})
	if err != nil {
		return store.Claim{}, fmt.Errorf("add keys for pod %s: %w", p.Pod, s.wrap(err))
	}
	return res, nil
}

// AddKeys inserts keys into the pool; see store.Store.
func (s *Store) AddKeys(ctx context.Context, keys []store.NewKey, state store.State, now time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.update(func(t *txn) error {
		if err := t.checkAbsent(keys); err != nil {
			return err
		}
		for i := range keys {
			if err := t.insert(&keys[i], state, micros(now), "", ""); err != nil {
				return err
			}
		}
		return t.flushCounts()
	})
	if err != nil {
		return fmt.Errorf("add keys: %w", s.wrap(err))
	}
	return nil
}

// AddPending inserts minted keys as pending-deposit, intended for a pod or
// spare; see store.Store.
func (s *Store) AddPending(ctx context.Context, p store.AddParams) error {
	if err := s.batch(func(t *txn) error { return t.addPending(&p) }); err != nil {
		return fmt.Errorf("add pending keys for pod %q: %w", p.Pod, s.wrap(err))
	}
	return nil
}

// RenewReservation moves the expiry of a pod's mint reservation; see
// store.Store.
func (s *Store) RenewReservation(ctx context.Context, pod, token string, until time.Time) error {
	u := micros(until)
	if err := s.batch(func(t *txn) error { return t.reservation(pod, token, &u) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// ReleaseReservation deletes a pod's mint reservation; see store.Store.
func (s *Store) ReleaseReservation(ctx context.Context, pod, token string) error {
	if err := s.batch(func(t *txn) error { return t.reservation(pod, token, nil) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// SetDepositTx records a pending key's deposit transaction; see store.Store.
func (s *Store) SetDepositTx(ctx context.Context, pubkey store.Pubkey, tx store.DepositTx, now time.Time) error {
	rec := store.DepositTx{Nonce: tx.Nonce, Hash: tx.Hash, Raw: tx.Raw, RecordedAt: now}
	if err := s.batch(func(t *txn) error { return t.setDepositTx(pubkey, &rec) }); err != nil {
		return s.wrap(err)
	}
	return nil
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

// FailDeposit moves a pending key to deposit-failed; see store.Store.
func (s *Store) FailDeposit(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error {
	actor := store.ActorFrom(ctx)
	if err := s.update(func(t *txn) error { return t.failDeposit(pubkey, reason, micros(now), actor) }); err != nil {
		return s.wrap(err)
	}
	return nil
}

// Release returns a pod's keys to the pool after a cooling-down period,
// un-targets its pending keys and records the decision; see store.Store.
func (s *Store) Release(ctx context.Context, p store.ReleaseParams) (int, error) {
	actor := store.ActorFrom(ctx)
	var n int
	err := s.batch(func(t *txn) (err error) {
		n, err = t.release(&p, actor)
		return err
	})
	if err != nil {
		return 0, s.wrap(err)
	}
	return n, nil
}

// Retire takes a key out of circulation; see store.Store.
func (s *Store) Retire(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error {
	actor := store.ActorFrom(ctx)
	if err := s.update(func(t *txn) error { return t.retire(pubkey, reason, micros(now), actor) }); err != nil {
		return s.wrap(err)
	}
	return nil
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
		visit := func(pk store.Pubkey, v []byte) error {
			// Skip unwanted states before decoding; a bad code is left to
			// decodeRecord to report.
			if len(v) > offState && !all && int(v[offState]) < len(want) && !want[v[offState]] {
				return nil
			}
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("key %s: %w", pk, err)
			}
			if opts.Pod != "" && r.pod != opts.Pod {
				return fmt.Errorf("%w: key %s is listed under pod %s but its record says %q", errCorrupt, pk, opts.Pod, r.pod)
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
		if opts.Pod != "" {
			e, _, err := t.getPod(opts.Pod)
			if err != nil {
				return err
			}
			members := slices.Concat(e.keys, e.pending)
			slices.SortFunc(members, comparePK)
			for _, pk := range members {
				if full() {
					return nil
				}
				if !after(pk[:]) {
					continue
				}
				v := t.keys.Get(pk[:])
				if v == nil {
					return fmt.Errorf("%w: key %s of pod %s has no record", errCorrupt, pk, opts.Pod)
				}
				if err := visit(pk, v); err != nil {
					return err
				}
			}
			return nil
		}
		c := t.keys.Cursor()
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
			if err := visit(store.Pubkey(k), v); err != nil {
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

// wrap names the file in errors that say the store is damaged.
func (s *Store) wrap(err error) error {
	if errors.Is(err, errCorrupt) {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	return err
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

// Quarantine takes keys seen signing out of circulation; see store.Store.
func (s *Store) Quarantine(ctx context.Context, pubkeys []store.Pubkey, reason string, now time.Time) (int, error) {
	actor := store.ActorFrom(ctx)
	var n int
	err := s.update(func(t *txn) (err error) {
		n, err = t.quarantine(pubkeys, reason, micros(now), actor)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine keys: %w", s.wrap(err))
	}
	return n, nil
}

// CoolDown sets the cooling-down end of keys; see store.Store.
func (s *Store) CoolDown(ctx context.Context, pubkeys []store.Pubkey, until, now time.Time) (int, error) {
	actor := store.ActorFrom(ctx)
	var n int
	err := s.update(func(t *txn) (err error) {
		n, err = t.coolDown(pubkeys, micros(until), micros(now), actor)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cool down keys: %w", s.wrap(err))
	}
	return n, nil
}

// Protections returns stored slashing-protection watermarks; see
// store.Store.
func (s *Store) Protections(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.Protection, error) {
	out := make(map[store.Pubkey]store.Protection)
	err := s.view(func(t *txn) error {
		for _, pk := range pubkeys {
			p, err := t.getProtection(pk)
			if err != nil {
				return err
			}
			if p != nil {
				out[pk] = *p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read slashing protection: %w", s.wrap(err))
	}
	return out, nil
}
