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

// Slashing-protection watermarks (sp_* columns) and the still-signing
// state (migrations/0006_still_signing_protection.sql).

// mergeProtections merges a releasing pod's uploaded watermarks into its
// keys' (under the pod's row lock, before its keys leave it); a key the pod
// does not hold fails the release.
func mergeProtections(ctx context.Context, tx pgx.Tx, pod string, prot map[store.Pubkey]store.Protection) error {
	for pk, p := range prot {
		args := append([]any{pk[:], pod}, protectionArgs(&p)...)
		tag, err := tx.Exec(ctx, `UPDATE pkm_keys SET
				sp_block_slot = CASE WHEN $3::bigint IS NULL THEN sp_block_slot ELSE greatest(sp_block_slot, $3) END,
				sp_source_epoch = CASE WHEN $4::bigint IS NULL THEN sp_source_epoch ELSE greatest(sp_source_epoch, $4) END,
				sp_target_epoch = CASE WHEN $5::bigint IS NULL THEN sp_target_epoch ELSE greatest(sp_target_epoch, $5) END
			WHERE pubkey = $1 AND pod = $2 AND state = 'assigned'`, args...)
		if err != nil {
			return fmt.Errorf("record slashing protection: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("release pod %s: slashing protection for key %s, which the pod does not hold: %w", pod, pk, store.ErrInvalidArgument)
		}
	}
	return nil
}

// Quarantine takes keys seen signing out of circulation; see store.Store.
func (s *Store) Quarantine(ctx context.Context, pubkeys []store.Pubkey, reason string, now time.Time) (int, error) {
	t := micros(now)
	actor := store.ActorFrom(ctx)
	pks := make([][]byte, len(pubkeys))
	for i := range pubkeys {
		pks[i] = pubkeys[i][:]
	}
	var n int
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		n = 0
		// Lock the pods first (every change to a pod's set does), then the
		// keys, as every other transaction does.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM pkm_pods WHERE name IN
				(SELECT pod FROM pkm_keys WHERE pubkey = ANY($1::bytea[]) AND state = 'assigned') ORDER BY name FOR UPDATE`, pks); err != nil {
			return false, err
		}
		rows, err := tx.Query(ctx, `WITH moved AS (
				SELECT pubkey, pod, pod_uid FROM pkm_keys
				WHERE pubkey = ANY($1::bytea[]) AND state IN ('available', 'cooling-down', 'assigned') ORDER BY pubkey FOR UPDATE)
			UPDATE pkm_keys k SET state = 'still-signing', retired_reason = $2, since = $3,
				last_pod = coalesce(k.pod, k.last_pod), pod = NULL, pod_uid = NULL, cooling_until = NULL
			FROM moved WHERE k.pubkey = moved.pubkey RETURNING k.pubkey, coalesce(moved.pod, ''), coalesce(moved.pod_uid, '')`, pks, reason, t)
		if err != nil {
			return false, err
		}
		type moved struct {
			pk       []byte
			pod, uid string
		}
		var all []moved
		var m moved
		if _, err := pgx.ForEachRow(rows, []any{&m.pk, &m.pod, &m.uid}, func() error {
			all = append(all, moved{bytes.Clone(m.pk), m.pod, m.uid})
			return nil
		}); err != nil {
			return false, err
		}
		slices.SortFunc(all, func(a, b moved) int {
			if c := bytes.Compare([]byte(a.pod), []byte(b.pod)); c != 0 {
				return c
			}
			return bytes.Compare(a.pk, b.pk)
		})
		for i := 0; i < len(all); {
			j := i
			var pkl []store.Pubkey
			for ; j < len(all) && all[j].pod == all[i].pod; j++ {
				pkl = append(pkl, store.Pubkey(all[j].pk))
			}
			if err := appendAudit(ctx, tx, store.AuditEvent{
				Time: t, Action: store.AuditStillSigning, Pod: all[i].pod, PodUID: all[i].uid, Pubkeys: pkl, Reason: reason, Actor: actor,
			}); err != nil {
				return false, err
			}
			i = j
		}
		// Pods left without keys keep no row.
		if _, err := tx.Exec(ctx, `DELETE FROM pkm_pods p WHERE p.name = ANY($1::text[]) AND p.res_token IS NULL
				AND NOT EXISTS (SELECT 1 FROM pkm_keys k WHERE k.pod = p.name)`, podNames(all, func(m moved) string { return m.pod })); err != nil {
			return false, err
		}
		n = len(all)
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine keys: %w", wrapCtx(ctx, err))
	}
	return n, nil
}

func podNames[T any](xs []T, pod func(T) string) []string {
	var out []string
	for _, x := range xs {
		if p := pod(x); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// CoolDown sets the cooling-down end of keys; see store.Store.
func (s *Store) CoolDown(ctx context.Context, pubkeys []store.Pubkey, until, now time.Time) (int, error) {
	u, t := micros(until), micros(now)
	actor := store.ActorFrom(ctx)
	pks := make([][]byte, len(pubkeys))
	for i := range pubkeys {
		pks[i] = pubkeys[i][:]
	}
	var n int
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		rows, err := tx.Query(ctx, `WITH picked AS (
				SELECT pubkey, state AS was FROM pkm_keys
				WHERE pubkey = ANY($1::bytea[]) AND state IN ('cooling-down', 'still-signing') ORDER BY pubkey FOR UPDATE)
			UPDATE pkm_keys k SET state = 'cooling-down', cooling_until = $2,
				retired_reason = '', since = CASE WHEN picked.was = 'still-signing' THEN $3 ELSE k.since END
			FROM picked WHERE k.pubkey = picked.pubkey RETURNING k.pubkey, picked.was = 'still-signing'`, pks, u, t)
		if err != nil {
			return false, err
		}
		var (
			pk    []byte
			was   bool
			quiet []store.Pubkey
		)
		n = 0
		if _, err := pgx.ForEachRow(rows, []any{&pk, &was}, func() error {
			n++
			if was {
				quiet = append(quiet, store.Pubkey(pk))
			}
			return nil
		}); err != nil {
			return false, err
		}
		if len(quiet) > 0 {
			slices.SortFunc(quiet, func(a, b store.Pubkey) int { return bytes.Compare(a[:], b[:]) })
			if err := appendAudit(ctx, tx, store.AuditEvent{
				Time: t, Action: store.AuditQuiet, Pubkeys: quiet, Actor: actor,
				Reason: fmt.Sprintf("quiet long enough: cooling down until %s", u.UTC().Format(time.RFC3339)),
			}); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("cool down keys: %w", wrapCtx(ctx, err))
	}
	return n, nil
}

// Protections returns stored slashing-protection watermarks; see
// store.Store.
func (s *Store) Protections(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.Protection, error) {
	pks := make([][]byte, len(pubkeys))
	for i := range pubkeys {
		pks[i] = pubkeys[i][:]
	}
	rows, err := s.pool.Query(ctx, `SELECT pubkey, sp_block_slot, sp_source_epoch, sp_target_epoch FROM pkm_keys
		WHERE pubkey = ANY($1::bytea[]) AND (sp_block_slot IS NOT NULL OR sp_source_epoch IS NOT NULL)`, pks)
	if err != nil {
		return nil, fmt.Errorf("read slashing protection: %w", wrapCtx(ctx, err))
	}
	out := make(map[store.Pubkey]store.Protection)
	var (
		pk                    []byte
		block, source, target *int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&pk, &block, &source, &target}, func() error {
		var p store.Protection
		if block != nil {
			p.HasBlock, p.BlockSlot = true, uint64(*block)
		}
		if source != nil && target != nil {
			p.HasAttestation, p.SourceEpoch, p.TargetEpoch = true, uint64(*source), uint64(*target)
		}
		out[store.Pubkey(pk)] = p
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read slashing protection: %w", wrapCtx(ctx, err))
	}
	return out, nil
}
