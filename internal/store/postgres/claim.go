package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pkmanager/pkmanager/internal/store"
)

// pod is what a transaction knows about a pod after locking it.
type pod struct {
	name     string
	rowUID   string      // pkm_pods.uid (may be stale while the pod holds nothing)
	assigned []store.Key // with SealedSecret, pubkey order
	pending  []store.Key // intended pending-deposit keys, no secret, pubkey order
	res      *store.Reservation
}

// state is the pod as the pod rules see it (store.PodState).
func (p *pod) state() store.PodState {
	return store.PodState{Held: len(p.assigned) + len(p.pending), UID: p.rowUID, Res: p.res}
}

// lockPod locks the pod's row (creating it with uid when missing) and reads
// its reservation and keys. Every transaction that changes a pod's set calls
// it first, so they are serialized per pod; the reads after the lock see
// everything committed before it was granted.
func lockPod(ctx context.Context, tx pgx.Tx, name, uid string) (*pod, error) {
	p := &pod{name: name}
	// ON CONFLICT DO UPDATE locks an existing row (waiting for its holder)
	// and returns it unchanged.
	var (
		resToken *string
		resCount *int32
		resUntil *time.Time
	)
	err := tx.QueryRow(ctx, `INSERT INTO pkm_pods (name, uid) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING uid, res_token, res_count, res_until`,
		name, uid).Scan(&p.rowUID, &resToken, &resCount, &resUntil)
	if err != nil {
		return nil, fmt.Errorf("lock pod %s: %w", name, err)
	}
	if resToken != nil && resCount != nil && resUntil != nil {
		p.res = &store.Reservation{Token: *resToken, Count: int(*resCount), Until: resUntil.UTC()}
	}
	rows, err := tx.Query(ctx, `SELECT `+cols("", true, false)+` FROM pkm_keys WHERE pod = $1 ORDER BY pubkey`, name)
	if err != nil {
		return nil, fmt.Errorf("read keys of pod %s: %w", name, err)
	}
	keys, err := scanKeys(rows, true, false)
	if err != nil {
		return nil, fmt.Errorf("read keys of pod %s: %w", name, err)
	}
	for _, k := range keys {
		switch k.State {
		case store.StateAssigned:
			p.assigned = append(p.assigned, k)
		case store.StatePendingDeposit:
			k.SealedSecret = nil
			p.pending = append(p.pending, k)
		default:
			return nil, fmt.Errorf("key %s of pod %s is %s", k.Pubkey, name, k.State)
		}
	}
	return p, nil
}

