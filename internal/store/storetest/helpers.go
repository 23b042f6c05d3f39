package storetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// base is the suite's clock origin. It has a sub-microsecond part and a
// non-UTC location on purpose: backends keep microseconds and no location.
var base = time.Date(2031, time.May, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+2", 2*60*60))

// at returns base plus sec seconds. Tests never read the wall clock.
func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

// us truncates t to the precision the contract keeps.
func us(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

// PK returns the suite's i-th test public key; PK(i) < PK(j) in byte order
// exactly when i < j (for 0 <= i, j < 2^32).
func PK(i int) store.Pubkey {
	var p store.Pubkey
	p[0] = 0x8a
	binary.BigEndian.PutUint32(p[1:], uint32(i))
	for j := 5; j < len(p); j++ {
		p[j] = byte(i*7 + j*13)
	}
	return p
}

// name renders a test key as "k<i>" for messages.
func name(p store.Pubkey) string {
	if p == PK(int(binary.BigEndian.Uint32(p[1:]))) {
		return fmt.Sprintf("k%d", binary.BigEndian.Uint32(p[1:]))
	}
	return p.String()
}

func names(ps []store.Pubkey) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = name(p)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// sealed returns an opaque test "sealed secret" for key i: 61 bytes (the
// size of a real sealed 32-byte secret) covering zero and 0xff bytes.
func sealed(i int) []byte {
	b := make([]byte, 61)
	for j := range b {
		b[j] = byte(i*31 + j*17)
	}
	b[0], b[1], b[2] = 0x00, 0xff, byte(i)
	return b
}

func deposit(i int) *store.DepositData {
	d := &store.DepositData{
		AmountGwei:  32_000_000_000 + uint64(i),
		NetworkName: fmt.Sprintf("testnet-%d", i),
	}
	for j := range d.WithdrawalCredentials {
		d.WithdrawalCredentials[j] = byte(i + j)
	}
	for j := range d.Signature {
		d.Signature[j] = byte(3*i + j)
	}
	for j := range d.DepositMessageRoot {
		d.DepositMessageRoot[j] = byte(5*i + j)
	}
	for j := range d.DepositDataRoot {
		d.DepositDataRoot[j] = byte(7*i + j)
	}
	d.ForkVersion = [4]byte{0x10, 0x00, 0x00, byte(i)}
	return d
}

// nk returns a valid random-origin NewKey i with a deposit.
func nk(i int) store.NewKey {
	return store.NewKey{Pubkey: PK(i), SealedSecret: sealed(i), Origin: store.OriginRandom, Deposit: deposit(i)}
}

func nks(is ...int) []store.NewKey {
	out := make([]store.NewKey, len(is))
	for j, i := range is {
		out[j] = nk(i)
	}
	return out
}

func pks(is ...int) []store.Pubkey {
	out := make([]store.Pubkey, len(is))
	for j, i := range is {
		out[j] = PK(i)
	}
	return out
}

func pubkeysOf(keys []store.Key) []store.Pubkey {
	out := make([]store.Pubkey, len(keys))
	for i, k := range keys {
		out[i] = k.Pubkey
	}
	return out
}

// rng returns the ints from..to inclusive.
func rng(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %q", err, target)
	}
}

func addKeys(t *testing.T, s store.Store, state store.State, now time.Time, is ...int) {
	t.Helper()
	must(t, s.AddKeys(t.Context(), nks(is...), state, now))
}

func claim(t *testing.T, s store.Store, pod, uid string, want int, now time.Time) store.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: now})
	if err != nil {
		t.Fatalf("Claim(%s, %q, want %d): %v", pod, uid, want, err)
	}
	return c
}

// wantClaim checks a Claim result's set (in order) and counters.
func wantClaim(t *testing.T, c store.Claim, keys []store.Pubkey, shortfall, recycled int) {
	t.Helper()
	if got := pubkeysOf(c.Keys); !slices.Equal(got, keys) {
		t.Errorf("claim keys = %s, want %s", names(got), names(keys))
	}
	if c.Shortfall != shortfall || c.Recycled != recycled {
		t.Errorf("claim shortfall, recycled = %d, %d; want %d, %d", c.Shortfall, c.Recycled, shortfall, recycled)
	}
}

func release(t *testing.T, s store.Store, pod, uid string, until, now time.Time) int {
	t.Helper()
	n, err := s.Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: uid, Until: until, Now: now})
	if err != nil {
		t.Fatalf("Release(%s, %q): %v", pod, uid, err)
	}
	return n
}

