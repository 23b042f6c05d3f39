package postgres

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Column lists of pkm_keys. keyCols is everything but the secret and the
// deposit; the others are appended when wanted.
const (
	keyCols = `pubkey, state, origin, derivation_index, pod, pod_uid, last_pod,
		since, cooling_until, released_at, retired_reason, created_at`
	secretCol  = `sealed_secret`
	depositCol = `dep_withdrawal_credentials, dep_amount_gwei, dep_signature, dep_message_root,
		dep_data_root, dep_fork_version, dep_network,
		tx_nonce, tx_hash, tx_raw, tx_block, tx_recorded_at,
		sp_block_slot, sp_source_epoch, sp_target_epoch`
)

// cols returns the select list for the parts wanted, prefixed with alias
// (e.g. "k.") when given.
func cols(alias string, secret, deposit bool) string {
	c := keyCols
	if secret {
		c += ", " + secretCol
	}
	if deposit {
		c += ", " + depositCol
	}
	if alias == "" {
		return c
	}
	return prefixed(alias, c)
}

// prefixed returns the column list c with alias before each column.
func prefixed(alias, c string) string {
	out := ""
	for i, part := range splitCols(c) {
		if i > 0 {
			out += ", "
		}
		out += alias + part
	}
	return out
}

func splitCols(c string) []string {
	var out []string
	cur := ""
	for _, r := range c {
		switch r {
		case ',':
			out = append(out, cur)
			cur = ""
		case ' ', '\n', '\t':
		default:
			cur += string(r)
		}
	}
	return append(out, cur)
}

// keyRow receives one row of the columns above. A listing scans every row
// into one keyRow (its dest taken once): the key columns are scanned
// without allocating, the pod columns' strings once per name (names).
type keyRow struct {
	pubkey                         pubkeyCol
	state, origin                  knownText
	derivIndex                     pgtype.Int8
	pod, podUID, lastPod           nameCol
	since                          time.Time
	coolingUntil, releasedAt       pgtype.Timestamptz
	retiredReason                  string
	createdAt                      time.Time
	sealed                         []byte
	depWC, depSig, depMsg, depData []byte
	depFork                        []byte
	depAmount                      *int64
	depNetwork                     *string
	txNonce, txBlock               *int64
	txHash, txRaw                  []byte
	txRecordedAt                   *time.Time
	spBlock, spSource, spTarget    *int64
	// names, when set (a listing, sharesNames), holds the pod names and
	// UIDs scanned so far, at most maxNames, so that the keys of one pod
	// share their strings.
	names map[string]string
}

// maxNames bounds keyRow.names.
const maxNames = 1 << 14

// nameCol receives a text column of names (pod, pod_uid, last_pod; NULL
// is "") into s, the string shared with earlier rows that had the same
// name.
type nameCol struct {
	s     string
	names *map[string]string
}

func (c *nameCol) ScanBytes(v []byte) error {
	if s, ok := (*c.names)[string(v)]; ok {
		c.s = s
		return nil
	}
	c.s = string(v)
	if *c.names != nil && len(*c.names) < maxNames {
		(*c.names)[c.s] = c.s
	}
	return nil
}

// pubkeyCol receives a bytea public key into an array (pgtype.BytesScanner:
// no copy on the heap); n is the length scanned, which keyRow.key checks.
type pubkeyCol struct {
	b store.Pubkey
	n int
}

func (c *pubkeyCol) ScanBytes(v []byte) error {
	c.n = copy(c.b[:], v)
	if len(v) > len(c.b) {
		c.n = len(v)
	}
	return nil
}

// knownText receives a text column whose values are a few constants (a
// key's state and origin): those are scanned without allocating a string.
type knownText string

// knownTexts are the constants knownText recognises.
var knownTexts = func() []string {
	out := []string{string(store.OriginRandom), string(store.OriginDerived), string(store.OriginImported)}
	for _, st := range store.States {
		out = append(out, string(st))
	}
	return out
}()

func (t *knownText) ScanBytes(v []byte) error {
	for _, k := range knownTexts {
		if string(v) == k {
			*t = knownText(k)
			return nil
		}
	}
	*t = knownText(v)
	return nil
}

