package postgres

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Validator readings (pkm_validators) and the exiting state
// (migrations/0007_exiting_validators.sql). The rules are store.ChainRule
// and store.ExitRule, applied here under the rows' locks.

const validatorCols = `idx, status, balance, activation_epoch, exit_epoch, slashed, epoch, read_at`

// validatorRow receives validatorCols (all NULL for a key without a reading).
type validatorRow struct {
	idx, balance, act, exit, epoch *int64
	status                         *string
	slashed                        *bool
	at                             *time.Time
}

func (r *validatorRow) dest() []any {
	return []any{&r.idx, &r.status, &r.balance, &r.act, &r.exit, &r.slashed, &r.epoch, &r.at}
}

func (r *validatorRow) reading() *store.ValidatorStatus {
	if r.status == nil {
		return nil
	}
	return &store.ValidatorStatus{Index: uint64(*r.idx), Status: *r.status, Balance: uint64(*r.balance),
		ActivationEpoch: uint64(*r.act), ExitEpoch: uint64(*r.exit), Slashed: *r.slashed, Epoch: uint64(*r.epoch), At: r.at.UTC()}
}

// RecordValidators stores validator readings and acts on them; see
// store.Lifecycle.
func (s *Store) RecordValidators(ctx context.Context, readings []store.ValidatorReading, now time.Time) ([]store.ChainChange, error) {
	t := micros(now)
	actor := store.ActorFrom(ctx)
	n := len(readings)
	var (
		pks                         = make([][]byte, n)
		idx, bal, act, exit, epochs = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		statuses                    = make([]string, n)
		slashed                     = make([]bool, n)
		at                          = make([]time.Time, n)
		byKey                       = make(map[store.Pubkey]*store.ValidatorReading, n)
	)
	for i := range readings {
		r := &readings[i]
		v := r.Status
		pks[i] = r.Pubkey[:]
		idx[i], bal[i], act[i], exit[i], epochs[i] = int64(v.Index), int64(v.Balance), int64(v.ActivationEpoch), int64(v.ExitEpoch), int64(v.Epoch)
		statuses[i], slashed[i], at[i] = v.Status, v.Slashed, micros(v.At)
		byKey[r.Pubkey] = r
	}
	var out []store.ChainChange
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		out = nil
		// The keys' states and earlier readings, then the new readings.
		rows, err := tx.Query(ctx, `SELECT k.pubkey, k.state, coalesce(k.pod, ''), `+prefixed("v.", validatorCols)+`
			FROM unnest($1::bytea[]) AS u(pubkey) JOIN pkm_keys k ON k.pubkey = u.pubkey
			LEFT JOIN pkm_validators v ON v.pubkey = k.pubkey`, pks)
		if err != nil {
			return false, err
		}
		var (
			pk         []byte
			state, pod string
			vr         validatorRow
		)
		var retire []int // indices into out
		if _, err := pgx.ForEachRow(rows, append([]any{&pk, &state, &pod}, vr.dest()...), func() error {
			rd := byKey[store.Pubkey(pk)]
			cur := rd.Status
			cur.At = micros(cur.At)
			d := store.ChainRule(store.State(state), vr.reading(), cur)
			if d.Retire || d.Alert {
				if d.Retire {
					retire = append(retire, len(out))
				}
				out = append(out, store.ChainChange{Pubkey: rd.Pubkey, State: store.State(state), Pod: pod, Decision: d, Status: cur})
			}
			return nil
		}); err != nil {
			return false, err
		}
		// Retire under the locks, deciding again on the locked state (a
		// claim or release may have moved the key since the read).
		var left []string
		slices.SortFunc(retire, func(a, b int) int { return bytes.Compare(out[a].Pubkey[:], out[b].Pubkey[:]) })
		for _, i := range retire {
			c := &out[i]
			k, err := lockKeyRow(ctx, tx, c.Pubkey)
			if err != nil {
				return false, err
			}
			c.State, c.Pod = k.State, k.Pod
			if d := store.ChainRule(k.State, nil, c.Status); !d.Retire {
				c.Decision.Retire, c.Decision.Reason = false, ""
				continue
			}
			if err := retireLocked(ctx, tx, k, c.Decision.Reason, t, actor); err != nil {
				return false, err
			}
			left = append(left, k.Pod)
		}
		out = slices.DeleteFunc(out, func(c store.ChainChange) bool { return !c.Decision.Retire && !c.Decision.Alert })
		if _, err := tx.Exec(ctx, `INSERT INTO pkm_validators (pubkey, `+validatorCols+`)
			SELECT r.* FROM unnest($1::bytea[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::boolean[],
				$8::bigint[], $9::timestamptz[]) AS r(pubkey, idx, status, balance, activation_epoch, exit_epoch, slashed, epoch, read_at)
			WHERE EXISTS (SELECT 1 FROM pkm_keys k WHERE k.pubkey = r.pubkey)
			ON CONFLICT (pubkey) DO UPDATE SET idx = excluded.idx, status = excluded.status, balance = excluded.balance,
				activation_epoch = excluded.activation_epoch, exit_epoch = excluded.exit_epoch, slashed = excluded.slashed,
				epoch = excluded.epoch, read_at = excluded.read_at`,
			pks, idx, statuses, bal, act, exit, slashed, epochs, at); err != nil {
			return false, fmt.Errorf("store readings: %w", err)
		}
		if err := deleteEmptyPods(ctx, tx, podNames(left, func(p string) string { return p })); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("record validators: %w", wrapCtx(ctx, err))
	}
	slices.SortFunc(out, func(a, b store.ChainChange) int { return bytes.Compare(a.Pubkey[:], b.Pubkey[:]) })
	return out, nil
}