// setUID records uid as the pod's UID; the foreign key's cascade rewrites
// the pod_uid of every key the pod holds or is intended. fillIn (from
// store.PodUID): it is written on keys held without one, which the audit
// trail records in tx (store.UIDAdoptedEvent).
func (p *pod) setUID(ctx context.Context, tx pgx.Tx, uid string, fillIn bool, now time.Time) error {
	if fillIn {
		pks := make([]store.Pubkey, 0, len(p.assigned)+len(p.pending))
		for _, k := range slices.Concat(p.assigned, p.pending) {
			pks = append(pks, k.Pubkey)
		}
		slices.SortFunc(pks, func(a, b store.Pubkey) int { return bytes.Compare(a[:], b[:]) })
		if err := appendAudit(ctx, tx, store.UIDAdoptedEvent(now, p.name, uid, pks, "", store.ActorFrom(ctx))); err != nil {
			return err
		}
	}
	if p.rowUID == uid {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE pkm_pods SET uid = $2 WHERE name = $1`, p.name, uid); err != nil {
		return fmt.Errorf("set UID of pod %s: %w", p.name, err)
	}
	p.rowUID = uid
	for i := range p.assigned {
		p.assigned[i].PodUID = uid
	}
	for i := range p.pending {
		p.pending[i].PodUID = uid
	}
	return nil
}

// result is the Claim answer for the pod's current set, with live (the
// pod's live reservation, or nil).
func (p *pod) result(want int, live *store.Reservation) store.Claim {
	reserved := 0
	if live != nil {
		reserved = live.Count
	}
	return store.Claim{
		Keys:        p.assigned,
		Pending:     p.pending,
		Shortfall:   max(0, want-len(p.assigned)-len(p.pending)-reserved),
		Reservation: live,
	}
}

// fulfil applies the reservation rules of AddAssigned and AddPending (with
// the pod locked): with token, the pod's reservation must be held under it
// and is deleted; without, a live reservation counts as held. It returns the
// reservation left live and the number of keys it counts.
func (p *pod) fulfil(ctx context.Context, tx pgx.Tx, op, token string, now time.Time) (*store.Reservation, int, error) {
	if token == "" {
		if p.res.Live(now) {
			return p.res, p.res.Count, nil
		}
		return nil, 0, nil
	}
	if !p.res.OwnedBy(token) {
		return nil, 0, fmt.Errorf("%s pod %s: %w", op, p.name, store.ErrReservationLost)
	}
	if _, err := tx.Exec(ctx, `UPDATE pkm_pods SET res_token = NULL, res_count = NULL, res_until = NULL WHERE name = $1`, p.name); err != nil {
		return nil, 0, fmt.Errorf("fulfil reservation of pod %s: %w", p.name, err)
	}
	p.res = nil
	return nil, 0, nil
}

func sortKeys(keys []store.Key) {
	slices.SortFunc(keys, func(a, b store.Key) int { return bytes.Compare(a.Pubkey[:], b.Pubkey[:]) })
}

// Claim gives a pod its keys; see store.Store. The whole claim is the
// database function pkm_claim (migrations/0003_claim_waits.sql): one
// statement in its own transaction, so one round trip. It locks the pod's
// row, applies the UID and reservation rules, and takes pool keys with
// SELECT ... FOR UPDATE SKIP LOCKED (pkm_take). When claimable keys stay
// locked by other transactions, pkm_claim commits only what it took and
// reports the claim contended; Claim then claims again, after a short
// jittered pause, until a claim is not contended or ctx ends: it never
// reports a shortfall (or reserves keys to mint) that the pool may cover.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (store.Claim, error) {
	now := micros(p.Now)
	recycled := 0
	wait := contendedWaitMin
	for {
		res, contended, err := s.claimRetried(ctx, &p, now)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "PKUID" {
				return store.Claim{}, fmt.Errorf("%s: %w", pgErr.Message, store.ErrPodUIDMismatch)
			}
			return store.Claim{}, fmt.Errorf("claim for pod %s: %w", p.Pod, wrapCtx(ctx, err))
		}
		recycled += res.Recycled
		if !contended {
			res.Recycled = recycled
			// pkm_take sets since = p_now on the keys it takes, and this
			// call's rounds all claim at now.
			for _, k := range res.Keys {
				if k.Since.Equal(now) {
					res.Taken = append(res.Taken, k.Pubkey)
				}
			}
			return res, nil
		}
		// Full jitter in [wait/2, wait): duplicate and all-or-nothing
		// claims that keep each other's keys locked fall out of step.
		t := time.NewTimer(wait/2 + rand.N(wait/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return store.Claim{}, fmt.Errorf("claim for pod %s: wait for pool keys other transactions hold locked: %w", p.Pod, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, contendedWaitMax)
	}
}

// The pause between contended claims (see Claim): doubling from min to max.
const (
	contendedWaitMin = 4 * time.Millisecond
	contendedWaitMax = 64 * time.Millisecond
)

// claimRetried runs claimOnce, retrying serialization failures, deadlocks
// and connections that broke before anything was sent.
func (s *Store) claimRetried(ctx context.Context, p *store.ClaimParams, now time.Time) (store.Claim, bool, error) {
	for attempt := 1; ; attempt++ {
		res, contended, err := s.claimOnce(ctx, p, now)
		if err == nil || !retryable(err) || attempt == maxAttempts || ctx.Err() != nil {
			return res, contended, err
		}
		time.Sleep(time.Duration(attempt) * 2 * time.Millisecond)
	}
}

// claimOnce runs pkm_claim once. contended reports that it gave up on
// claimable keys other transactions held locked: the claim committed only
// the keys it took, without a reservation for the rest. pkm_claim_audit
// (migrations/0012_claim_uid_audit.sql) records the pod UID it filled in and
// the keys it took in the audit trail, in the same transaction.
func (s *Store) claimOnce(ctx context.Context, p *store.ClaimParams, now time.Time) (_ store.Claim, contended bool, _ error) {
	var until *time.Time
	if p.ReserveToken != "" {
		u := micros(p.ReserveUntil)
		until = &u
	}
	// With RequireActive the statuses of the rule (store.ReadyForDuties,
	// store.Activating) go to pkm_claim as parameters; nil: no filter.
	var active, activating []string
	if p.RequireActive {
		active, activating = store.ActiveStatuses, store.ActivatingStatuses
	}
	// The function fills in what the event is about (its keys) itself.
	uidEvent := store.UIDAdoptedEvent(now, p.Pod, p.PodUID, nil, p.UIDReason, "")
	rows, err := s.pool.Query(ctx, `SELECT `+keyCols+`, sealed_secret, recycled, available, res_token, res_count, res_until, contended,
			activating, ready
		FROM pkm_claim_audit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`, p.Pod, p.PodUID, p.Want, now, p.AllOrNothing, takeRetries,
		p.ReserveToken, until, p.StrictUID, active, activating, store.AuditAssign, store.AssignReason(p.Want), store.ActorFrom(ctx),
		uidEvent.Action, uidEvent.Reason)
	if err != nil {
		return store.Claim{}, false, err
	}
	defer rows.Close()
	var (
		res     store.Claim
		summary bool
	)
	for rows.Next() {
		var (
			r                   keyRow
			pk                  []byte
			recycled, available int
			resToken            *string
			resCount            *int32
			resUntil            *time.Time
			rowContended        bool
			rowActivating       int
			ready               *bool
		)
		d := r.dest(true, false)
		d = append(d, &recycled, &available, &resToken, &resCount, &resUntil, &rowContended, &rowActivating, &ready)
		// The summary row has NULLs where a key has values: scan into
		// nullable holders first.
		var (
			state, origin *string
			since, create *time.Time
			lastPod, reas *string
		)
		d[0], d[1], d[2], d[6], d[7], d[10], d[11] = &pk, &state, &origin, &lastPod, &since, &reas, &create
		if err := rows.Scan(d...); err != nil {
			return store.Claim{}, false, err
		}
		if pk == nil {
			res.Recycled, res.Available, contended, summary = recycled, available, rowContended, true
			if p.RequireActive {
				res.Activating = rowActivating
			}
			if resToken != nil && resCount != nil && resUntil != nil {
				res.Reservation = &store.Reservation{Token: *resToken, Count: int(*resCount), Until: resUntil.UTC()}
			}
			continue
		}
		r.pubkey.ScanBytes(pk)
		r.state, r.origin, r.lastPod.s, r.since, r.retiredReason, r.createdAt = knownText(*state), knownText(*origin), *lastPod, *since, *reas, *create
		k, err := r.key(true, false)
		if err != nil {
			return store.Claim{}, false, err
		}
		switch k.State {
		case store.StateAssigned:
			res.Keys = append(res.Keys, k)
			if p.RequireActive && (ready == nil || !*ready) {
				res.Inactive = append(res.Inactive, k.Pubkey) // rows come in pubkey order
			}
		case store.StatePendingDeposit:
			k.SealedSecret = nil
			res.Pending = append(res.Pending, k)
		default:
			return store.Claim{}, false, fmt.Errorf("key %s of pod %s is %s", k.Pubkey, p.Pod, k.State)
		}
	}
	if err := rows.Err(); err != nil {
		return store.Claim{}, false, err
	}
	if !summary {
		return store.Claim{}, false, errors.New("pkm_claim returned no summary")
	}
	reserved := 0
	if res.Reservation != nil {
		reserved = res.Reservation.Count
	}
	res.Shortfall = max(0, p.Want-len(res.Keys)-len(res.Pending)-reserved)
	if res.Shortfall == 0 {
		res.Available = 0
	}
	return res, contended, nil
}

// takeRetries bounds how often one pkm_claim waits for pool keys that other
// transactions hold locked (claims that may still roll back or settle for
// fewer, a sweep moving them) before it returns contended: about 150 ms in
// all (see pkm_take), with the pod's row locked.
const takeRetries = 20

// newRow is one key to insert.
type newRow struct {
	key     *store.NewKey
	state   store.State
	pod     string // "" for none
	podUID  string
	lastPod string
}

// insertKeys inserts rows with CreatedAt = Since = now. A pubkey already
// stored fails with store.ErrKeyExists.
func insertKeys(ctx context.Context, tx pgx.Tx, rows []newRow, now time.Time) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		pubkeys, sealed           = make([][]byte, n), make([][]byte, n)
		states, origins, lastPods = make([]string, n), make([]string, n), make([]string, n)
		derivs                    = make([]*int64, n)
		pods, uids                = make([]*string, n), make([]*string, n)
		wc, sig, msg, droot, fork = make([][]byte, n), make([][]byte, n), make([][]byte, n), make([][]byte, n), make([][]byte, n)
		amounts                   = make([]*int64, n)
		networks                  = make([]*string, n)
	)
	for i, r := range rows {
		k := r.key
		pubkeys[i] = k.Pubkey[:]
		sealed[i] = k.SealedSecret
		states[i], origins[i], lastPods[i] = string(r.state), string(k.Origin), r.lastPod
		if k.HasDerivationIndex {
			d := int64(k.DerivationIndex)
			derivs[i] = &d
		}
		if r.pod != "" {
			pods[i] = &r.pod
			uid := r.podUID
			uids[i] = &uid
		}
		if d := k.Deposit; d != nil {
			wc[i], sig[i], msg[i], droot[i], fork[i] = d.WithdrawalCredentials[:], d.Signature[:], d.DepositMessageRoot[:], d.DepositDataRoot[:], d.ForkVersion[:]
			a := int64(d.AmountGwei)
			amounts[i] = &a
			net := d.NetworkName
			networks[i] = &net
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO pkm_keys (pubkey, state, origin, derivation_index, pod, pod_uid, last_pod,
			since, created_at, sealed_secret, dep_withdrawal_credentials, dep_amount_gwei, dep_signature,
			dep_message_root, dep_data_root, dep_fork_version, dep_network)
		SELECT u.pubkey, u.state, u.origin, u.di, u.pod, u.uid, u.last_pod, $15, $15, u.sealed,
			u.wc, u.amount, u.sig, u.msg, u.droot, u.fork, u.net
		FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[],
			$8::bytea[], $9::bytea[], $10::int8[], $11::bytea[], $12::bytea[], $13::bytea[], $14::bytea[], $16::text[])
			AS u(pubkey, state, origin, di, pod, uid, last_pod, sealed, wc, amount, sig, msg, droot, fork, net)`,
		pubkeys, states, origins, derivs, pods, uids, lastPods, sealed, wc, amounts, sig, msg, droot, fork, now, networks)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "pkm_keys_pkey" {
			return fmt.Errorf("a key is already stored: %w", store.ErrKeyExists)
		}
		return fmt.Errorf("insert keys: %w", err)
	}
	return nil
}