// addPending calls AddPending and fails the test on an error.
func addPending(t *testing.T, s store.Store, pod, uid string, want int, keys []store.NewKey, now time.Time) {
	t.Helper()
	if err := s.AddPending(t.Context(), store.AddParams{Pod: pod, PodUID: uid, Want: want, Keys: keys, Now: now}); err != nil {
		t.Fatalf("AddPending(%q, %q, want %d, %d keys): %v", pod, uid, want, len(keys), err)
	}
}

// txFor returns a test deposit transaction for key i. Its Block and
// RecordedAt are set on purpose: SetDepositTx must ignore them.
func txFor(i int) store.DepositTx {
	tx := store.DepositTx{Nonce: uint64(1000 + i), Block: 999_999, RecordedAt: at(-1000)}
	for j := range tx.Hash {
		tx.Hash[j] = byte(11*i + j)
	}
	tx.Raw = []byte{0x02, 0xf8, byte(i), 0x00, 0xff, byte(i >> 8)}
	return tx
}

// recordedTx is tx as SetDepositTx at now records it.
func recordedTx(tx store.DepositTx, now time.Time) *store.DepositTx {
	tx.Raw = bytes.Clone(tx.Raw)
	tx.Block, tx.RecordedAt = 0, us(now)
	return &tx
}

func setTx(t *testing.T, s store.Store, i int, now time.Time) {
	t.Helper()
	if err := s.SetDepositTx(t.Context(), PK(i), txFor(i), now); err != nil {
		t.Fatalf("SetDepositTx(%s): %v", name(PK(i)), err)
	}
}

func confirm(t *testing.T, s store.Store, p store.Pubkey, block uint64, now time.Time) store.Key {
	t.Helper()
	k, err := s.ConfirmDeposit(t.Context(), p, block, now)
	if err != nil {
		t.Fatalf("ConfirmDeposit(%s, %d): %v", name(p), block, err)
	}
	return k
}

// wantPending checks the Pending part of a Claim result.
func wantPending(t *testing.T, c store.Claim, keys []store.Pubkey) {
	t.Helper()
	if got := pubkeysOf(c.Pending); !slices.Equal(got, keys) {
		t.Errorf("claim pending = %s, want %s", names(got), names(keys))
	}
	for _, k := range c.Pending {
		if k.State != store.StatePendingDeposit || len(k.SealedSecret) != 0 || k.Deposit != nil {
			t.Errorf("claim pending key %s: want pending-deposit without secret and deposit: %s", name(k.Pubkey), describe(k))
		}
	}
}

