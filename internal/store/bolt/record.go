package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Key records are a compact binary encoding, decoded on every listing, so
// that walking 100,000 keys stays cheap:
//
//	offset size
//	0      1    record version (recordV1; schema 2 still writes version 1)
//	1      1    state code (stateCodes; deposit-failed, code 6, is new in schema 2;
//	            still-signing, code 7, in schema 5; exiting, code 8, in schema 6)
//	2      1    origin code (originCodes)
//	3      1    flags (flagHasDerivationIndex)
//	4      4    derivation index, big-endian
//	8      8    Since         \
//	16     8    CoolingUntil   | microseconds since the Unix epoch, big-endian
//	24     8    ReleasedAt     | two's complement; noTime for the zero Time
//	32     8    CreatedAt     /
//	40     ...  Pod, PodUID, LastPod, RetiredReason: uvarint length + bytes each
//
// The pubkey is the record's bucket key and is not repeated in the value.
const (
	recordV1             = 1
	recordFixedLen       = 40
	offState             = 1
	flagHasDerivationIdx = 1 << 0
)

// noTime encodes the zero time.Time; no valid time (years 1 to 9999) maps to it.
const noTime = math.MinInt64

var errCorrupt = errors.New("corrupt store record")

// numStates is the number of key states, and of counters in the meta bucket.
const numStates = 8

// State and origin codes; 0 is never used so that a zeroed record is invalid.
// Codes are only ever appended: a code, once written, keeps its meaning.
var (
	stateCodes = map[store.State]byte{
		store.StatePendingDeposit: 1,
		store.StateAvailable:      2,
		store.StateAssigned:       3,
		store.StateCoolingDown:    4,
		store.StateRetired:        5,
		store.StateDepositFailed:  6,
		store.StateStillSigning:   7,
		store.StateExiting:        8,
	}
	stateByCode = [numStates + 1]store.State{"", store.StatePendingDeposit, store.StateAvailable, store.StateAssigned, store.StateCoolingDown, store.StateRetired, store.StateDepositFailed, store.StateStillSigning, store.StateExiting}

	originCodes = map[store.Origin]byte{
		store.OriginRandom:   1,
		store.OriginDerived:  2,
		store.OriginImported: 3,
	}
	originByCode = [...]store.Origin{"", store.OriginRandom, store.OriginDerived, store.OriginImported}
)

// stateIndex is the position of a state's counter in the meta bucket: its
// code minus one, which is also its position in store.States.
func stateIndex(s store.State) int { return int(stateCodes[s]) - 1 }

func init() {
	if len(store.States) != numStates || len(stateCodes) != numStates {
		panic("bolt: the store defines states this backend has no code for")
	}
	for i, st := range store.States {
		if stateIndex(st) != i {
			panic("bolt: state codes are not in store.States order")
		}
	}
}

// micros encodes t as microseconds since the Unix epoch, truncated (floor).
func micros(t time.Time) int64 {
	if t.IsZero() {
		return noTime
	}
	return t.UnixMicro()
}

