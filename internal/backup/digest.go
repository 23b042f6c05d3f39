// Package backup writes and reads pkmanager's backup files, and computes the
// digest that proves two stores (or a store and a file) hold the same keys.
//
// # File format (version 1)
//
//	pkmanager backup\n                     magic line
//	{"format":1,"kek_id":...,"salt":...}\n  header (JSON, in clear)
//	frames                                  the encrypted payload
//
// The header names the format version, the ID of the key-encryption key
// (KEK) the file needs, the cipher, the frame size and a random salt; it
// holds nothing secret. The payload is JSON lines: one per key (with its
// sealed secret, still encrypted with the KEK as in the store), then the
// rest of the store (bindings, next derivation index, audit trail), then an
// end record with the number of keys, the count per state and the digests.
//
// The payload is encrypted and authenticated as a whole with AES-256-GCM
// under a key derived from the KEK and the salt (seal.KEK.BackupKey), cut
// into frames of at most 1 MiB: each frame is a 4-byte big-endian length and
// the ciphertext; frame i uses nonce i and authenticates the header's
// SHA-256, i, and whether it is the last frame. So a file that was changed,
// reordered, cut short or extended, or read with another KEK, fails to
// open; on top, restore checks the end record's counts and digests against
// what it read and against the store it filled.
package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Summary describes a store's content: what migrate-store and restore
// compare between source and target.
type Summary struct {
	Keys   int                 `json:"keys"`
	Counts map[store.State]int `json:"counts"`
	// KeysDigest is SHA-256 over every field of every key (pubkey, state,
	// origin, derivation index, pod, UID, last pod, times, reason, sealed
	// secret, deposit data, deposit transaction), in pubkey order.
	KeysDigest string `json:"keys_digest"`
	// SnapshotDigest covers bindings, next derivation index and audit trail.
	SnapshotDigest string `json:"snapshot_digest"`
	NextIndex      uint32 `json:"next_index"`
	Bindings       int    `json:"bindings"`
	AuditEvents    int    `json:"audit_events"`
}

// Equal reports whether two summaries describe the same content.
func (s Summary) Equal(o Summary) bool {
	return s.Keys == o.Keys && maps.Equal(s.Counts, o.Counts) && s.KeysDigest == o.KeysDigest &&
		s.SnapshotDigest == o.SnapshotDigest && s.NextIndex == o.NextIndex &&
		s.Bindings == o.Bindings && s.AuditEvents == o.AuditEvents
}

// Diff describes how o differs from s ("" when Equal).
func (s Summary) Diff(o Summary) string {
	var b bytes.Buffer
	if s.Keys != o.Keys {
		fmt.Fprintf(&b, "keys %d vs %d; ", s.Keys, o.Keys)
	}
	for _, st := range store.States {
		if s.Counts[st] != o.Counts[st] {
			fmt.Fprintf(&b, "%s %d vs %d; ", st, s.Counts[st], o.Counts[st])
		}
	}
	if s.KeysDigest != o.KeysDigest {
		b.WriteString("key digests differ; ")
	}
	if s.SnapshotDigest != o.SnapshotDigest {
		b.WriteString("bindings, next index or audit trail differ; ")
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("; ")))
}

// Digester computes a Summary from keys given in pubkey order.
type Digester struct {
	h      hash.Hash
	n      int
	counts map[store.State]int
	last   *store.Pubkey
}

// NewDigester returns an empty Digester.
func NewDigester() *Digester {
	d := &Digester{h: sha256.New(), counts: map[store.State]int{}}
	for _, st := range store.States {
		d.counts[st] = 0
	}
	return d
}

