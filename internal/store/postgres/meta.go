package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
)

// ReserveIndices reserves count consecutive derivation indices; see
// store.Store. One UPDATE of the meta row: concurrent reservations queue on
// its row lock and get disjoint ranges.
func (s *Store) ReserveIndices(ctx context.Context, count int) (uint32, error) {
	if int64(count) > 1<<32 {
		return 0, fmt.Errorf("reserve %d derivation indices: more than there are", count)
	}
	var first int64
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		err := tx.QueryRow(ctx, `UPDATE pkm_meta SET next_index = next_index + $1
			WHERE next_index + $1 <= 4294967296 RETURNING next_index - $1`, int64(count)).Scan(&first)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Errorf("reserve %d derivation indices: past the last index %d", count, uint32(math.MaxUint32))
		}
		return err == nil, err
	})
	if err != nil {
		return 0, fmt.Errorf("reserve derivation indices: %w", wrapCtx(ctx, err))
	}
	return uint32(first), nil
}

// Bind records value under name once; see store.Store.
func (s *Store) Bind(ctx context.Context, name, value string) error {
	var got string
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO pkm_bindings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, value); err != nil {
			return false, err
		}
		// A new statement: it sees a concurrent insert that won.
		err := tx.QueryRow(ctx, `SELECT value FROM pkm_bindings WHERE name = $1`, name).Scan(&got)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("bind %s: %w", name, wrapCtx(ctx, err))
	}
	if got != value {
		return fmt.Errorf("store %s: binding %q holds another value: %w", s.where, name, store.ErrBindingMismatch)
	}
	return nil
}

// appendAudit appends e to the audit trail in tx: to pkm_audit_pending,
// which writers only insert into (no lock shared with other writers); a
// reader of the trail numbers the committed events first (sequenceAudit,
// migrations/0009_claim_audit.sql).
func appendAudit(ctx context.Context, tx pgx.Tx, e store.AuditEvent) error {
	pks := make([][]byte, len(e.Pubkeys))
	for i := range e.Pubkeys {
		pks[i] = e.Pubkeys[i][:]
	}
	_, err := tx.Exec(ctx, `INSERT INTO pkm_audit_pending (time, action, pod, pod_uid, pubkeys, reason, actor)
		VALUES ($1, $2, $3, $4, $5::bytea[], $6, $7)`,
		micros(e.Time), e.Action, e.Pod, e.PodUID, pks, e.Reason, e.Actor)
	if err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return nil
}

// sequenceAudit gives the committed pending audit events their sequence
// numbers (pkm_audit_sequence), so that a read of pkm_audit after it sees
// every event committed before it.
func (s *Store) sequenceAudit(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `SELECT pkm_audit_sequence()`); err != nil {
		return fmt.Errorf("number the audit events: %w", wrapCtx(ctx, err))
	}
	return nil
}

// AppendAudit appends a caller's decision to the audit trail; see store.Store.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	if e.Actor == "" {
		e.Actor = store.ActorFrom(ctx)
	}
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		err := appendAudit(ctx, tx, e)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("append audit event %s: %w", e.Action, wrapCtx(ctx, err))
	}
	return nil
}