// fromMicros decodes micros.
func fromMicros(v int64) time.Time {
	if v == noTime {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// record is the stored form of a key (without pubkey, secret and deposit).
// Times are kept as encoded microseconds so that index keys are derived
// exactly from what is stored.
type record struct {
	state         store.State
	origin        store.Origin
	derivIndex    uint32
	hasDerivIndex bool
	since         int64
	coolingUntil  int64
	releasedAt    int64
	createdAt     int64
	pod           string
	podUID        string
	lastPod       string
	retiredReason string
}

// encode returns a newly allocated encoding of r (bbolt keeps the slice
// until the transaction commits, so it is never reused).
func (r *record) encode() []byte {
	n := recordFixedLen + 4*binary.MaxVarintLen64 + len(r.pod) + len(r.podUID) + len(r.lastPod) + len(r.retiredReason)
	b := make([]byte, recordFixedLen, n)
	b[0] = recordV1
	b[1] = stateCodes[r.state]
	b[2] = originCodes[r.origin]
	if r.hasDerivIndex {
		b[3] |= flagHasDerivationIdx
	}
	binary.BigEndian.PutUint32(b[4:], r.derivIndex)
	binary.BigEndian.PutUint64(b[8:], uint64(r.since))
	binary.BigEndian.PutUint64(b[16:], uint64(r.coolingUntil))
	binary.BigEndian.PutUint64(b[24:], uint64(r.releasedAt))
	binary.BigEndian.PutUint64(b[32:], uint64(r.createdAt))
	for _, s := range [...]string{r.pod, r.podUID, r.lastPod, r.retiredReason} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// decodeRecord parses an encoded record. It copies what it keeps, so b may
// be memory owned by a bbolt transaction.
func decodeRecord(b []byte) (record, error) { return decodeRecordLike(b, nil) }

// decodeRecordLike is decodeRecord sharing the strings of like (when not
// nil) that are equal to the record's instead of copying them again, and
// the pod's for an equal last pod: a listing of many keys of one pod (or
// of a few) allocates its names once.
func decodeRecordLike(b []byte, like *record) (record, error) {
	var r record
	if len(b) < recordFixedLen {
		return r, fmt.Errorf("%w: key record has %d bytes", errCorrupt, len(b))
	}
	if b[0] != recordV1 {
		return r, fmt.Errorf("%w: key record version %d", errCorrupt, b[0])
	}
	if int(b[1]) >= len(stateByCode) || b[1] == 0 {
		return r, fmt.Errorf("%w: state code %d", errCorrupt, b[1])
	}
	if int(b[2]) >= len(originByCode) || b[2] == 0 {
		return r, fmt.Errorf("%w: origin code %d", errCorrupt, b[2])
	}
	r.state = stateByCode[b[1]]
	r.origin = originByCode[b[2]]
	r.hasDerivIndex = b[3]&flagHasDerivationIdx != 0
	r.derivIndex = binary.BigEndian.Uint32(b[4:])
	r.since = int64(binary.BigEndian.Uint64(b[8:]))
	r.coolingUntil = int64(binary.BigEndian.Uint64(b[16:]))
	r.releasedAt = int64(binary.BigEndian.Uint64(b[24:]))
	r.createdAt = int64(binary.BigEndian.Uint64(b[32:]))
	rest := b[recordFixedLen:]
	var same [4]string
	if like != nil {
		same = [...]string{like.pod, like.podUID, like.lastPod, like.retiredReason}
	}
	for i, dst := range [...]*string{&r.pod, &r.podUID, &r.lastPod, &r.retiredReason} {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return r, fmt.Errorf("%w: bad string field", errCorrupt)
		}
		if n > 0 {
			switch v := rest[w : w+int(n)]; {
			case string(v) == same[i]:
				*dst = same[i]
			case dst == &r.lastPod && string(v) == r.pod:
				*dst = r.pod
			default:
				*dst = string(v)
			}
		}
		rest = rest[w+int(n):]
	}
	if len(rest) != 0 {
		return r, fmt.Errorf("%w: %d trailing bytes in key record", errCorrupt, len(rest))
	}
	return r, nil
}

// key converts r to the public form (SealedSecret and Deposit unset).
func (r *record) key(pk store.Pubkey) store.Key {
	return store.Key{
		Pubkey:             pk,
		State:              r.state,
		Origin:             r.origin,
		DerivationIndex:    r.derivIndex,
		HasDerivationIndex: r.hasDerivIndex,
		Pod:                r.pod,
		PodUID:             r.podUID,
		LastPod:            r.lastPod,
		Since:              fromMicros(r.since),
		CoolingUntil:       fromMicros(r.coolingUntil),
		ReleasedAt:         fromMicros(r.releasedAt),
		RetiredReason:      r.retiredReason,
		CreatedAt:          fromMicros(r.createdAt),
	}
}

// Slashing-protection watermarks: version byte, flags (1: block, 2:
// attestation), block slot, source epoch, target epoch (8 bytes each,
// big-endian).
const (
	protectionV1  = 1
	protectionLen = 2 + 3*8
)

func encodeProtection(p store.Protection) []byte {
	b := make([]byte, protectionLen)
	b[0] = protectionV1
	if p.HasBlock {
		b[1] |= 1
	}
	if p.HasAttestation {
		b[1] |= 2
	}
	binary.BigEndian.PutUint64(b[2:], p.BlockSlot)
	binary.BigEndian.PutUint64(b[10:], p.SourceEpoch)
	binary.BigEndian.PutUint64(b[18:], p.TargetEpoch)
	return b
}

func decodeProtection(b []byte) (*store.Protection, error) {
	if len(b) != protectionLen || b[0] != protectionV1 || b[1]&^3 != 0 {
		return nil, fmt.Errorf("%w: slashing protection of %d bytes", errCorrupt, len(b))
	}
	return &store.Protection{
		HasBlock: b[1]&1 != 0, BlockSlot: binary.BigEndian.Uint64(b[2:]),
		HasAttestation: b[1]&2 != 0, SourceEpoch: binary.BigEndian.Uint64(b[10:]), TargetEpoch: binary.BigEndian.Uint64(b[18:]),
	}, nil
}

// Deposit data encoding: version byte, then the fixed-size fields in
// declaration order (withdrawal credentials 32, amount 8 big-endian,
// signature 96, message root 32, data root 32, fork version 4), then the
// network name as uvarint length + bytes.
const (
	depositV1       = 1
	depositFixedLen = 1 + 32 + 8 + 96 + 32 + 32 + 4
)

func encodeDeposit(d *store.DepositData) []byte {
	b := make([]byte, 0, depositFixedLen+binary.MaxVarintLen64+len(d.NetworkName))
	b = append(b, depositV1)
	b = append(b, d.WithdrawalCredentials[:]...)
	b = binary.BigEndian.AppendUint64(b, d.AmountGwei)
	b = append(b, d.Signature[:]...)
	b = append(b, d.DepositMessageRoot[:]...)
	b = append(b, d.DepositDataRoot[:]...)
	b = append(b, d.ForkVersion[:]...)
	b = binary.AppendUvarint(b, uint64(len(d.NetworkName)))
	return append(b, d.NetworkName...)
}

// decodeDeposit parses an encoded deposit. When name is not nil it holds
// the network name of the previous deposit decoded, which is reused (and
// updated) so that a listing does not allocate the same name per key.
func decodeDeposit(b []byte, name *string) (*store.DepositData, error) {
	if len(b) < depositFixedLen || b[0] != depositV1 {
		return nil, fmt.Errorf("%w: deposit record of %d bytes", errCorrupt, len(b))
	}
	d := new(store.DepositData)
	p := b[1:]
	p = p[copy(d.WithdrawalCredentials[:], p):]
	d.AmountGwei = binary.BigEndian.Uint64(p)
	p = p[8:]
	p = p[copy(d.Signature[:], p):]
	p = p[copy(d.DepositMessageRoot[:], p):]
	p = p[copy(d.DepositDataRoot[:], p):]
	p = p[copy(d.ForkVersion[:], p):]
	n, w := binary.Uvarint(p)
	if w <= 0 || n != uint64(len(p)-w) {
		return nil, fmt.Errorf("%w: deposit network name", errCorrupt)
	}
	switch {
	case name == nil:
		d.NetworkName = string(p[w:])
	case *name == string(p[w:]): // no allocation
		d.NetworkName = *name
	default:
		d.NetworkName = string(p[w:])
		*name = d.NetworkName
	}
	return d, nil
}

// Index keys. Signed microseconds are stored with the sign bit flipped so
// that big-endian byte order is numeric order.
func putSortable(b []byte, v int64) { binary.BigEndian.PutUint64(b, uint64(v)^(1<<63)) }
func getSortable(b []byte) int64    { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// availKey is the key of an available key in the avail index, ordered as
// Claim takes keys: released keys by ReleasedAt, then never-released keys;
// ties by CreatedAt, then pubkey.
//
//	[0] 0 = released, 1 = never released | [1:9] ReleasedAt | [9:17] CreatedAt | [17:65] pubkey
func availKey(pk store.Pubkey, r *record) []byte {
	b := make([]byte, 1+8+8+store.PubkeyLength)
	if r.releasedAt == noTime {
		b[0] = 1
		putSortable(b[1:], 0)
	} else {
		putSortable(b[1:], r.releasedAt)
	}
	putSortable(b[9:], r.createdAt)
	copy(b[17:], pk[:])
	return b
}

func availPubkey(k []byte) (store.Pubkey, error) {
	var pk store.Pubkey
	if len(k) != 1+8+8+store.PubkeyLength {
		return pk, fmt.Errorf("%w: available index key of %d bytes", errCorrupt, len(k))
	}
	copy(pk[:], k[17:])
	return pk, nil
}

// coolingKey is the key of a cooling-down key in the cooling index:
//
//	[0:8] CoolingUntil | [8:56] pubkey
func coolingKey(pk store.Pubkey, until int64) []byte {
	b := make([]byte, 8+store.PubkeyLength)
	putSortable(b, until)
	copy(b[8:], pk[:])
	return b
}

func parseCoolingKey(k []byte) (until int64, pk store.Pubkey, err error) {
	if len(k) != 8+store.PubkeyLength {
		return 0, pk, fmt.Errorf("%w: cooling index key of %d bytes", errCorrupt, len(k))
	}
	copy(pk[:], k[8:])
	return getSortable(k), pk, nil
}

// podEntry is a pod's value in the pods bucket: its UID, its assigned keys
// and the pending-deposit keys intended for it, each list in pubkey order.
// A pod has an entry exactly when one of the lists is not empty or it has a
// reservation (res, kept in the reserve bucket; not part of the encoding).
//
//	schema 2: uvarint len(uid) | uid | uvarint len(keys) | 48 bytes per
//	          assigned pubkey | 48 bytes per pending pubkey
//	schema 1: uvarint len(uid) | uid | 48 bytes per assigned pubkey
type podEntry struct {
	uid     string
	keys    []store.Pubkey // assigned
	pending []store.Pubkey // pending-deposit, intended for the pod

	res      *reservation // the pod's reservation, nil for none
	resDirty bool         // res changed: putPod writes the reserve bucket
}

// setRes replaces the pod's reservation (nil deletes it).
func (e *podEntry) setRes(r *reservation) {
	e.res, e.resDirty = r, true
}

// size is the number of keys the pod counts as held.
func (e *podEntry) size() int { return len(e.keys) + len(e.pending) }

func (e *podEntry) encode() []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(e.uid)+e.size()*store.PubkeyLength)
	b = binary.AppendUvarint(b, uint64(len(e.uid)))
	b = append(b, e.uid...)
	b = binary.AppendUvarint(b, uint64(len(e.keys)))
	for i := range e.keys {
		b = append(b, e.keys[i][:]...)
	}
	for i := range e.pending {
		b = append(b, e.pending[i][:]...)
	}
	return b
}

func decodePodEntry(b []byte) (podEntry, error) {
	var e podEntry
	uid, na, keys, err := splitPodEntry(b)
	if err != nil {
		return e, err
	}
	e.uid = string(uid)
	all := pubkeys(keys)
	e.keys, e.pending = all[:na:na], all[na:]
	return e, nil
}

// decodePodEntryV1 parses a schema 1 pod entry (no pending keys).
func decodePodEntryV1(b []byte) (podEntry, error) {
	var e podEntry
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) || (uint64(len(b)-w)-n)%store.PubkeyLength != 0 {
		return e, fmt.Errorf("%w: schema 1 pod entry of %d bytes", errCorrupt, len(b))
	}
	e.uid = string(b[w : w+int(n)])
	e.keys = pubkeys(b[w+int(n):])
	return e, nil
}

