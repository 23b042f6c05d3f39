package backup

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Magic is the first line of every backup file.
const Magic = "pkmanager backup\n"

// FormatVersion is the version this package writes and reads.
const FormatVersion = 1

const (
	frameSize = 1 << 20
	cipherID  = "AES-256-GCM, key = HKDF-SHA256(KEK backup root, salt), 1 MiB frames"
)

// Header is the clear-text part of a backup file.
type Header struct {
	Format int `json:"format"`
	// KEKID is the ID of the key-encryption key the file needs
	// (pkmanager serve prints it).
	KEKID     string    `json:"kek_id"`
	CreatedAt time.Time `json:"created_at"`
	Cipher    string    `json:"cipher"`
	Salt      string    `json:"salt"`
	Note      string    `json:"note"`
}

// Errors callers act on.
var (
	// ErrWrongKEK: the file needs another key-encryption key.
	ErrWrongKEK = errors.New("backup file needs another key-encryption key")
	// ErrCorrupt: the file is damaged, truncated or was changed.
	ErrCorrupt = errors.New("backup file is damaged, truncated or was changed")
)

// record is one JSON line of the payload.
type record struct {
	Type     string        `json:"type"` // "key", "snapshot", "end"
	Key      *keyJSON      `json:"key,omitempty"`
	Snapshot *snapshotJSON `json:"snapshot,omitempty"`
	End      *Summary      `json:"end,omitempty"`
}

