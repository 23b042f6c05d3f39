package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// v1Fixture copies testdata/store-v1.db, written by the schema 1 backend
// (see testdata/genv1), to a temporary file.
func v1Fixture(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "store-v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "store-v1.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// v1PK is the fixture's i-th pubkey (genv1's pk).
func v1PK(i int) store.Pubkey {
	var p store.Pubkey
	p[0], p[1] = 0xa1, byte(i)
	for j := 2; j < len(p); j++ {
		p[j] = byte(i*11 + j)
	}
	return p
}

func schemaOf(t *testing.T, path string) uint32 {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint32
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketMeta).Get(metaSchema)
		if len(b) != 4 {
			return errors.New("no schema")
		}
		v = binary.BigEndian.Uint32(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOpenSchemaV1 opens a store written by the schema 1 backend: Open
// migrates it in place, every record reads back as written, and the store
// carries on, new features included.
func TestOpenSchemaV1(t *testing.T) {
	path := v1Fixture(t)
	if v := schemaOf(t, path); v != 1 {
		t.Fatalf("fixture has schema %d, want 1", v)
	}
	var logs bytes.Buffer
	s, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open(schema 1 file): %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.Contains(logs.String(), "migrated store") || !strings.Contains(logs.String(), "from_schema=1") {
		t.Errorf("no migration notice in the log:\n%s", logs.String())
	}
	ctx := t.Context()
	t0 := time.Date(2030, 3, 4, 5, 6, 7, 123456000, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

	dep := func(i int) *store.DepositData {
		return &store.DepositData{AmountGwei: 32_000_000_000 + uint64(i), NetworkName: "hoodi", ForkVersion: [4]byte{0x10, 0, 0, byte(i)}}
	}
	key := func(i int, st store.State) store.Key {
		return store.Key{
			Pubkey: v1PK(i), State: st, Origin: store.OriginRandom, Since: at(1), CreatedAt: at(1),
			SealedSecret: []byte{0xee, byte(i), 0x00, 0xff}, Deposit: dep(i),
		}
	}
	k1 := key(1, store.StatePendingDeposit)
	k1.Origin, k1.DerivationIndex, k1.HasDerivationIndex, k1.Since, k1.CreatedAt = store.OriginDerived, 5, true, at(0), at(0)
	k2 := key(2, store.StateCoolingDown)
	k2.LastPod, k2.Since, k2.ReleasedAt, k2.CoolingUntil = "pod-c", at(7), at(7), at(3600)
	k3 := key(3, store.StateAvailable)
	k3.LastPod, k3.Since, k3.ReleasedAt = "pod-r", at(3), at(3)
	k4, k5 := key(4, store.StateAssigned), key(5, store.StateAssigned)
	for _, k := range []*store.Key{&k4, &k5} {
		k.Pod, k.PodUID, k.LastPod, k.Since, k.CreatedAt = "pod-a", "uid-a", "pod-a", at(4), at(4)
	}
	k6 := key(6, store.StateAssigned)
	k6.Pod, k6.LastPod, k6.Since, k6.CreatedAt = "pod-b", "pod-b", at(5), at(5)
	k7 := key(7, store.StateAvailable)
	k8 := key(8, store.StateRetired)
	k8.RetiredReason, k8.Since = "compromised", at(8)
	k9 := key(9, store.StateAvailable)
	k9.Origin, k9.Deposit = store.OriginImported, nil
	for _, want := range []store.Key{k1, k2, k3, k4, k5, k6, k7, k8, k9} {
		got, err := s.GetKey(ctx, want.Pubkey)
		if err != nil {
			t.Fatalf("GetKey(%s): %v", want.Pubkey, err)
		}
		if !keysEqual(got, want) {
			t.Errorf("key %d after migration:\n got %+v\nwant %+v", want.Pubkey[1], got, want)
		}
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := map[store.State]int{
		store.StatePendingDeposit: 1, store.StateAvailable: 3, store.StateAssigned: 3,
		store.StateCoolingDown: 1, store.StateRetired: 1, store.StateDepositFailed: 0, store.StateStillSigning: 0, store.StateExiting: 0,
	}
	if !maps.Equal(counts, wantCounts) {
		t.Errorf("Counts after migration = %v, want %v", counts, wantCounts)
	}
	storetest.CheckInvariants(t, s)

	// Bindings, derivation indices and pods carry on.
	if err := s.Bind(ctx, "kek", "fingerprint-v1"); err != nil {
		t.Errorf("Bind(kek, the fixture's value) = %v", err)
	}
	if err := s.Bind(ctx, "kek", "another"); !errors.Is(err, store.ErrBindingMismatch) {
		t.Errorf("Bind(kek, another) = %v, want ErrBindingMismatch", err)
	}
	if first, err := s.ReserveIndices(ctx, 1); err != nil || first != 10 {
		t.Errorf("ReserveIndices = %d, %v; want 10", first, err)
	}
	if _, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "uid-other", Want: 1, Now: at(10)}); !errors.Is(err, store.ErrPodUIDMismatch) {
		t.Errorf("Claim(pod-a) under another UID = %v, want ErrPodUIDMismatch", err)
	}
	c, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "uid-a", Want: 2, Now: at(10)})
	if err != nil || !slices.Equal(pubkeysOf(c.Keys), []store.Pubkey{v1PK(4), v1PK(5)}) || c.Recycled != 0 || len(c.Pending) != 0 {
		t.Errorf("Claim(pod-a) = %+v, %v; want its two keys", c, err)
	}
	// Pool order: k3 (released) first, then k7 and k9 (never released,
	// pubkey order); k2 only once it has cooled down.
	c, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-n", Want: 4, Now: at(10)})
	if err != nil || !slices.Equal(pubkeysOf(c.Keys), []store.Pubkey{v1PK(3), v1PK(7), v1PK(9)}) || c.Shortfall != 1 {
		t.Errorf("Claim(pod-n) = %v keys, shortfall %d, %v; want k3 k7 k9 and shortfall 1", pubkeysOf(c.Keys), c.Shortfall, err)
	}
	c, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-n", Want: 4, Now: at(3600)})
	if err != nil || c.Recycled != 1 || !slices.Contains(pubkeysOf(c.Keys), v1PK(2)) {
		t.Errorf("Claim(pod-n) at 3600 = %v keys, %v; want k2 added", pubkeysOf(c.Keys), err)
	}

	// New features on the migrated file: pending keys in a pod entry, a
	// release that un-targets them, the audit trail, a failed deposit.
	nk := store.NewKey{Pubkey: v1PK(20), SealedSecret: []byte{1}, Origin: store.OriginRandom}
	if err := s.AddPending(ctx, store.AddParams{Pod: "pod-b", Want: 2, Keys: []store.NewKey{nk}, Now: at(11)}); err != nil {
		t.Fatal(err)
	}
	c, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-b", PodUID: "uid-b", Want: 2, Now: at(12)})
	if err != nil || len(c.Keys) != 1 || len(c.Pending) != 1 || c.Pending[0].PodUID != "uid-b" {
		t.Errorf("Claim(pod-b) = %+v, %v; want k6 and the pending k20, filled in with uid-b", c, err)
	}
	if n, err := s.Release(store.WithActor(ctx, "test"), store.ReleaseParams{Pod: "pod-b", Until: at(13), Now: at(13), Reason: "done"}); err != nil || n != 1 {
		t.Errorf("Release(pod-b) = %d, %v; want 1", n, err)
	}
	if err := s.FailDeposit(ctx, v1PK(1), "reverted", at(14)); err != nil {
		t.Fatal(err)
	}
	events, err := s.ListAudit(ctx, 0, 10)
	if err != nil || len(events) != 5 || events[0].Seq != 1 || events[0].Action != "assign" || !slices.Equal(events[1].Pubkeys, []store.Pubkey{v1PK(2)}) ||
		events[2].Action != store.AuditUIDAdopted || !slices.Equal(events[2].Pubkeys, []store.Pubkey{v1PK(6), v1PK(20)}) ||
		events[3].Action != "release" || events[4].Action != "deposit-failed" {
		t.Errorf("ListAudit = %+v, %v; want pod-n's two claims (k2 the second's), pod-b's UID on k6 and k20, the release and the failure", events, err)
	}
	storetest.CheckInvariants(t, s)

	// The file is at the current schema now, and reopens as such (no
	// second migration).
	before := snapshotOf(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != SchemaVersion {
		t.Errorf("schema after migration = %d, want %d", v, SchemaVersion)
	}
	logs.Reset()
	s2, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if strings.Contains(logs.String(), "migrated") {
		t.Errorf("second Open migrated again:\n%s", logs.String())
	}
	if after := snapshotOf(t, s2); !slices.EqualFunc(before, after, keysEqual) {
		t.Errorf("store changed across reopen")
	}
	storetest.CheckInvariants(t, s2)
}

// v2PK is the schema 2 fixture's i-th pubkey (genv2's pk).
func v2PK(i int) store.Pubkey {
	var p store.Pubkey
	p[0], p[1] = 0xb2, byte(i)
	for j := 2; j < len(p); j++ {
		p[j] = byte(i*13 + j)
	}
	return p
}

// TestOpenSchemaV2 opens a store written by the schema 2 backend
// (testdata/store-v2.db, see testdata/genv2): Open migrates it in place to
// the current schema, every record reads back as written, and the store carries on,
// mint reservations included.
func TestOpenSchemaV2(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "store-v2.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "store-v2.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != 2 {
		t.Fatalf("fixture has schema %d, want 2", v)
	}
	var logs bytes.Buffer
	s, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open(schema 2 file): %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.Contains(logs.String(), "migrated store") || !strings.Contains(logs.String(), "from_schema=2") {
		t.Errorf("no migration notice in the log:\n%s", logs.String())
	}
	ctx := t.Context()
	t0 := time.Date(2030, 6, 7, 8, 9, 10, 654321000, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	key := func(i int, st store.State, since int) store.Key {
		return store.Key{
			Pubkey: v2PK(i), State: st, Origin: store.OriginRandom, Since: at(since), CreatedAt: at(since),
			SealedSecret: []byte{0xdd, byte(i), 0x00, 0xff},
			Deposit:      &store.DepositData{AmountGwei: 32_000_000_000 + uint64(i), NetworkName: "hoodi", ForkVersion: [4]byte{0x10, 0, 0, byte(i)}},
		}
	}
	k1, k2 := key(1, store.StateAssigned, 0), key(2, store.StateAssigned, 0)
	for _, k := range []*store.Key{&k1, &k2} {
		k.Pod, k.PodUID, k.LastPod, k.Since = "pod-a", "uid-a", "pod-a", at(1)
	}
	k3 := key(3, store.StateCoolingDown, 0)
	k3.LastPod, k3.Since, k3.ReleasedAt, k3.CoolingUntil = "pod-c", at(9), at(9), at(3600)
	k4 := key(4, store.StateAvailable, 0)
	k4.Origin, k4.Deposit = store.OriginImported, nil
	k10 := key(10, store.StateAssigned, 2)
	k10.Pod, k10.PodUID, k10.LastPod, k10.Since = "pod-p", "uid-p", "pod-p", at(4)
	k10.DepositTx = &store.DepositTx{Nonce: 3, Hash: [32]byte{1, 2, 3}, Raw: []byte{0x02, 0xf8, 10}, Block: 42, RecordedAt: at(3)}
	k11 := key(11, store.StatePendingDeposit, 2)
	k11.Origin, k11.DerivationIndex, k11.HasDerivationIndex = store.OriginDerived, 7, true
	k11.Pod, k11.PodUID = "pod-p", "uid-p"
	k11.DepositTx = &store.DepositTx{Nonce: 4, Hash: [32]byte{4, 5, 6}, Raw: []byte{0x02, 0xf8, 11}, RecordedAt: at(5)}
	k12 := key(12, store.StatePendingDeposit, 2)
	k13 := key(13, store.StateDepositFailed, 6)
	k13.Since, k13.RetiredReason = at(7), "reverted"
	for _, want := range []store.Key{k1, k2, k3, k4, k10, k11, k12, k13} {
		got, err := s.GetKey(ctx, want.Pubkey)
		if err != nil {
			t.Fatalf("GetKey(%s): %v", want.Pubkey, err)
		}
		if !keysEqual(got, want) {
			t.Errorf("key %d after migration:\n got %+v\nwant %+v", want.Pubkey[1], got, want)
		}
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := map[store.State]int{
		store.StatePendingDeposit: 2, store.StateAvailable: 1, store.StateAssigned: 3,
		store.StateCoolingDown: 1, store.StateRetired: 0, store.StateDepositFailed: 1, store.StateStillSigning: 0, store.StateExiting: 0,
	}
	if !maps.Equal(counts, wantCounts) {
		t.Errorf("Counts after migration = %v, want %v", counts, wantCounts)
	}
	events, err := s.ListAudit(ctx, 0, 10)
	if err != nil || len(events) != 2 || events[0].Action != "deposit-failed" || events[0].Actor != "depositor" ||
		events[1].Action != "release" || events[1].PodUID != "uid-c" || !slices.Equal(events[1].Pubkeys, []store.Pubkey{v2PK(3)}) {
		t.Errorf("ListAudit = %+v, %v; want the fixture's failed deposit and release", events, err)
	}
	if err := s.Bind(ctx, "kek", "fingerprint-v2"); err != nil {
		t.Errorf("Bind(kek, the fixture's value) = %v", err)
	}
	if first, err := s.ReserveIndices(ctx, 1); err != nil || first != 8 {
		t.Errorf("ReserveIndices = %d, %v; want 8", first, err)
	}
	storetest.CheckInvariants(t, s)

	// pod-p keeps its confirmed and its pending key; a pod reserves what the
	// pool (k4) does not cover, and fulfils the reservation.
	c, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-p", PodUID: "uid-p", Want: 2, Now: at(10), ReserveToken: "t1", ReserveUntil: at(70)})
	if err != nil || !slices.Equal(pubkeysOf(c.Keys), []store.Pubkey{v2PK(10)}) || len(c.Pending) != 1 || c.Reservation != nil {
		t.Errorf("Claim(pod-p) = %+v, %v; want k10, k11 pending, no reservation", c, err)
	}
	c, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-n", Want: 3, Now: at(10), ReserveToken: "t2", ReserveUntil: at(70)})
	if err != nil || !slices.Equal(pubkeysOf(c.Keys), []store.Pubkey{v2PK(4)}) || c.Reservation == nil || c.Reservation.Count != 2 {
		t.Fatalf("Claim(pod-n) = %+v, %v; want k4 and a reservation of 2", c, err)
	}
	nks := []store.NewKey{{Pubkey: v2PK(20), SealedSecret: []byte{1}, Origin: store.OriginRandom}, {Pubkey: v2PK(21), SealedSecret: []byte{2}, Origin: store.OriginRandom}}
	if c, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-n", Want: 3, Keys: nks, Now: at(11), ReserveToken: "t2"}); err != nil || len(c.Keys) != 3 {
		t.Errorf("AddAssigned(pod-n) under the reservation = %+v, %v; want 3 keys", c, err)
	}
	storetest.CheckInvariants(t, s)

	before := snapshotOf(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != SchemaVersion {
		t.Errorf("schema after migration = %d, want %d", v, SchemaVersion)
	}
	logs.Reset()
	s2, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if strings.Contains(logs.String(), "migrated") {
		t.Errorf("second Open migrated again:\n%s", logs.String())
	}
	if after := snapshotOf(t, s2); !slices.EqualFunc(before, after, keysEqual) {
		t.Errorf("store changed across reopen")
	}
}

// A schema 1 file the migration cannot read is refused and left as it was.
func TestOpenSchemaV1DamagedIsUntouched(t *testing.T) {
	path := v1Fixture(t)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketPods).Put([]byte("pod-a"), []byte{200}) // bad length
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, Options{Logger: quiet}); err == nil {
		s.Close()
		t.Fatal("Open of a damaged schema 1 file succeeded")
	} else if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("Open = %v, want a corruption error from the migration", err)
	}
	if v := schemaOf(t, path); v != 1 {
		t.Errorf("schema after a failed migration = %d, want 1", v)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, orig) {
		t.Error("a failed migration changed the file")
	}
}