// checkAbsent fails with store.ErrKeyExists when any of keys is stored.
func checkAbsent(ctx context.Context, tx pgx.Tx, keys []store.NewKey) error {
	pks := make([][]byte, len(keys))
	for i := range keys {
		pks[i] = keys[i].Pubkey[:]
	}
	var found []byte
	err := tx.QueryRow(ctx, `SELECT pubkey FROM pkm_keys WHERE pubkey = ANY($1::bytea[]) ORDER BY pubkey LIMIT 1`, pks).Scan(&found)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up keys: %w", err)
	}
	return fmt.Errorf("key %s: %w", store.Pubkey(found), store.ErrKeyExists)
}

// AddAssigned inserts minted keys for a pod; see store.Store.
func (s *Store) AddAssigned(ctx context.Context, p store.AddParams) (store.Claim, error) {
	now := micros(p.Now)
	var res store.Claim
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		res = store.Claim{}
		pd, err := lockPod(ctx, tx, p.Pod, p.PodUID)
		if err != nil {
			return false, err
		}
		if p.ReserveToken != "" && !pd.res.OwnedBy(p.ReserveToken) {
			return false, fmt.Errorf("add keys for pod %s: %w", p.Pod, store.ErrReservationLost)
		}
		uid, fillIn, err := store.PodUID("add keys for", p.Pod, pd.state(), store.PodCall{UID: p.PodUID, Token: p.ReserveToken, Now: now, StrictUID: p.StrictUID})
		if err != nil {
			return false, err
		}
		if err := checkAbsent(ctx, tx, p.Keys); err != nil {
			return false, err
		}
		if err := pd.setUID(ctx, tx, uid, fillIn, now); err != nil {
			return false, err
		}
		live, reserved, err := pd.fulfil(ctx, tx, "add keys for", p.ReserveToken, now)
		if err != nil {
			return false, err
		}
		lack := p.Want - len(pd.assigned) - len(pd.pending) - reserved
		rows := make([]newRow, len(p.Keys))
		for i := range p.Keys {
			rows[i] = newRow{key: &p.Keys[i], state: store.StateAvailable}
			if i < lack {
				rows[i] = newRow{key: &p.Keys[i], state: store.StateAssigned, pod: p.Pod, podUID: uid, lastPod: p.Pod}
				pd.assigned = append(pd.assigned, store.Key{
					Pubkey: p.Keys[i].Pubkey, State: store.StateAssigned, Origin: p.Keys[i].Origin,
					DerivationIndex: p.Keys[i].DerivationIndex, HasDerivationIndex: p.Keys[i].HasDerivationIndex,
					Pod: p.Pod, PodUID: uid, LastPod: p.Pod, Since: now, CreatedAt: now,
					SealedSecret: bytes.Clone(p.Keys[i].SealedSecret),
				})
			}
		}
		if err := insertKeys(ctx, tx, rows, now); err != nil {
			return false, err
		}
		if err := recordMint(ctx, tx, &p); err != nil {
			return false, err
		}
		sortKeys(pd.assigned)
		res = pd.result(p.Want, live)
		return true, nil
	})
	if err != nil {
		return store.Claim{}, fmt.Errorf("add keys for pod %s: %w", p.Pod, wrapCtx(ctx, err))
	}
	return res, nil
}