type keyJSON struct {
	Pubkey          string     `json:"pubkey"`
	State           string     `json:"state"`
	Origin          string     `json:"origin"`
	DerivationIndex *uint32    `json:"derivation_index,omitempty"`
	Pod             string     `json:"pod,omitempty"`
	PodUID          string     `json:"pod_uid,omitempty"`
	LastPod         string     `json:"last_pod,omitempty"`
	Since           time.Time  `json:"since"`
	CoolingUntil    *time.Time `json:"cooling_until,omitempty"`
	ReleasedAt      *time.Time `json:"released_at,omitempty"`
	RetiredReason   string     `json:"retired_reason,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	SealedSecret    []byte     `json:"sealed_secret"` // still encrypted with the KEK
	Deposit         *depJSON   `json:"deposit,omitempty"`
	DepositTx       *txJSON    `json:"deposit_tx,omitempty"`
	Protection      *protJSON  `json:"slashing_protection,omitempty"`
}

// protJSON is a key's slashing-protection watermarks (store.Protection).
type protJSON struct {
	BlockSlot   *uint64 `json:"block_slot,omitempty"`
	SourceEpoch *uint64 `json:"source_epoch,omitempty"`
	TargetEpoch *uint64 `json:"target_epoch,omitempty"`
}

type depJSON struct {
	WithdrawalCredentials string `json:"withdrawal_credentials"`
	AmountGwei            uint64 `json:"amount_gwei"`
	Signature             string `json:"signature"`
	DepositMessageRoot    string `json:"deposit_message_root"`
	DepositDataRoot       string `json:"deposit_data_root"`
	ForkVersion           string `json:"fork_version"`
	NetworkName           string `json:"network_name"`
}

type txJSON struct {
	Nonce      uint64    `json:"nonce"`
	Hash       string    `json:"hash"`
	Raw        []byte    `json:"raw,omitempty"`
	Block      uint64    `json:"block"`
	RecordedAt time.Time `json:"recorded_at"`
}

type snapshotJSON struct {
	Bindings  map[string]string `json:"bindings"`
	NextIndex uint32            `json:"next_index"`
	Audit     []auditJSON       `json:"audit"`
}

type auditJSON struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Action  string    `json:"action"`
	Pod     string    `json:"pod,omitempty"`
	PodUID  string    `json:"pod_uid,omitempty"`
	Pubkeys []string  `json:"pubkeys,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Actor   string    `json:"actor,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func fromOpt(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func toKeyJSON(k *store.Key) *keyJSON {
	j := &keyJSON{
		Pubkey: k.Pubkey.String(), State: string(k.State), Origin: string(k.Origin),
		Pod: k.Pod, PodUID: k.PodUID, LastPod: k.LastPod, Since: k.Since.UTC(),
		CoolingUntil: optTime(k.CoolingUntil), ReleasedAt: optTime(k.ReleasedAt),
		RetiredReason: k.RetiredReason, CreatedAt: k.CreatedAt.UTC(), SealedSecret: k.SealedSecret,
	}
	if k.HasDerivationIndex {
		i := k.DerivationIndex
		j.DerivationIndex = &i
	}
	if d := k.Deposit; d != nil {
		j.Deposit = &depJSON{
			WithdrawalCredentials: hex.EncodeToString(d.WithdrawalCredentials[:]), AmountGwei: d.AmountGwei,
			Signature: hex.EncodeToString(d.Signature[:]), DepositMessageRoot: hex.EncodeToString(d.DepositMessageRoot[:]),
			DepositDataRoot: hex.EncodeToString(d.DepositDataRoot[:]), ForkVersion: hex.EncodeToString(d.ForkVersion[:]),
			NetworkName: d.NetworkName,
		}
	}
	if t := k.DepositTx; t != nil {
		j.DepositTx = &txJSON{Nonce: t.Nonce, Hash: hex.EncodeToString(t.Hash[:]), Raw: t.Raw, Block: t.Block, RecordedAt: t.RecordedAt.UTC()}
	}
	if p := k.Protection; p != nil && !p.Empty() {
		j.Protection = &protJSON{}
		if p.HasBlock {
			s := p.BlockSlot
			j.Protection.BlockSlot = &s
		}
		if p.HasAttestation {
			s, t := p.SourceEpoch, p.TargetEpoch
			j.Protection.SourceEpoch, j.Protection.TargetEpoch = &s, &t
		}
	}
	return j
}

func unhex(dst []byte, s, what string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return fmt.Errorf("%s: want %d hex bytes", what, len(dst))
	}
	copy(dst, b)
	return nil
}

func (j *keyJSON) key() (store.Key, error) {
	pk, err := store.ParsePubkey(j.Pubkey)
	if err != nil {
		return store.Key{}, err
	}
	k := store.Key{
		Pubkey: pk, State: store.State(j.State), Origin: store.Origin(j.Origin),
		Pod: j.Pod, PodUID: j.PodUID, LastPod: j.LastPod, Since: j.Since.UTC(),
		CoolingUntil: fromOpt(j.CoolingUntil), ReleasedAt: fromOpt(j.ReleasedAt),
		RetiredReason: j.RetiredReason, CreatedAt: j.CreatedAt.UTC(), SealedSecret: j.SealedSecret,
	}
	if j.DerivationIndex != nil {
		k.DerivationIndex, k.HasDerivationIndex = *j.DerivationIndex, true
	}
	if d := j.Deposit; d != nil {
		k.Deposit = &store.DepositData{AmountGwei: d.AmountGwei, NetworkName: d.NetworkName}
		for _, f := range []struct {
			dst  []byte
			s    string
			what string
		}{
			{k.Deposit.WithdrawalCredentials[:], d.WithdrawalCredentials, "withdrawal credentials"},
			{k.Deposit.Signature[:], d.Signature, "signature"},
			{k.Deposit.DepositMessageRoot[:], d.DepositMessageRoot, "deposit message root"},
			{k.Deposit.DepositDataRoot[:], d.DepositDataRoot, "deposit data root"},
			{k.Deposit.ForkVersion[:], d.ForkVersion, "fork version"},
		} {
			if err := unhex(f.dst, f.s, f.what); err != nil {
				return store.Key{}, fmt.Errorf("key %s: %w", pk, err)
			}
		}
	}
	if t := j.DepositTx; t != nil {
		k.DepositTx = &store.DepositTx{Nonce: t.Nonce, Raw: t.Raw, Block: t.Block, RecordedAt: t.RecordedAt.UTC()}
		if err := unhex(k.DepositTx.Hash[:], t.Hash, "transaction hash"); err != nil {
			return store.Key{}, fmt.Errorf("key %s: %w", pk, err)
		}
	}
	if p := j.Protection; p != nil {
		k.Protection = &store.Protection{}
		if p.BlockSlot != nil {
			k.Protection.HasBlock, k.Protection.BlockSlot = true, *p.BlockSlot
		}
		if (p.SourceEpoch == nil) != (p.TargetEpoch == nil) {
			return store.Key{}, fmt.Errorf("key %s: slashing protection with only one of source and target epoch", pk)
		}
		if p.SourceEpoch != nil {
			k.Protection.HasAttestation, k.Protection.SourceEpoch, k.Protection.TargetEpoch = true, *p.SourceEpoch, *p.TargetEpoch
		}
	}
	return k, nil
}

func toSnapshotJSON(s store.Snapshot) *snapshotJSON {
	j := &snapshotJSON{Bindings: s.Bindings, NextIndex: s.NextIndex, Audit: make([]auditJSON, len(s.Audit))}
	if j.Bindings == nil {
		j.Bindings = map[string]string{}
	}
	for i, e := range s.Audit {
		a := auditJSON{Seq: e.Seq, Time: e.Time.UTC(), Action: e.Action, Pod: e.Pod, PodUID: e.PodUID, Reason: e.Reason, Actor: e.Actor}
		for _, pk := range e.Pubkeys {
			a.Pubkeys = append(a.Pubkeys, pk.String())
		}
		j.Audit[i] = a
	}
	return j
}

func (j *snapshotJSON) snapshot() (store.Snapshot, error) {
	s := store.Snapshot{Bindings: j.Bindings, NextIndex: j.NextIndex}
	if s.Bindings == nil {
		s.Bindings = map[string]string{}
	}
	for _, a := range j.Audit {
		e := store.AuditEvent{Seq: a.Seq, Time: a.Time.UTC(), Action: a.Action, Pod: a.Pod, PodUID: a.PodUID, Reason: a.Reason, Actor: a.Actor}
		for _, p := range a.Pubkeys {
			pk, err := store.ParsePubkey(p)
			if err != nil {
				return s, fmt.Errorf("audit event %d: %w", a.Seq, err)
			}
			e.Pubkeys = append(e.Pubkeys, pk)
		}
		s.Audit = append(s.Audit, e)
	}
	return s, nil
}

// frameCipher seals or opens the frames of one file.
type frameCipher struct {
	aead       cipher.AEAD
	headerHash [32]byte
}

func newFrameCipher(kek *seal.KEK, salt, headerBytes []byte) (*frameCipher, error) {
	key, err := kek.BackupKey(salt)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &frameCipher{aead: aead, headerHash: sha256.Sum256(headerBytes)}, nil
}

func (c *frameCipher) params(i uint64, final bool) (nonce, aad []byte) {
	nonce = make([]byte, 12)
	binary.BigEndian.PutUint64(nonce[4:], i)
	aad = append(c.headerHash[:], binary.BigEndian.AppendUint64(nil, i)...)
	if final {
		aad = append(aad, 1)
	} else {
		aad = append(aad, 0)
	}
	return nonce, aad
}

// frameWriter encrypts a payload stream into frames.
type frameWriter struct {
	w   io.Writer
	c   *frameCipher
	buf []byte
	n   uint64
}

func (f *frameWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), frameSize-len(f.buf))
		f.buf = append(f.buf, p[:k]...)
		p, written = p[k:], written+k
		if len(f.buf) == frameSize {
			if err := f.flush(false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (f *frameWriter) flush(final bool) error {
	nonce, aad := f.c.params(f.n, final)
	ct := f.c.aead.Seal(nil, nonce, f.buf, aad)
	if _, err := f.w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ct)))); err != nil {
		return err
	}
	if _, err := f.w.Write(ct); err != nil {
		return err
	}
	f.n++
	f.buf = f.buf[:0]
	return nil
}

