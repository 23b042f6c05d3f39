package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
)

// lockKey locks one key's row for a change that may change its pod's set:
// the pod's row first (the order every pod transaction uses), then the key.
// It returns store.ErrNotFound for an unknown key.
func lockKeyRow(ctx context.Context, tx pgx.Tx, pk store.Pubkey) (store.Key, error) {
	for range 5 {
		var podName *string
		err := tx.QueryRow(ctx, `SELECT pod FROM pkm_keys WHERE pubkey = $1`, pk[:]).Scan(&podName)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.Key{}, fmt.Errorf("key %s: %w", pk, store.ErrNotFound)
		}
		if err != nil {
			return store.Key{}, fmt.Errorf("read key %s: %w", pk, err)
		}
		if podName != nil {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM pkm_pods WHERE name = $1 FOR UPDATE`, *podName); err != nil {
				return store.Key{}, fmt.Errorf("lock pod %s: %w", *podName, err)
			}
		}
		rows, err := tx.Query(ctx, `SELECT `+cols("", false, true)+` FROM pkm_keys WHERE pubkey = $1 FOR UPDATE`, pk[:])
		if err != nil {
			return store.Key{}, fmt.Errorf("lock key %s: %w", pk, err)
		}
		keys, err := scanKeys(rows, false, true)
		if err != nil {
			return store.Key{}, fmt.Errorf("lock key %s: %w", pk, err)
		}
		if len(keys) == 0 {
			return store.Key{}, fmt.Errorf("key %s: %w", pk, store.ErrNotFound)
		}
		k := keys[0]
		if (podName == nil && k.Pod == "") || (podName != nil && *podName == k.Pod) {
			return k, nil
		}
		// The key changed pods between the two reads: lock again.
	}
	return store.Key{}, fmt.Errorf("key %s keeps changing pods; try again", pk)
}

// Retire takes a key out of circulation; see store.Store.
func (s *Store) Retire(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error {
	t := micros(now)
	actor := store.ActorFrom(ctx)
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		k, err := lockKeyRow(ctx, tx, pubkey)
		if err != nil {
			return false, err
		}
		if k.State == store.StateRetired {
			return false, nil
		}
		err = retireLocked(ctx, tx, k, reason, t, actor)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("retire key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	return nil
}

// retireLocked retires k, whose row (and pod's) lockKeyRow locked, with
// its audit event.
func retireLocked(ctx context.Context, tx pgx.Tx, k store.Key, reason string, t time.Time, actor string) error {
	if _, err := tx.Exec(ctx, `UPDATE pkm_keys SET state = 'retired', retired_reason = $2, since = $3,
			pod = NULL, pod_uid = NULL, cooling_until = NULL WHERE pubkey = $1`, k.Pubkey[:], reason, t); err != nil {
		return fmt.Errorf("retire: %w", err)
	}
	err := appendAudit(ctx, tx, store.AuditEvent{
		Time: t, Action: store.AuditRetire, Pod: k.Pod, PodUID: k.PodUID, Pubkeys: []store.Pubkey{k.Pubkey}, Reason: reason, Actor: actor,
	})
	return err
}

// Sweep makes cooled-down keys available; see store.Store.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	t := micros(now)
	var n int
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		// Keys another transaction has locked are being claimed or
		// retired: they leave cooling-down anyway. Skipping them means a
		// sweep never waits for a claim (which may be waiting for keys
		// this sweep holds).
		tag, err := tx.Exec(ctx, `WITH due AS (
				SELECT pubkey FROM pkm_keys WHERE state = 'cooling-down' AND cooling_until <= $1 FOR UPDATE SKIP LOCKED)
			UPDATE pkm_keys k SET state = 'available', since = $1, cooling_until = NULL
			FROM due WHERE k.pubkey = due.pubkey AND k.state = 'cooling-down' AND k.cooling_until <= $1`, t)
		if err != nil {
			return false, err
		}
		n = int(tag.RowsAffected())
		return n > 0, nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", wrapCtx(ctx, err))
	}
	return n, nil
}

// GetKey returns one key with its sealed secret and deposit; see store.Store.
func (s *Store) GetKey(ctx context.Context, pubkey store.Pubkey) (store.Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+cols("", true, true)+` FROM pkm_keys WHERE pubkey = $1`, pubkey[:])
	if err != nil {
		return store.Key{}, fmt.Errorf("get key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	keys, err := scanKeys(rows, true, true)
	if err != nil {
		return store.Key{}, fmt.Errorf("get key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	if len(keys) == 0 {
		return store.Key{}, fmt.Errorf("key %s: %w", pubkey, store.ErrNotFound)
	}
	return keys[0], nil
}

// ListKeys walks the keys matching opts in pubkey order; see store.Store.
// The walk is one query, so it sees one consistent snapshot (and holds a
// connection until fn has seen every row).
func (s *Store) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	var (
		where []string
		args  []any
	)
	if len(opts.States) > 0 {
		states := make([]string, len(opts.States))
		for i, st := range opts.States {
			states[i] = string(st)
		}
		args = append(args, states)
		where = append(where, "state = ANY($"+strconv.Itoa(len(args))+"::text[])")
	}
	if names := opts.PodNames(); names != nil {
		args = append(args, names)
		where = append(where, "pod = ANY($"+strconv.Itoa(len(args))+"::text[])")
	}
	if opts.After != nil {
		args = append(args, opts.After[:])
		where = append(where, "pubkey > $"+strconv.Itoa(len(args)))
	}
	q := `SELECT ` + cols("", false, opts.WithDeposit) + ` FROM pkm_keys`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY pubkey"
	if opts.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(opts.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("list keys: %w", wrapCtx(ctx, err))
	}
	defer rows.Close()
	var r keyRow
	dest := r.sharesNames().dest(false, opts.WithDeposit)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("list keys: %w", wrapCtx(ctx, err))
		}
		k, err := r.key(false, opts.WithDeposit)
		if err != nil {
			return fmt.Errorf("list keys: %w", err)
		}
		if err := fn(k); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list keys: %w", wrapCtx(ctx, err))
	}
	return nil
}

// Counts returns the number of keys in each state.
func (s *Store) Counts(ctx context.Context) (map[store.State]int, error) {
	out := make(map[store.State]int, len(store.States))
	for _, st := range store.States {
		out[st] = 0
	}
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM pkm_keys GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count keys: %w", wrapCtx(ctx, err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			st string
			n  int
		)
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count keys: %w", err)
		}
		out[store.State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count keys: %w", wrapCtx(ctx, err))
	}
	return out, nil
}

// SetDepositTx records a pending key's deposit transaction; see store.Store.
func (s *Store) SetDepositTx(ctx context.Context, pubkey store.Pubkey, dtx store.DepositTx, now time.Time) error {
	t := micros(now)
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM pkm_keys WHERE pubkey = $1 FOR UPDATE`, pubkey[:]).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Errorf("key %s: %w", pubkey, store.ErrNotFound)
		}
		if err != nil {
			return false, err
		}
		if store.State(state) != store.StatePendingDeposit {
			return false, fmt.Errorf("key %s is %s, not %s: %w", pubkey, state, store.StatePendingDeposit, store.ErrWrongState)
		}
		_, err = tx.Exec(ctx, `UPDATE pkm_keys SET tx_nonce = $2, tx_hash = $3, tx_raw = $4, tx_block = 0, tx_recorded_at = $5
			WHERE pubkey = $1`, pubkey[:], int64(dtx.Nonce), dtx.Hash[:], dtx.Raw, t)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("record deposit transaction of key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	return nil
}