// reservation is a pod's mint reservation, the value of its entry in the
// reserve bucket:
//
//	version (resV1) | Until 8 (micros, sortable) | uvarint count | token (the rest)
type reservation struct {
	token string
	count int
	until int64 // micros
}

const resV1 = 1

// live reports whether the reservation holds other callers back at now.
func (r *reservation) live(now int64) bool { return r != nil && now < r.until }

// ownedBy reports whether the reservation is held under the non-empty token.
func (r *reservation) ownedBy(token string) bool { return r != nil && token != "" && r.token == token }

func (r *reservation) encode() []byte {
	b := make([]byte, 9, 9+binary.MaxVarintLen64+len(r.token))
	b[0] = resV1
	putSortable(b[1:], r.until)
	b = binary.AppendUvarint(b, uint64(r.count))
	return append(b, r.token...)
}

func decodeReservation(b []byte) (*reservation, error) {
	if len(b) < 10 || b[0] != resV1 {
		return nil, fmt.Errorf("%w: reservation of %d bytes", errCorrupt, len(b))
	}
	n, w := binary.Uvarint(b[9:])
	if w <= 0 || n < 1 || n > math.MaxInt32 || len(b) == 9+w {
		return nil, fmt.Errorf("%w: reservation of %d bytes", errCorrupt, len(b))
	}
	return &reservation{until: getSortable(b[1:]), count: int(n), token: string(b[9+w:])}, nil
}