// Add adds the next key; keys must come in strictly increasing pubkey order.
func (d *Digester) Add(k *store.Key) error {
	if d.last != nil && bytes.Compare(d.last[:], k.Pubkey[:]) >= 0 {
		return fmt.Errorf("key %s comes after %s: not in pubkey order", k.Pubkey, *d.last)
	}
	pk := k.Pubkey
	d.last = &pk
	d.n++
	d.counts[k.State]++
	w := enc{h: d.h}
	w.bytes(k.Pubkey[:])
	w.str(string(k.State))
	w.str(string(k.Origin))
	w.bool(k.HasDerivationIndex)
	w.u64(uint64(k.DerivationIndex))
	w.str(k.Pod)
	w.str(k.PodUID)
	w.str(k.LastPod)
	w.time(k.Since)
	w.time(k.CoolingUntil)
	w.time(k.ReleasedAt)
	w.str(k.RetiredReason)
	w.time(k.CreatedAt)
	w.bytes(k.SealedSecret)
	w.bool(k.Deposit != nil)
	if dd := k.Deposit; dd != nil {
		w.bytes(dd.WithdrawalCredentials[:])
		w.u64(dd.AmountGwei)
		w.bytes(dd.Signature[:])
		w.bytes(dd.DepositMessageRoot[:])
		w.bytes(dd.DepositDataRoot[:])
		w.bytes(dd.ForkVersion[:])
		w.str(dd.NetworkName)
	}
	w.bool(k.DepositTx != nil)
	if t := k.DepositTx; t != nil {
		w.u64(t.Nonce)
		w.bytes(t.Hash[:])
		w.bytes(t.Raw)
		w.u64(t.Block)
		w.time(t.RecordedAt)
	}
	// Watermarks are hashed only when a key has some, so the digest of
	// keys without (every key of an earlier format) is unchanged.
	if p := k.Protection; p != nil && !p.Empty() {
		w.str("protection")
		w.bool(p.HasBlock)
		w.u64(p.BlockSlot)
		w.bool(p.HasAttestation)
		w.u64(p.SourceEpoch)
		w.u64(p.TargetEpoch)
	}
	return nil
}

// Finish returns the summary of the keys added and snap.
func (d *Digester) Finish(snap store.Snapshot) Summary {
	s := Summary{
		Keys: d.n, Counts: maps.Clone(d.counts), KeysDigest: hex.EncodeToString(d.h.Sum(nil)),
		NextIndex: snap.NextIndex, Bindings: len(snap.Bindings), AuditEvents: len(snap.Audit),
	}
	h := sha256.New()
	w := enc{h: h}
	names := slices.Sorted(maps.Keys(snap.Bindings))
	w.u64(uint64(len(names)))
	for _, n := range names {
		w.str(n)
		w.str(snap.Bindings[n])
	}
	w.u64(uint64(snap.NextIndex))
	w.u64(uint64(len(snap.Audit)))
	for _, e := range snap.Audit {
		w.u64(e.Seq)
		w.time(e.Time)
		w.str(e.Action)
		w.str(e.Pod)
		w.str(e.PodUID)
		w.u64(uint64(len(e.Pubkeys)))
		for _, pk := range e.Pubkeys {
			w.bytes(pk[:])
		}
		w.str(e.Reason)
		w.str(e.Actor)
	}
	s.SnapshotDigest = hex.EncodeToString(h.Sum(nil))
	return s
}

// enc writes length-prefixed fields, so that no two different records hash
// alike.
type enc struct{ h hash.Hash }

func (e enc) u64(v uint64) { e.h.Write(binary.BigEndian.AppendUint64(nil, v)) }
func (e enc) bytes(b []byte) {
	e.u64(uint64(len(b)))
	e.h.Write(b)
}
func (e enc) str(s string) { e.bytes([]byte(s)) }
func (e enc) bool(b bool) {
	if b {
		e.h.Write([]byte{1})
	} else {
		e.h.Write([]byte{0})
	}
}

// time hashes t to the microsecond, as stores keep it; the zero Time is
// distinct from every real time.
func (e enc) time(t time.Time) {
	if t.IsZero() {
		e.u64(math.MaxUint64)
		return
	}
	e.u64(uint64(t.Truncate(time.Microsecond).UnixMicro()))
}