// ConfirmDeposit ends a pending key's wait; see store.Store.
func (s *Store) ConfirmDeposit(ctx context.Context, pubkey store.Pubkey, block uint64, now time.Time) (store.Key, error) {
	t := micros(now)
	var out store.Key
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		k, err := lockKeyRow(ctx, tx, pubkey)
		if err != nil {
			return false, err
		}
		if k.State != store.StatePendingDeposit {
			return false, fmt.Errorf("key %s is %s, not %s: %w", pubkey, k.State, store.StatePendingDeposit, store.ErrWrongState)
		}
		rows, err := tx.Query(ctx, `UPDATE pkm_keys SET
				state = CASE WHEN pod IS NULL THEN 'available' ELSE 'assigned' END,
				last_pod = coalesce(pod, last_pod),
				since = $2,
				tx_recorded_at = CASE WHEN tx_hash IS NULL THEN $2 ELSE tx_recorded_at END,
				tx_nonce = coalesce(tx_nonce, 0),
				tx_hash = coalesce(tx_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
				tx_raw = coalesce(tx_raw, ''::bytea),
				tx_block = $3
			WHERE pubkey = $1 RETURNING `+cols("", false, true), pubkey[:], t, int64(block))
		if err != nil {
			return false, err
		}
		keys, err := scanKeys(rows, false, true)
		if err != nil {
			return false, err
		}
		if len(keys) != 1 {
			return false, fmt.Errorf("key %s: updated %d rows", pubkey, len(keys))
		}
		out = keys[0]
		return true, nil
	})
	if err != nil {
		return store.Key{}, fmt.Errorf("confirm deposit of key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	return out, nil
}

// FailDeposit moves a pending key to deposit-failed; see store.Store.
func (s *Store) FailDeposit(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error {
	t := micros(now)
	actor := store.ActorFrom(ctx)
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		k, err := lockKeyRow(ctx, tx, pubkey)
		if err != nil {
			return false, err
		}
		if k.State != store.StatePendingDeposit {
			return false, fmt.Errorf("key %s is %s, not %s: %w", pubkey, k.State, store.StatePendingDeposit, store.ErrWrongState)
		}
		if _, err := tx.Exec(ctx, `UPDATE pkm_keys SET state = 'deposit-failed', retired_reason = $2, since = $3,
				last_pod = coalesce(pod, last_pod), pod = NULL, pod_uid = NULL WHERE pubkey = $1`, pubkey[:], reason, t); err != nil {
			return false, err
		}
		err = appendAudit(ctx, tx, store.AuditEvent{
			Time: t, Action: store.AuditDepositFailed, Pod: k.Pod, PodUID: k.PodUID, Pubkeys: []store.Pubkey{pubkey}, Reason: reason, Actor: actor,
		})
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("fail deposit of key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	return nil
}