// pubkeys splits b (a multiple of 48 bytes) into pubkeys.
func pubkeys(b []byte) []store.Pubkey {
	out := make([]store.Pubkey, len(b)/store.PubkeyLength)
	for i := range out {
		copy(out[i][:], b[i*store.PubkeyLength:])
	}
	return out
}

// Deposit transaction encoding, in the txs bucket under the key's pubkey:
//
//	version (txV1) | nonce 8 | hash 32 | block 8 | RecordedAt 8 (micros) | raw (the rest)
const (
	txV1       = 1
	txFixedLen = 1 + 8 + 32 + 8 + 8
)

func encodeTx(tx *store.DepositTx) []byte {
	b := make([]byte, 0, txFixedLen+len(tx.Raw))
	b = append(b, txV1)
	b = binary.BigEndian.AppendUint64(b, tx.Nonce)
	b = append(b, tx.Hash[:]...)
	b = binary.BigEndian.AppendUint64(b, tx.Block)
	b = binary.BigEndian.AppendUint64(b, uint64(micros(tx.RecordedAt)))
	return append(b, tx.Raw...)
}

func decodeTx(b []byte) (*store.DepositTx, error) {
	if len(b) < txFixedLen || b[0] != txV1 {
		return nil, fmt.Errorf("%w: deposit transaction record of %d bytes", errCorrupt, len(b))
	}
	tx := &store.DepositTx{Nonce: binary.BigEndian.Uint64(b[1:])}
	copy(tx.Hash[:], b[9:41])
	tx.Block = binary.BigEndian.Uint64(b[41:])
	tx.RecordedAt = fromMicros(int64(binary.BigEndian.Uint64(b[49:])))
	if len(b) > txFixedLen {
		tx.Raw = bytes.Clone(b[txFixedLen:])
	}
	return tx, nil
}