// deleteEmptyPods deletes the rows of pods that hold no keys and no
// reservation any more.
func deleteEmptyPods(ctx context.Context, tx pgx.Tx, pods []string) error {
	if len(pods) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `DELETE FROM pkm_pods p WHERE p.name = ANY($1::text[]) AND p.res_token IS NULL
			AND NOT EXISTS (SELECT 1 FROM pkm_keys k WHERE k.pod = p.name)`, pods)
	return err
}

// Validators returns stored validator readings; see store.Lifecycle.
func (s *Store) Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error) {
	pks := make([][]byte, len(pubkeys))
	for i := range pubkeys {
		pks[i] = pubkeys[i][:]
	}
	rows, err := s.pool.Query(ctx, `SELECT pubkey, `+validatorCols+` FROM pkm_validators WHERE pubkey = ANY($1::bytea[])`, pks)
	if err != nil {
		return nil, fmt.Errorf("read validators: %w", wrapCtx(ctx, err))
	}
	out := make(map[store.Pubkey]store.ValidatorStatus)
	var (
		pk []byte
		vr validatorRow
	)
	if _, err := pgx.ForEachRow(rows, append([]any{&pk}, vr.dest()...), func() error {
		if len(pk) != store.PubkeyLength {
			return fmt.Errorf("pkm_validators row with a %d-byte pubkey", len(pk))
		}
		out[store.Pubkey(pk)] = *vr.reading()
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read validators: %w", wrapCtx(ctx, err))
	}
	return out, nil
}

// Exit marks keys exiting; see store.Lifecycle.
func (s *Store) Exit(ctx context.Context, p store.ExitParams) ([]store.Key, error) {
	t := micros(p.Now)
	actor := store.ActorFrom(ctx)
	pks := make([][]byte, len(p.Pubkeys))
	for i := range p.Pubkeys {
		pks[i] = p.Pubkeys[i][:]
	}
	var out []store.Key
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		out = nil
		// Lock the pods first (every change to a pod's set does), then the
		// keys, as every other transaction does.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM pkm_pods WHERE name IN
				(SELECT pod FROM pkm_keys WHERE pubkey = ANY($1::bytea[]) AND state = 'assigned') ORDER BY name FOR UPDATE`, pks); err != nil {
			return false, err
		}
		rows, err := tx.Query(ctx, `SELECT `+cols("", false, false)+` FROM pkm_keys WHERE pubkey = ANY($1::bytea[]) ORDER BY pubkey FOR UPDATE`, pks)
		if err != nil {
			return false, err
		}
		locked, err := scanKeys(rows, false, false)
		if err != nil {
			return false, err
		}
		byKey := make(map[store.Pubkey]store.Key, len(locked))
		for _, k := range locked {
			byKey[k.Pubkey] = k
		}
		var moving []store.Key
		for _, pk := range p.Pubkeys {
			k, ok := byKey[pk]
			if !ok {
				return false, fmt.Errorf("exit key %s: %w", pk, store.ErrNotFound)
			}
			change, err := store.ExitRule(pk, k.State, k.Pod, p.Force)
			if err != nil {
				return false, err
			}
			if change && !slices.ContainsFunc(moving, func(m store.Key) bool { return m.Pubkey == pk }) {
				moving = append(moving, k)
			}
		}
		move := make([][]byte, len(moving))
		for i := range moving {
			move[i] = moving[i].Pubkey[:]
		}
		if _, err := tx.Exec(ctx, `UPDATE pkm_keys SET state = 'exiting', retired_reason = $2, since = $3,
				pod = NULL, pod_uid = NULL, cooling_until = NULL WHERE pubkey = ANY($1::bytea[])`, move, p.Reason, t); err != nil {
			return false, err
		}
		slices.SortFunc(moving, func(a, b store.Key) int {
			if c := bytes.Compare([]byte(a.Pod), []byte(b.Pod)); c != 0 {
				return c
			}
			return bytes.Compare(a.Pubkey[:], b.Pubkey[:])
		})
		for i := 0; i < len(moving); {
			j := i
			var group []store.Pubkey
			for ; j < len(moving) && moving[j].Pod == moving[i].Pod; j++ {
				group = append(group, moving[j].Pubkey)
			}
			if err := appendAudit(ctx, tx, store.AuditEvent{
				Time: t, Action: store.AuditExit, Pod: moving[i].Pod, PodUID: moving[i].PodUID, Pubkeys: group, Reason: p.Reason, Actor: actor,
			}); err != nil {
				return false, err
			}
			i = j
		}
		if err := deleteEmptyPods(ctx, tx, podNames(moving, func(k store.Key) string { return k.Pod })); err != nil {
			return false, err
		}
		rows, err = tx.Query(ctx, `SELECT `+cols("", false, false)+` FROM pkm_keys WHERE pubkey = ANY($1::bytea[])`, pks)
		if err != nil {
			return false, err
		}
		after, err := scanKeys(rows, false, false)
		if err != nil {
			return false, err
		}
		for _, k := range after {
			byKey[k.Pubkey] = k
		}
		for _, pk := range p.Pubkeys {
			out = append(out, byKey[pk])
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("exit keys: %w", wrapCtx(ctx, err))
	}
	return out, nil
}