// Write writes a backup of st to w: a consistent snapshot (Store.Dump) with
// the keys still sealed, the whole encrypted under kek. It fails when the
// store is bound to another KEK, or its secrets do not open with kek, so
// that the file never names a KEK that cannot restore it. now is the time
// recorded in the header.
func Write(ctx context.Context, w io.Writer, st store.Store, kek *seal.KEK, now time.Time) (Summary, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return Summary{}, fmt.Errorf("random salt: %w", err)
	}
	h := Header{
		Format: FormatVersion, KEKID: kek.ID(), CreatedAt: now.UTC().Truncate(time.Second), Cipher: cipherID,
		Salt: hex.EncodeToString(salt),
		Note: "secret keys are sealed with the key-encryption key as in the store, and the whole payload is encrypted too; restore with: pkmanager restore --in FILE --store URL (needs the same key-encryption key)",
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return Summary{}, err
	}
	headerBytes := append([]byte(Magic), append(hj, '\n')...)
	fc, err := newFrameCipher(kek, salt, headerBytes)
	if err != nil {
		return Summary{}, err
	}
	if _, err := w.Write(headerBytes); err != nil {
		return Summary{}, fmt.Errorf("write backup: %w", err)
	}
	fw := &frameWriter{w: w, c: fc}
	bw := bufio.NewWriterSize(fw, 64<<10)
	enc := json.NewEncoder(bw)
	dg := NewDigester()
	checked := false
	snap, err := st.Dump(ctx, func(k store.Key) error {
		if !checked {
			if _, err := kek.Open(k.SealedSecret, k.Pubkey[:]); err != nil {
				return fmt.Errorf("the store's secret of key %s does not open with key-encryption key %s: %w", k.Pubkey, kek.ID(), ErrWrongKEK)
			}
			checked = true
		}
		if err := dg.Add(&k); err != nil {
			return err
		}
		return enc.Encode(record{Type: "key", Key: toKeyJSON(&k)})
	})
	if err != nil {
		return Summary{}, fmt.Errorf("back up store: %w", err)
	}
	if id, ok := snap.Bindings[store.BindKEK]; ok && id != kek.ID() {
		return Summary{}, fmt.Errorf("the store is bound to key-encryption key %s, not %s: %w", id, kek.ID(), ErrWrongKEK)
	}
	sum := dg.Finish(snap)
	if err := enc.Encode(record{Type: "snapshot", Snapshot: toSnapshotJSON(snap)}); err != nil {
		return Summary{}, err
	}
	if err := enc.Encode(record{Type: "end", End: &sum}); err != nil {
		return Summary{}, err
	}
	if err := bw.Flush(); err != nil {
		return Summary{}, fmt.Errorf("write backup: %w", err)
	}
	if err := fw.flush(true); err != nil {
		return Summary{}, fmt.Errorf("write backup: %w", err)
	}
	return sum, nil
}