func pubkeysOf(keys []store.Key) []store.Pubkey {
	out := make([]store.Pubkey, len(keys))
	for i, k := range keys {
		out[i] = k.Pubkey
	}
	return out
}

func snapshotOf(t *testing.T, s *Store) []store.Key {
	t.Helper()
	var out []store.Key
	if _, err := s.Dump(t.Context(), func(k store.Key) error { out = append(out, k); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// keysEqual compares two keys field by field, times with Equal.
func keysEqual(a, b store.Key) bool {
	times := func(k store.Key) []time.Time { return []time.Time{k.Since, k.CoolingUntil, k.ReleasedAt, k.CreatedAt} }
	ta, tb := times(a), times(b)
	for i := range ta {
		if !ta[i].Equal(tb[i]) {
			return false
		}
	}
	depEq := (a.Deposit == nil) == (b.Deposit == nil) && (a.Deposit == nil || *a.Deposit == *b.Deposit)
	txEq := (a.DepositTx == nil) == (b.DepositTx == nil) && (a.DepositTx == nil ||
		a.DepositTx.Nonce == b.DepositTx.Nonce && a.DepositTx.Hash == b.DepositTx.Hash && a.DepositTx.Block == b.DepositTx.Block &&
			a.DepositTx.RecordedAt.Equal(b.DepositTx.RecordedAt) && bytes.Equal(a.DepositTx.Raw, b.DepositTx.Raw))
	return a.Pubkey == b.Pubkey && a.State == b.State && a.Origin == b.Origin &&
		a.DerivationIndex == b.DerivationIndex && a.HasDerivationIndex == b.HasDerivationIndex &&
		a.Pod == b.Pod && a.PodUID == b.PodUID && a.LastPod == b.LastPod && a.RetiredReason == b.RetiredReason &&
		bytes.Equal(a.SealedSecret, b.SealedSecret) && depEq && txEq
}

// openFixture copies testdata/name to a temporary file and opens it,
// returning the store and what Open logged.
func openFixture(t *testing.T, name string, schema uint32) (*Store, string, *bytes.Buffer) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != schema {
		t.Fatalf("fixture %s has schema %d, want %d", name, v, schema)
	}
	var logs bytes.Buffer
	s, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path, &logs
}

// TestOpenSchemaV3 opens a store written by the schema 3 backend
// (testdata/store-v3.db, see testdata/genv3, the records of genv2): Open
// migrates it in place to the current schema, every key reads back as in
// the migrated schema 2 fixture, and the deposit index (new in schema 4)
// starts empty and works.
func TestOpenSchemaV3(t *testing.T) {
	s, path, logs := openFixture(t, "store-v3.db", 3)
	if !strings.Contains(logs.String(), "migrated store") || !strings.Contains(logs.String(), "from_schema=3") {
		t.Errorf("no migration notice in the log:\n%s", logs.String())
	}
	v2, _, _ := openFixture(t, "store-v2.db", 2)
	if got, want := snapshotOf(t, s), snapshotOf(t, v2); !slices.EqualFunc(got, want, keysEqual) || len(got) != 8 {
		t.Errorf("keys of the schema 3 fixture after migration differ from the schema 2 fixture's (%d keys, want %d)", len(got), len(want))
	}
	ctx := t.Context()
	if b, err := s.Bindings(ctx); err != nil || !maps.Equal(b, map[string]string{"kek": "fingerprint-v3"}) {
		t.Errorf("Bindings = %v, %v", b, err)
	}
	if c, err := s.DepositIndexCursor(ctx); err != nil || c != (store.IndexCursor{}) {
		t.Errorf("DepositIndexCursor = %+v, %v; want an empty index", c, err)
	}
	to := store.IndexCursor{Source: "1/0x00", Next: 10}
	if err := s.MoveDepositIndex(ctx, store.IndexCursor{}, to, []store.IndexEntry{{Key: 7, Block: 3}}); err != nil {
		t.Fatal(err)
	}
	storetest.CheckInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != SchemaVersion {
		t.Errorf("schema after migration = %d, want %d", v, SchemaVersion)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.LookupDepositIndex(ctx, []uint64{7}); err != nil || !slices.Equal(got[7], []uint64{3}) {
		t.Errorf("LookupDepositIndex after reopen = %v, %v", got, err)
	}
}

// TestOpenSchemaV4 opens a store written by the schema 4 backend
// (testdata/store-v4.db, see testdata/genv4, the records of genv2): Open
// migrates it in place to schema 5 (a seventh counter, the protect bucket),
// every key reads back as in the migrated schema 2 fixture, and keys can be
// quarantined and carry slashing protection.
func TestOpenSchemaV4(t *testing.T) {
	s, path, logs := openFixture(t, "store-v4.db", 4)
	if !strings.Contains(logs.String(), "migrated store") || !strings.Contains(logs.String(), "from_schema=4") {
		t.Errorf("no migration notice in the log:\n%s", logs.String())
	}
	v2, _, _ := openFixture(t, "store-v2.db", 2)
	if got, want := snapshotOf(t, s), snapshotOf(t, v2); !slices.EqualFunc(got, want, keysEqual) || len(got) != 8 {
		t.Errorf("keys of the schema 4 fixture after migration differ from the schema 2 fixture's (%d keys, want %d)", len(got), len(want))
	}
	ctx := t.Context()
	counts, err := s.Counts(ctx)
	if err != nil || counts[store.StateStillSigning] != 0 || len(counts) != len(store.States) {
		t.Fatalf("Counts = %v, %v", counts, err)
	}
	at := time.Date(2030, 6, 7, 9, 0, 0, 0, time.UTC)
	// k4 is available in the fixture; pod-a holds k1 and k2.
	if n, err := s.Quarantine(ctx, []store.Pubkey{v2PK(4)}, "live", at); err != nil || n != 1 {
		t.Fatalf("Quarantine = %d, %v", n, err)
	}
	prot := store.Protection{HasBlock: true, BlockSlot: 7}
	if _, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-a", PodUID: "uid-a", Until: at, Now: at,
		Protection: map[store.Pubkey]store.Protection{v2PK(1): prot}}); err != nil {
		t.Fatal(err)
	}
	storetest.CheckInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != SchemaVersion {
		t.Errorf("schema after migration = %d, want %d", v, SchemaVersion)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Protections(ctx, []store.Pubkey{v2PK(1)}); err != nil || got[v2PK(1)] != prot {
		t.Errorf("Protections after reopen = %v, %v", got, err)
	}
	if k, err := s2.GetKey(ctx, v2PK(4)); err != nil || k.State != store.StateStillSigning {
		t.Errorf("k4 after reopen: %+v, %v", k.State, err)
	}
}

// TestOpenSchemaV5 opens a store written by the schema 5 backend
// (testdata/store-v5.db, see testdata/genv5, the records of genv2): Open
// migrates it in place to schema 6 (an eighth counter, the chain bucket),
// every key reads back as in the migrated schema 2 fixture, and keys can
// exit and carry validator readings.
func TestOpenSchemaV5(t *testing.T) {
	s, path, logs := openFixture(t, "store-v5.db", 5)
	if !strings.Contains(logs.String(), "migrated store") || !strings.Contains(logs.String(), "from_schema=5") {
		t.Errorf("no migration notice in the log:\n%s", logs.String())
	}
	v2, _, _ := openFixture(t, "store-v2.db", 2)
	if got, want := snapshotOf(t, s), snapshotOf(t, v2); !slices.EqualFunc(got, want, keysEqual) || len(got) != 8 {
		t.Errorf("keys of the schema 5 fixture after migration differ from the schema 2 fixture's (%d keys, want %d)", len(got), len(want))
	}
	ctx := t.Context()
	counts, err := s.Counts(ctx)
	if err != nil || counts[store.StateExiting] != 0 || len(counts) != len(store.States) {
		t.Fatalf("Counts = %v, %v", counts, err)
	}
	at := time.Date(2030, 6, 7, 9, 0, 0, 0, time.UTC)
	// k4 is available in the fixture; pod-a holds k1 and k2.
	if _, err := s.Exit(ctx, store.ExitParams{Pubkeys: []store.Pubkey{v2PK(4)}, Reason: "shrink", Now: at}); err != nil {
		t.Fatal(err)
	}
	rd := store.ValidatorReading{Pubkey: v2PK(1), Status: store.ValidatorStatus{Index: 5, Status: store.StatusActiveOngoing,
		Balance: 32e9, ExitEpoch: ^uint64(0), Epoch: 3, At: at}}
	if _, err := s.RecordValidators(ctx, []store.ValidatorReading{rd}, at); err != nil {
		t.Fatal(err)
	}
	storetest.CheckInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != SchemaVersion {
		t.Errorf("schema after migration = %d, want %d", v, SchemaVersion)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Validators(ctx, []store.Pubkey{v2PK(1)}); err != nil || got[v2PK(1)].Index != 5 {
		t.Errorf("Validators after reopen = %v, %v", got, err)
	}
	if k, err := s2.GetKey(ctx, v2PK(4)); err != nil || k.State != store.StateExiting {
		t.Errorf("k4 after reopen: %+v, %v", k.State, err)
	}
}