// recordMint appends p's AuditMint event, if it has one, in tx.
func recordMint(ctx context.Context, tx pgx.Tx, p *store.AddParams) error {
	e, ok := p.MintEvent(store.ActorFrom(ctx))
	if !ok {
		return nil
	}
	err := appendAudit(ctx, tx, e)
	return err
}

// AddPending inserts minted keys as pending-deposit; see store.Store.
func (s *Store) AddPending(ctx context.Context, p store.AddParams) error {
	now := micros(p.Now)
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		lack, uid := 0, ""
		if p.Pod != "" {
			pd, err := lockPod(ctx, tx, p.Pod, p.PodUID)
			if err != nil {
				return false, err
			}
			if p.ReserveToken != "" && !pd.res.OwnedBy(p.ReserveToken) {
				return false, fmt.Errorf("add pending keys for pod %s: %w", p.Pod, store.ErrReservationLost)
			}
			var fillIn bool
			if uid, fillIn, err = store.PodUID("add pending keys for", p.Pod, pd.state(), store.PodCall{UID: p.PodUID, Token: p.ReserveToken, Now: now, StrictUID: p.StrictUID}); err != nil {
				return false, err
			}
			if err := pd.setUID(ctx, tx, uid, fillIn, now); err != nil {
				return false, err
			}
			_, reserved, err := pd.fulfil(ctx, tx, "add pending keys for", p.ReserveToken, now)
			if err != nil {
				return false, err
			}
			lack = p.Want - len(pd.assigned) - len(pd.pending) - reserved
		}
		if err := checkAbsent(ctx, tx, p.Keys); err != nil {
			return false, err
		}
		rows := make([]newRow, len(p.Keys))
		for i := range p.Keys {
			rows[i] = newRow{key: &p.Keys[i], state: store.StatePendingDeposit}
			if i < lack {
				rows[i].pod, rows[i].podUID = p.Pod, uid
			}
		}
		if err := insertKeys(ctx, tx, rows, now); err != nil {
			return false, err
		}
		return true, recordMint(ctx, tx, &p)
	})
	if err != nil {
		return fmt.Errorf("add pending keys: %w", wrapCtx(ctx, err))
	}
	return nil
}