// ReadHeader reads the clear-text header (which KEK the file needs) without
// a KEK. It returns the header and its exact bytes.
func ReadHeader(r *bufio.Reader) (Header, []byte, error) {
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != Magic {
		return Header{}, nil, errors.New("not a pkmanager backup file")
	}
	line, err := r.ReadBytes('\n')
	if err != nil || len(line) > 64<<10 {
		return Header{}, nil, fmt.Errorf("backup header: %w", ErrCorrupt)
	}
	var h Header
	if err := json.Unmarshal(line, &h); err != nil {
		return Header{}, nil, fmt.Errorf("backup header: %w", ErrCorrupt)
	}
	if h.Format != FormatVersion {
		return h, nil, fmt.Errorf("backup format version %d, this pkmanager reads version %d", h.Format, FormatVersion)
	}
	return h, append([]byte(Magic), line...), nil
}

// Contents is what a backup file holds.
type Contents struct {
	Header   Header
	Snapshot store.Snapshot
	Keys     []store.Key
	Summary  Summary // as recomputed from the keys read; equal to the file's end record
}

// Read reads and checks a whole backup file with kek: every frame must
// authenticate, the last frame must be marked last and followed by nothing,
// and the end record must match the keys and snapshot read.
func Read(r io.Reader, kek *seal.KEK) (Contents, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h, headerBytes, err := ReadHeader(br)
	if err != nil {
		return Contents{}, err
	}
	if h.KEKID != kek.ID() {
		return Contents{}, fmt.Errorf("the backup needs key-encryption key %s, the one given is %s: %w", h.KEKID, kek.ID(), ErrWrongKEK)
	}
	salt, err := hex.DecodeString(h.Salt)
	if err != nil {
		return Contents{}, fmt.Errorf("backup salt: %w", ErrCorrupt)
	}
	fc, err := newFrameCipher(kek, salt, headerBytes)
	if err != nil {
		return Contents{}, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(openFrames(br, fc, pw)) }()
	defer pr.Close()

	out := Contents{Header: h}
	dec := json.NewDecoder(bufio.NewReaderSize(pr, 64<<10))
	dg := NewDigester()
	var end *Summary
	haveSnap := false
	for {
		var rec record
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKEK) {
				return Contents{}, err
			}
			return Contents{}, fmt.Errorf("backup payload: %v: %w", err, ErrCorrupt)
		}
		if end != nil {
			return Contents{}, fmt.Errorf("records after the end record: %w", ErrCorrupt)
		}
		switch rec.Type {
		case "key":
			if rec.Key == nil || haveSnap {
				return Contents{}, fmt.Errorf("misplaced key record: %w", ErrCorrupt)
			}
			k, err := rec.Key.key()
			if err != nil {
				return Contents{}, fmt.Errorf("backup key record: %v: %w", err, ErrCorrupt)
			}
			if err := dg.Add(&k); err != nil {
				return Contents{}, fmt.Errorf("backup: %v: %w", err, ErrCorrupt)
			}
			out.Keys = append(out.Keys, k)
		case "snapshot":
			if rec.Snapshot == nil || haveSnap {
				return Contents{}, fmt.Errorf("misplaced snapshot record: %w", ErrCorrupt)
			}
			if out.Snapshot, err = rec.Snapshot.snapshot(); err != nil {
				return Contents{}, fmt.Errorf("backup snapshot: %v: %w", err, ErrCorrupt)
			}
			haveSnap = true
		case "end":
			if rec.End == nil || !haveSnap {
				return Contents{}, fmt.Errorf("misplaced end record: %w", ErrCorrupt)
			}
			end = rec.End
		default:
			return Contents{}, fmt.Errorf("unknown record %q: %w", rec.Type, ErrCorrupt)
		}
	}
	if end == nil {
		return Contents{}, fmt.Errorf("no end record: %w", ErrCorrupt)
	}
	out.Summary = dg.Finish(out.Snapshot)
	if !out.Summary.Equal(*end) {
		return Contents{}, fmt.Errorf("content does not match the end record (%s): %w", end.Diff(out.Summary), ErrCorrupt)
	}
	return out, nil
}