// ListAudit returns audit events after a sequence number; see store.Store.
func (s *Store) ListAudit(ctx context.Context, after uint64, limit int) ([]store.AuditEvent, error) {
	if after >= math.MaxInt64 {
		return nil, nil
	}
	if err := s.sequenceAudit(ctx); err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, time, action, pod, pod_uid, pubkeys, reason, actor
		FROM pkm_audit WHERE seq > $1 ORDER BY seq LIMIT $2`, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", wrapCtx(ctx, err))
	}
	events, err := scanAudit(rows)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", wrapCtx(ctx, err))
	}
	return events, nil
}

func scanAudit(rows pgx.Rows) ([]store.AuditEvent, error) {
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var (
			e   store.AuditEvent
			seq int64
			tm  time.Time
			pks [][]byte
		)
		if err := rows.Scan(&seq, &tm, &e.Action, &e.Pod, &e.PodUID, &pks, &e.Reason, &e.Actor); err != nil {
			return nil, err
		}
		e.Seq, e.Time = uint64(seq), tm.UTC()
		for _, pk := range pks {
			if len(pk) != store.PubkeyLength {
				return nil, fmt.Errorf("audit event %d: a pubkey of %d bytes", seq, len(pk))
			}
			e.Pubkeys = append(e.Pubkeys, store.Pubkey(pk))
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Dump calls fn for every key with every field, and returns the rest of the
// store, all from one REPEATABLE READ snapshot; see store.Store.
func (s *Store) Dump(ctx context.Context, fn func(store.Key) error) (store.Snapshot, error) {
	if err := s.sequenceAudit(ctx); err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", err)
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	snap := store.Snapshot{Bindings: map[string]string{}}
	var next int64
	if err := tx.QueryRow(ctx, `SELECT next_index FROM pkm_meta`).Scan(&next); err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	if next > math.MaxUint32 {
		return store.Snapshot{}, fmt.Errorf("dump store: every derivation index is reserved; a snapshot cannot say so")
	}
	snap.NextIndex = uint32(next)

	rows, err := tx.Query(ctx, `SELECT `+cols("", true, true)+` FROM pkm_keys ORDER BY pubkey`)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	var (
		fnErr error
		r     keyRow
	)
	dest := r.sharesNames().dest(true, true)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
		}
		k, err := r.key(true, true)
		if err != nil {
			rows.Close()
			return store.Snapshot{}, fmt.Errorf("dump store: %w", err)
		}
		if fnErr = fn(k); fnErr != nil {
			break
		}
	}
	rows.Close()
	if fnErr != nil {
		return store.Snapshot{}, fnErr
	}
	if err := rows.Err(); err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}

	brows, err := tx.Query(ctx, `SELECT name, value FROM pkm_bindings ORDER BY name`)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	for brows.Next() {
		var n, v string
		if err := brows.Scan(&n, &v); err != nil {
			brows.Close()
			return store.Snapshot{}, fmt.Errorf("dump store: %w", err)
		}
		snap.Bindings[n] = v
	}
	brows.Close()
	if err := brows.Err(); err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}

	arows, err := tx.Query(ctx, `SELECT seq, time, action, pod, pod_uid, pubkeys, reason, actor FROM pkm_audit ORDER BY seq`)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	if snap.Audit, err = scanAudit(arows); err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	// Events committed since sequenceAudit ran describe changes this
	// snapshot holds: they follow, numbered as the sequencer would.
	var last int64
	if err := tx.QueryRow(ctx, `SELECT last FROM pkm_audit_seq`).Scan(&last); err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	prows, err := tx.Query(ctx, `SELECT $1::bigint + row_number() OVER (ORDER BY id), time, action, pod, pod_uid, pubkeys, reason, actor
		FROM pkm_audit_pending ORDER BY id`, last)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	pending, err := scanAudit(prows)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("dump store: %w", wrapCtx(ctx, err))
	}
	snap.Audit = append(snap.Audit, pending...)
	return snap, nil
}

// Load fills an empty store with a Dump's keys and snapshot, all or
// nothing; see store.Store.
func (s *Store) Load(ctx context.Context, snap store.Snapshot, keys []store.Key) error {
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		// Block every writer until the load commits, and check emptiness
		// under the lock.
		if _, err := tx.Exec(ctx, `LOCK TABLE pkm_meta, pkm_audit_seq, pkm_bindings, pkm_pods, pkm_keys, pkm_audit, pkm_audit_pending IN EXCLUSIVE MODE`); err != nil {
			return false, err
		}
		var next int64
		var nonEmpty bool
		if err := tx.QueryRow(ctx, `SELECT next_index, EXISTS (SELECT 1 FROM pkm_keys) OR EXISTS (SELECT 1 FROM pkm_bindings)
				OR EXISTS (SELECT 1 FROM pkm_audit) OR EXISTS (SELECT 1 FROM pkm_audit_pending) FROM pkm_meta`).Scan(&next, &nonEmpty); err != nil {
			return false, err
		}
		if nonEmpty || next != 0 {
			return false, fmt.Errorf("store %s: %w", s.where, store.ErrNotEmpty)
		}
		// Pod rows left over by claims that changed nothing refer to no key.
		if _, err := tx.Exec(ctx, `DELETE FROM pkm_pods`); err != nil {
			return false, err
		}
		pods := map[string]string{}
		for i := range keys {
			if keys[i].Pod != "" {
				pods[keys[i].Pod] = keys[i].PodUID
			}
		}
		podRows := make([][]any, 0, len(pods))
		for name, uid := range pods {
			podRows = append(podRows, []any{name, uid})
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pkm_pods"}, []string{"name", "uid"}, pgx.CopyFromRows(podRows)); err != nil {
			return false, fmt.Errorf("load pods: %w", err)
		}
		keyCols := []string{"pubkey", "state", "origin", "derivation_index", "pod", "pod_uid", "last_pod",
			"since", "cooling_until", "released_at", "retired_reason", "created_at", "sealed_secret",
			"dep_withdrawal_credentials", "dep_amount_gwei", "dep_signature", "dep_message_root",
			"dep_data_root", "dep_fork_version", "dep_network",
			"tx_nonce", "tx_hash", "tx_raw", "tx_block", "tx_recorded_at",
			"sp_block_slot", "sp_source_epoch", "sp_target_epoch"}
		src := pgx.CopyFromSlice(len(keys), func(i int) ([]any, error) {
			k := &keys[i]
			var di *int64
			if k.HasDerivationIndex {
				d := int64(k.DerivationIndex)
				di = &d
			}
			var uid *string
			if k.Pod != "" {
				u := k.PodUID
				uid = &u
			}
			row := []any{k.Pubkey[:], string(k.State), string(k.Origin), di, strPtr(k.Pod), uid, k.LastPod,
				micros(k.Since), optTime(k.CoolingUntil), optTime(k.ReleasedAt), k.RetiredReason, micros(k.CreatedAt), k.SealedSecret}
			row = append(row, depositArgs(k.Deposit)...)
			row = append(row, txArgs(k.DepositTx)...)
			return append(row, protectionArgs(k.Protection)...), nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pkm_keys"}, keyCols, src); err != nil {
			return false, fmt.Errorf("load keys: %w", err)
		}
		names := make([]string, 0, len(snap.Bindings))
		for n := range snap.Bindings {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			if _, err := tx.Exec(ctx, `INSERT INTO pkm_bindings (name, value) VALUES ($1, $2)`, n, snap.Bindings[n]); err != nil {
				return false, fmt.Errorf("load bindings: %w", err)
			}
		}
		var last int64
		audit := pgx.CopyFromSlice(len(snap.Audit), func(i int) ([]any, error) {
			e := &snap.Audit[i]
			pks := make([][]byte, len(e.Pubkeys))
			for j := range e.Pubkeys {
				pks[j] = e.Pubkeys[j][:]
			}
			last = int64(e.Seq)
			return []any{int64(e.Seq), micros(e.Time), e.Action, e.Pod, e.PodUID, pks, e.Reason, e.Actor}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pkm_audit"},
			[]string{"seq", "time", "action", "pod", "pod_uid", "pubkeys", "reason", "actor"}, audit); err != nil {
			return false, fmt.Errorf("load audit trail: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE pkm_audit_seq SET last = $1`, last); err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `UPDATE pkm_meta SET next_index = $1`, int64(snap.NextIndex)); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		if isDataError(err) {
			return fmt.Errorf("load store: the keys break the store's rules (%v): %w", err, store.ErrInvalidArgument)
		}
		return fmt.Errorf("load store: %w", wrapCtx(ctx, err))
	}
	return nil
}

// Bindings returns every binding; see store.Store.
func (s *Store) Bindings(ctx context.Context) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, value FROM pkm_bindings`)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", wrapCtx(ctx, err))
	}
	out := make(map[string]string)
	var n, v string
	if _, err := pgx.ForEachRow(rows, []any{&n, &v}, func() error {
		out[n] = v
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read bindings: %w", wrapCtx(ctx, err))
	}
	return out, nil
}