func (r *keyRow) dest(secret, deposit bool) []any {
	r.pod.names, r.podUID.names, r.lastPod.names = &r.names, &r.names, &r.names
	d := []any{&r.pubkey, &r.state, &r.origin, &r.derivIndex, &r.pod, &r.podUID, &r.lastPod,
		&r.since, &r.coolingUntil, &r.releasedAt, &r.retiredReason, &r.createdAt}
	if secret {
		d = append(d, &r.sealed)
	}
	if deposit {
		d = append(d, &r.depWC, &r.depAmount, &r.depSig, &r.depMsg, &r.depData, &r.depFork, &r.depNetwork,
			&r.txNonce, &r.txHash, &r.txRaw, &r.txBlock, &r.txRecordedAt,
			&r.spBlock, &r.spSource, &r.spTarget)
	}
	return d
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// sharesNames makes the rows scanned into r share the strings of equal
// names (keyRow.names): for a listing, which scans many rows into one.
func (r *keyRow) sharesNames() *keyRow {
	r.names = make(map[string]string)
	return r
}

// utcOf returns t in UTC, the zero time for NULL.
func utcOf(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

func (r *keyRow) key(secret, deposit bool) (store.Key, error) {
	var k store.Key
	if r.pubkey.n != store.PubkeyLength {
		return k, fmt.Errorf("pkm_keys row with a %d-byte pubkey", r.pubkey.n)
	}
	k.Pubkey = r.pubkey.b
	k.State = store.State(r.state)
	k.Origin = store.Origin(r.origin)
	if r.derivIndex.Valid {
		k.DerivationIndex, k.HasDerivationIndex = uint32(r.derivIndex.Int64), true
	}
	k.Pod = r.pod.s
	k.PodUID = r.podUID.s
	k.LastPod = r.lastPod.s
	k.Since = r.since.UTC()
	k.CoolingUntil = utcOf(r.coolingUntil)
	k.ReleasedAt = utcOf(r.releasedAt)
	k.RetiredReason = r.retiredReason
	k.CreatedAt = r.createdAt.UTC()
	if secret {
		k.SealedSecret = r.sealed
	}
	if deposit {
		if r.depSig != nil {
			d := &store.DepositData{AmountGwei: uint64(*r.depAmount), NetworkName: *r.depNetwork}
			if len(r.depWC) != 32 || len(r.depSig) != 96 || len(r.depMsg) != 32 || len(r.depData) != 32 || len(r.depFork) != 4 {
				return k, fmt.Errorf("key %s: malformed deposit data row", k.Pubkey)
			}
			copy(d.WithdrawalCredentials[:], r.depWC)
			copy(d.Signature[:], r.depSig)
			copy(d.DepositMessageRoot[:], r.depMsg)
			copy(d.DepositDataRoot[:], r.depData)
			copy(d.ForkVersion[:], r.depFork)
			k.Deposit = d
		}
		if r.txHash != nil {
			tx := &store.DepositTx{Nonce: uint64(*r.txNonce), Block: uint64(*r.txBlock), RecordedAt: utc(r.txRecordedAt)}
			if len(r.txHash) != 32 {
				return k, fmt.Errorf("key %s: malformed deposit transaction row", k.Pubkey)
			}
			copy(tx.Hash[:], r.txHash)
			if len(r.txRaw) > 0 {
				tx.Raw = r.txRaw
			}
			k.DepositTx = tx
		}
		if r.spBlock != nil || r.spSource != nil {
			p := &store.Protection{}
			if r.spBlock != nil {
				p.HasBlock, p.BlockSlot = true, uint64(*r.spBlock)
			}
			if r.spSource != nil && r.spTarget != nil {
				p.HasAttestation, p.SourceEpoch, p.TargetEpoch = true, uint64(*r.spSource), uint64(*r.spTarget)
			}
			k.Protection = p
		}
	}
	return k, nil
}

// scanKeys reads every row of rows into keys.
func scanKeys(rows pgx.Rows, secret, deposit bool) ([]store.Key, error) {
	defer rows.Close()
	var (
		out []store.Key
		r   keyRow
	)
	dest := r.sharesNames().dest(secret, deposit)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		k, err := r.key(secret, deposit)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// depositArgs returns the deposit columns' values of d (all nil for none).
func depositArgs(d *store.DepositData) []any {
	if d == nil {
		return []any{nil, nil, nil, nil, nil, nil, nil}
	}
	return []any{d.WithdrawalCredentials[:], int64(d.AmountGwei), d.Signature[:], d.DepositMessageRoot[:],
		d.DepositDataRoot[:], d.ForkVersion[:], d.NetworkName}
}

// txArgs returns the deposit transaction columns' values of t (all nil for none).
func txArgs(t *store.DepositTx) []any {
	if t == nil {
		return []any{nil, nil, nil, nil, nil}
	}
	raw := t.Raw
	if raw == nil {
		raw = []byte{}
	}
	return []any{int64(t.Nonce), t.Hash[:], raw, int64(t.Block), optTime(t.RecordedAt)}
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// protectionArgs are the sp_* column values of p (NULLs for none).
func protectionArgs(p *store.Protection) []any {
	var block, source, target *int64
	if p != nil && p.HasBlock {
		b := int64(p.BlockSlot)
		block = &b
	}
	if p != nil && p.HasAttestation {
		s, t := int64(p.SourceEpoch), int64(p.TargetEpoch)
		source, target = &s, &t
	}
	return []any{block, source, target}
}