// Audit events, in the audit bucket under their big-endian Seq:
//
//	version (auditV1) | Time 8 (micros) | uvarint len(Pubkeys) | 48 bytes per
//	pubkey | Action, Pod, PodUID, Reason, Actor: uvarint length + bytes each
const auditV1 = 1

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func encodeAudit(e *store.AuditEvent) []byte {
	b := make([]byte, 0, 1+8+binary.MaxVarintLen64*6+len(e.Pubkeys)*store.PubkeyLength+
		len(e.Action)+len(e.Pod)+len(e.PodUID)+len(e.Reason)+len(e.Actor))
	b = append(b, auditV1)
	b = binary.BigEndian.AppendUint64(b, uint64(micros(e.Time)))
	b = binary.AppendUvarint(b, uint64(len(e.Pubkeys)))
	for i := range e.Pubkeys {
		b = append(b, e.Pubkeys[i][:]...)
	}
	for _, s := range [...]string{e.Action, e.Pod, e.PodUID, e.Reason, e.Actor} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func decodeAudit(k, v []byte) (store.AuditEvent, error) {
	var e store.AuditEvent
	if len(k) != 8 || len(v) < 1+8 || v[0] != auditV1 {
		return e, fmt.Errorf("%w: audit event of %d bytes under a key of %d bytes", errCorrupt, len(v), len(k))
	}
	e.Seq = binary.BigEndian.Uint64(k)
	e.Time = fromMicros(int64(binary.BigEndian.Uint64(v[1:])))
	rest := v[9:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || n > uint64(len(rest)-w)/store.PubkeyLength {
		return e, fmt.Errorf("%w: audit event %d: bad pubkey list", errCorrupt, e.Seq)
	}
	if n > 0 {
		e.Pubkeys = pubkeys(rest[w : w+int(n)*store.PubkeyLength])
	}
	rest = rest[w+int(n)*store.PubkeyLength:]
	for _, dst := range [...]*string{&e.Action, &e.Pod, &e.PodUID, &e.Reason, &e.Actor} {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return e, fmt.Errorf("%w: audit event %d: bad string field", errCorrupt, e.Seq)
		}
		*dst = string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
	}
	if len(rest) != 0 {
		return e, fmt.Errorf("%w: audit event %d: %d trailing bytes", errCorrupt, e.Seq, len(rest))
	}
	return e, nil
}