// AddKeys inserts keys into the pool; see store.Store.
func (s *Store) AddKeys(ctx context.Context, keys []store.NewKey, state store.State, now time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	t := micros(now)
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		if err := checkAbsent(ctx, tx, keys); err != nil {
			return false, err
		}
		rows := make([]newRow, len(keys))
		for i := range keys {
			rows[i] = newRow{key: &keys[i], state: state}
		}
		return true, insertKeys(ctx, tx, rows, t)
	})
	if err != nil {
		return fmt.Errorf("add keys: %w", wrapCtx(ctx, err))
	}
	return nil
}

// Release moves a pod's keys to cooling-down; see store.Store.
func (s *Store) Release(ctx context.Context, p store.ReleaseParams) (int, error) {
	now, until := micros(p.Now), micros(p.Until)
	actor := store.ActorFrom(ctx)
	var n int
	err := s.tx(ctx, func(tx pgx.Tx) (bool, error) {
		n = 0
		var (
			rowUID   string
			resToken *string
			resCount *int32
			resUntil *time.Time
		)
		err := tx.QueryRow(ctx, `SELECT uid, res_token, res_count, res_until FROM pkm_pods WHERE name = $1 FOR UPDATE`,
			p.Pod).Scan(&rowUID, &resToken, &resCount, &resUntil)
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Errorf("lock pod: %w", err)
		}
		eventUID := p.PodUID
		var moved [][]byte
		if exists {
			ps := store.PodState{UID: rowUID}
			if resToken != nil && resCount != nil && resUntil != nil {
				ps.Res = &store.Reservation{Token: *resToken, Count: int(*resCount), Until: resUntil.UTC()}
			}
			var held bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pkm_keys WHERE pod = $1)`, p.Pod).Scan(&held); err != nil {
				return false, fmt.Errorf("read pod: %w", err)
			}
			if held {
				ps.Held = 1
			}
			pc := store.PodCall{UID: p.PodUID, Now: now, ExactUID: p.ExactUID}
			if _, _, err := store.PodUID("release", p.Pod, ps, pc); err != nil {
				return false, err
			}
			if ps.Holds(pc) {
				eventUID = rowUID
			}
			if err := mergeProtections(ctx, tx, p.Pod, p.Protection); err != nil {
				return false, err
			}
			rows, err := tx.Query(ctx, `UPDATE pkm_keys SET state = 'cooling-down', cooling_until = $2,
					released_at = $3, since = $3, last_pod = $1, pod = NULL, pod_uid = NULL
				WHERE pod = $1 AND state = 'assigned' RETURNING pubkey`, p.Pod, until, now)
			if err != nil {
				return false, fmt.Errorf("release keys: %w", err)
			}
			if moved, err = pgx.CollectRows(rows, pgx.RowTo[[]byte]); err != nil {
				return false, fmt.Errorf("release keys: %w", err)
			}
			prow, err := tx.Query(ctx, `UPDATE pkm_keys SET pod = NULL, pod_uid = NULL, last_pod = $1
				WHERE pod = $1 AND state = 'pending-deposit' RETURNING pubkey`, p.Pod)
			if err != nil {
				return false, fmt.Errorf("release pending keys: %w", err)
			}
			spares, err := pgx.CollectRows(prow, pgx.RowTo[[]byte])
			if err != nil {
				return false, fmt.Errorf("release pending keys: %w", err)
			}
			n = len(moved)
			moved = append(moved, spares...)
			// Deleting the row drops the pod's reservation too.
			if _, err := tx.Exec(ctx, `DELETE FROM pkm_pods WHERE name = $1`, p.Pod); err != nil {
				return false, fmt.Errorf("drop pod: %w", err)
			}
		}
		slices.SortFunc(moved, bytes.Compare)
		if eventUID == "" {
			eventUID = p.PodUID
		}
		if err := appendAudit(ctx, tx, store.AuditEvent{
			Time: now, Action: store.AuditRelease, Pod: p.Pod, PodUID: eventUID, Pubkeys: toPubkeys(moved), Reason: p.Reason, Actor: actor,
		}); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("release pod %s: %w", p.Pod, wrapCtx(ctx, err))
	}
	return n, nil
}

func toPubkeys(b [][]byte) []store.Pubkey {
	out := make([]store.Pubkey, 0, len(b))
	for _, pk := range b {
		out = append(out, store.Pubkey(pk))
	}
	return out
}

// RenewReservation moves the expiry of a pod's mint reservation; see
// store.Store. One statement: the update locks the pod's row.
func (s *Store) RenewReservation(ctx context.Context, pod, token string, until time.Time) error {
	return s.changeReservation(ctx, "renew", `UPDATE pkm_pods SET res_until = $3 WHERE name = $1 AND res_token = $2`,
		pod, token, micros(until))
}

// ReleaseReservation deletes a pod's mint reservation; see store.Store.
// The pod's row stays (a row without keys or reservation is harmless; a
// claim that inserts a pod's row deletes it again when it changes nothing).
func (s *Store) ReleaseReservation(ctx context.Context, pod, token string) error {
	return s.changeReservation(ctx, "release", `UPDATE pkm_pods SET res_token = NULL, res_count = NULL, res_until = NULL
		WHERE name = $1 AND res_token = $2`, pod, token)
}

// changeReservation runs one update of the row of the pod's reservation
// held under token ($1 pod, $2 token), retried like a transaction; no row
// means the reservation is lost.
func (s *Store) changeReservation(ctx context.Context, op, sql string, args ...any) error {
	var (
		n   int64
		err error
	)
	for attempt := 1; ; attempt++ {
		var tag pgconn.CommandTag
		tag, err = s.pool.Exec(ctx, sql, args...)
		n = tag.RowsAffected()
		if err == nil || !retryable(err) || attempt == maxAttempts || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt) * 2 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("%s mint reservation of pod %s: %w", op, args[0], wrapCtx(ctx, err))
	}
	if n == 0 {
		return fmt.Errorf("%s mint reservation of pod %s: %w", op, args[0], store.ErrReservationLost)
	}
	return nil
}