// wantEvents checks audit events, times with Equal.
func wantEvents(t *testing.T, got, want []store.AuditEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d audit events, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
		return
	}
	for i := range got {
		if g, w := normEvent(got[i]), normEvent(want[i]); !reflect.DeepEqual(g, w) {
			t.Errorf("audit event %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func getKey(t *testing.T, s store.Store, p store.Pubkey) store.Key {
	t.Helper()
	k, err := s.GetKey(t.Context(), p)
	if err != nil {
		t.Fatalf("GetKey(%s): %v", name(p), err)
	}
	return k
}

func counts(t *testing.T, s store.Store) map[store.State]int {
	t.Helper()
	c, err := s.Counts(t.Context())
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	return c
}

// wantCounts checks Counts; states not in want must be 0.
func wantCounts(t *testing.T, s store.Store, want map[store.State]int) {
	t.Helper()
	got := counts(t, s)
	for _, st := range store.States {
		if got[st] != want[st] {
			t.Errorf("Counts()[%s] = %d, want %d (all counts %v)", st, got[st], want[st], got)
		}
	}
}

func list(t *testing.T, s store.Store, opts store.ListOptions) []store.Key {
	t.Helper()
	var out []store.Key
	if err := s.ListKeys(t.Context(), opts, func(k store.Key) error {
		out = append(out, k)
		return nil
	}); err != nil {
		t.Fatalf("ListKeys(%+v): %v", opts, err)
	}
	return out
}

// normTime makes a time comparable with ==: no location, no monotonic
// reading, and the zero Time for "not set".
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// norm makes a Key comparable with reflect.DeepEqual: times lose location
// and monotonic reading, empty byte slices become nil. It does not change
// what k points to.
func norm(k store.Key) store.Key {
	for _, p := range []*time.Time{&k.Since, &k.CoolingUntil, &k.ReleasedAt, &k.CreatedAt} {
		*p = normTime(*p)
	}
	if len(k.SealedSecret) == 0 {
		k.SealedSecret = nil
	}
	if k.DepositTx != nil {
		tx := *k.DepositTx
		tx.RecordedAt = normTime(tx.RecordedAt)
		if len(tx.Raw) == 0 {
			tx.Raw = nil
		}
		k.DepositTx = &tx
	}
	return k
}

// normEvent makes an AuditEvent comparable with reflect.DeepEqual.
func normEvent(e store.AuditEvent) store.AuditEvent {
	e.Time = normTime(e.Time)
	if len(e.Pubkeys) == 0 {
		e.Pubkeys = nil
	}
	return e
}

// wantKey compares a whole key record, times with Equal.
func wantKey(t *testing.T, got, want store.Key) {
	t.Helper()
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Errorf("key %s:\n got %s\nwant %s", name(want.Pubkey), describe(g), describe(w))
	}
}

func describe(k store.Key) string {
	tm := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Format("15:04:05.000000000")
	}
	dep, tx := "nil", "nil"
	if k.Deposit != nil {
		dep = fmt.Sprintf("%+v", *k.Deposit)
	}
	if k.DepositTx != nil {
		tx = fmt.Sprintf("{nonce=%d hash=%x block=%d recorded=%s raw=%x}", k.DepositTx.Nonce, k.DepositTx.Hash[:4],
			k.DepositTx.Block, tm(k.DepositTx.RecordedAt), k.DepositTx.Raw)
	}
	return fmt.Sprintf("{%s state=%s origin=%s idx=%d/%t pod=%q uid=%q last=%q since=%s cooling=%s released=%s created=%s reason=%q secret=%x deposit=%s tx=%s}",
		name(k.Pubkey), k.State, k.Origin, k.DerivationIndex, k.HasDerivationIndex, k.Pod, k.PodUID, k.LastPod,
		tm(k.Since), tm(k.CoolingUntil), tm(k.ReleasedAt), tm(k.CreatedAt), k.RetiredReason, k.SealedSecret, dep, tx)
}

// snapshot is everything observable about a store's keys, and its audit
// trail.
type snapshot struct {
	keys   []store.Key
	counts map[store.State]int
	audit  []store.AuditEvent
}

// takeSnapshot reads every key with secret, deposit and deposit
// transaction, the counts and the audit trail.
func takeSnapshot(t *testing.T, s store.Store) snapshot {
	t.Helper()
	var snap snapshot
	for _, k := range list(t, s, store.ListOptions{WithDeposit: true}) {
		full := getKey(t, s, k.Pubkey)
		snap.keys = append(snap.keys, norm(full))
	}
	snap.counts = counts(t, s)
	snap.audit = auditTrail(t, s)
	return snap
}

// auditTrail reads the whole audit trail, a page at a time.
func auditTrail(t *testing.T, s store.Store) []store.AuditEvent {
	t.Helper()
	var out []store.AuditEvent
	after := uint64(0)
	for {
		page, err := s.ListAudit(t.Context(), after, 50)
		if err != nil {
			t.Fatalf("ListAudit(%d, 50): %v", after, err)
		}
		if len(page) > 50 {
			t.Fatalf("ListAudit(%d, 50) returned %d events", after, len(page))
		}
		for _, e := range page {
			out = append(out, normEvent(e))
		}
		if len(page) < 50 {
			return out
		}
		after = page[len(page)-1].Seq
	}
}

// unchanged fails the test when the store differs from before.
func unchanged(t *testing.T, s store.Store, before snapshot) {
	t.Helper()
	after := takeSnapshot(t, s)
	if !reflect.DeepEqual(before.counts, after.counts) {
		t.Errorf("counts changed: before %v, after %v", before.counts, after.counts)
	}
	if len(before.keys) != len(after.keys) {
		t.Errorf("number of keys changed: before %d, after %d", len(before.keys), len(after.keys))
		return
	}
	for i := range before.keys {
		if !reflect.DeepEqual(before.keys[i], after.keys[i]) {
			t.Errorf("key changed:\nbefore %s\n after %s", describe(before.keys[i]), describe(after.keys[i]))
		}
	}
	if !reflect.DeepEqual(before.audit, after.audit) {
		t.Errorf("audit trail changed:\nbefore %+v\n after %+v", before.audit, after.audit)
	}
}