// openFrames decrypts frames from r into w until the final frame, which must
// end the file.
func openFrames(r *bufio.Reader, c *frameCipher, w io.Writer) error {
	var lenBuf [4]byte
	for i := uint64(0); ; i++ {
		if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
			return fmt.Errorf("backup cut short before its last frame: %w", ErrCorrupt)
		}
		n := binary.BigEndian.Uint32(lenBuf[:])
		if n > frameSize+uint32(c.aead.Overhead()) || n < uint32(c.aead.Overhead()) {
			return fmt.Errorf("frame %d of %d bytes: %w", i, n, ErrCorrupt)
		}
		ct := make([]byte, n)
		if _, err := io.ReadFull(r, ct); err != nil {
			return fmt.Errorf("backup cut short in frame %d: %w", i, ErrCorrupt)
		}
		final := false
		nonce, aad := c.params(i, false)
		pt, err := c.aead.Open(nil, nonce, ct, aad)
		if err != nil {
			nonce, aad = c.params(i, true)
			if pt, err = c.aead.Open(nil, nonce, ct, aad); err != nil {
				return fmt.Errorf("frame %d does not authenticate: %w", i, ErrCorrupt)
			}
			final = true
		}
		if _, err := w.Write(pt); err != nil {
			return err
		}
		if final {
			if _, err := r.ReadByte(); err != io.EOF {
				return fmt.Errorf("data after the last frame: %w", ErrCorrupt)
			}
			return nil
		}
	}
}

// Summarize dumps st and returns its summary (for comparing stores).
func Summarize(ctx context.Context, st store.Store) (Summary, error) {
	dg := NewDigester()
	snap, err := st.Dump(ctx, func(k store.Key) error { return dg.Add(&k) })
	if err != nil {
		return Summary{}, err
	}
	return dg.Finish(snap), nil
}

// DescribeCounts renders per-state counts in lifecycle order.
func DescribeCounts(c map[store.State]int) string {
	var parts []string
	for _, st := range store.States {
		parts = append(parts, fmt.Sprintf("%s %d", st, c[st]))
	}
	return strings.Join(parts, ", ")
}
