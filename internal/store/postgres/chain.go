package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The deposit index (migrations/0004_deposit_index.sql) and the other
// records of chain facts: RecoverDeposit, Bindings.

// DepositIndexCursor returns the deposit index's cursor; see
// store.DepositIndex.
func (s *Store) DepositIndexCursor(ctx context.Context) (store.IndexCursor, error) {
	c, err := readCursor(ctx, s.pool, false)
	if err != nil {
		return store.IndexCursor{}, fmt.Errorf("read the deposit index cursor: %w", wrapCtx(ctx, err))
	}
	return c, nil
}

func readCursor(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, lock bool) (store.IndexCursor, error) {
	sql := `SELECT source, next, hash FROM pkm_deposit_index_cursor`
	if lock {
		sql += ` FOR UPDATE`
	}
	var (
		c    store.IndexCursor
		next int64
		hash []byte
	)
	if err := q.QueryRow(ctx, sql).Scan(&c.Source, &next, &hash); err != nil {
		return c, err
	}
	c.Next = uint64(next)
	copy(c.Hash[:], hash)
	return c, nil
}

// MoveDepositIndex moves the deposit index's cursor and adds entries; see
// store.DepositIndex.
func (s *Store) MoveDepositIndex(ctx context.Context, from, to store.IndexCursor, entries []store.IndexEntry) error {
	keys, blocks := make([]int64, len(entries)), make([]int64, len(entries))
	for i, e := range entries {
		keys[i], blocks[i] = int64(e.Key), int64(e.Block)
	}
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		cur, err := readCursor(ctx, tx, true)
		if err != nil {
			return false, err
		}
		if cur != from {
			return false, fmt.Errorf("move the deposit index from block %d: it is at block %d of %q: %w", from.Next, cur.Next, cur.Source, store.ErrCursorMoved)
		}
		switch {
		case to.Source != from.Source:
			if _, err := tx.Exec(ctx, `TRUNCATE pkm_deposit_index`); err != nil {
				return false, err
			}
		case to.Next < from.Next:
			if _, err := tx.Exec(ctx, `DELETE FROM pkm_deposit_index WHERE block >= $1`, int64(to.Next)); err != nil {
				return false, err
			}
		}
		if len(entries) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO pkm_deposit_index (key, block)
				SELECT * FROM unnest($1::int8[], $2::int8[]) ON CONFLICT DO NOTHING`, keys, blocks); err != nil {
				return false, err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE pkm_deposit_index_cursor SET source = $1, next = $2, hash = $3`, to.Source, int64(to.Next), to.Hash[:])
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("move the deposit index: %w", wrapCtx(ctx, err))
	}
	return nil
}

// LookupDepositIndex returns the blocks of the entries under keys; see
// store.DepositIndex.
func (s *Store) LookupDepositIndex(ctx context.Context, keys []uint64) (map[uint64][]uint64, error) {
	ks := make([]int64, len(keys))
	for i, k := range keys {
		ks[i] = int64(k)
	}
	rows, err := s.pool.Query(ctx, `SELECT key, block FROM pkm_deposit_index WHERE key = ANY($1::int8[]) ORDER BY key, block`, ks)
	if err != nil {
		return nil, fmt.Errorf("look up the deposit index: %w", wrapCtx(ctx, err))
	}
	out := make(map[uint64][]uint64)
	var k, b int64
	_, err = pgx.ForEachRow(rows, []any{&k, &b}, func() error {
		out[uint64(k)] = append(out[uint64(k)], uint64(b))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up the deposit index: %w", wrapCtx(ctx, err))
	}
	return out, nil
}

// RecoverDeposit returns a deposit-failed key whose deposit is on chain to
// the pool; see store.Store.
func (s *Store) RecoverDeposit(ctx context.Context, pubkey store.Pubkey, block uint64, reason string, now time.Time) (store.Key, error) {
	t := micros(now)
	actor := store.ActorFrom(ctx)
	var out store.Key
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		k, err := lockKeyRow(ctx, tx, pubkey)
		if err != nil {
			return false, err
		}
		if k.State != store.StateDepositFailed {
			return false, fmt.Errorf("key %s is %s, not %s: %w", pubkey, k.State, store.StateDepositFailed, store.ErrWrongState)
		}
		rows, err := tx.Query(ctx, `UPDATE pkm_keys SET state = 'available', retired_reason = '', since = $2,
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
		err = appendAudit(ctx, tx, store.AuditEvent{
			Time: t, Action: store.AuditDepositRecovered, Pubkeys: []store.Pubkey{pubkey}, Reason: reason, Actor: actor,
		})
		return err == nil, err
	})
	if err != nil {
		return store.Key{}, fmt.Errorf("recover deposit of key %s: %w", pubkey, wrapCtx(ctx, err))
	}
	return out, nil
}
