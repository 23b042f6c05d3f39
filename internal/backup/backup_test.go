package backup_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/backup"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

func kek(t *testing.T, hexByte string) *seal.KEK {
	k, err := seal.ParseKEK(strings.Repeat(hexByte, seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openBolt(t *testing.T) *bolt.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "pk.db"), bolt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill puts keys in every state into s, with real sealed secrets, plus
// bindings, reserved indices and audit events. It returns the plaintext
// secrets.
func fill(t *testing.T, s store.Store, k *seal.KEK) [][]byte {
	ctx := t.Context()
	now := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	var secrets [][]byte
	newKey := func(i int) store.NewKey {
		secret := make([]byte, 32)
		rand.Read(secret)
		secrets = append(secrets, secret)
		pk := storetest.PK(i)
		sealed, err := k.Seal(secret, pk[:])
		if err != nil {
			t.Fatal(err)
		}
		nk := store.NewKey{Pubkey: pk, SealedSecret: sealed, Origin: store.OriginRandom,
			Deposit: &store.DepositData{AmountGwei: 32e9, NetworkName: "devnet", ForkVersion: [4]byte{1, 2, 3, byte(i)}}}
		if i%3 == 0 {
			nk.Origin, nk.DerivationIndex, nk.HasDerivationIndex = store.OriginDerived, uint32(i), true
		}
		return nk
	}
	var keys []store.NewKey
	for i := 1; i <= 30; i++ {
		keys = append(keys, newKey(i))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Bind(ctx, store.BindKEK, k.ID()))
	must(s.Bind(ctx, "network", "devnet"))
	if _, err := s.ReserveIndices(ctx, 31); err != nil {
		t.Fatal(err)
	}
	must(s.AddKeys(ctx, keys[:20], store.StateAvailable, now))
	must(s.AddPending(ctx, store.AddParams{Pod: "pod-p", PodUID: "uid-p", Want: 3, Keys: keys[20:25], Now: now}))
	must(s.AddKeys(ctx, keys[25:], store.StatePendingDeposit, now))
	for i, pod := range []string{"pod-a", "pod-b", "pod-c"} {
		if _, err := s.Claim(ctx, store.ClaimParams{Pod: pod, PodUID: "uid-" + pod, Want: 3 + i, Now: now.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-b", Until: now.Add(time.Hour), Now: now.Add(2 * time.Second), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	must(s.Retire(ctx, storetest.PK(19), "compromised", now.Add(3*time.Second)))
	must(s.SetDepositTx(ctx, storetest.PK(21), store.DepositTx{Nonce: 7, Hash: [32]byte{9}, Raw: []byte{1, 2, 3}}, now.Add(4*time.Second)))
	if _, err := s.ConfirmDeposit(ctx, storetest.PK(21), 100, now.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	must(s.FailDeposit(ctx, storetest.PK(26), "reverted", now.Add(6*time.Second)))
	must(s.AppendAudit(store.WithActor(ctx, "user:test"), store.AuditEvent{Time: now, Action: "note", Reason: "hello"}))
	return secrets
}

func dumpAll(t *testing.T, s store.Store) (store.Snapshot, []store.Key) {
	var keys []store.Key
	snap, err := s.Dump(t.Context(), func(k store.Key) error { keys = append(keys, k); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return snap, keys
}

func TestRoundTrip(t *testing.T) {
	k := kek(t, "11")
	src := openBolt(t)
	secrets := fill(t, src, k)
	var file bytes.Buffer
	sum, err := backup.Write(t.Context(), &file, src, k, time.Now())
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if sum.Keys != 30 || sum.Counts[store.StateRetired] != 1 || sum.Counts[store.StateDepositFailed] != 1 || sum.AuditEvents < 3 {
		t.Fatalf("summary %+v does not describe the filled store", sum)
	}
	// Nothing of the store is readable in the file: no secret, no sealed
	// secret, no public key.
	_, keys := dumpAll(t, src)
	for _, sec := range secrets {
		if bytes.Contains(file.Bytes(), sec) {
			t.Fatal("a plaintext secret is in the backup file")
		}
	}
	for _, key := range keys {
		if bytes.Contains(file.Bytes(), key.SealedSecret) || bytes.Contains(file.Bytes(), []byte(key.Pubkey.String()[2:])) {
			t.Fatal("a sealed secret or public key is readable in the backup file")
		}
	}
	h, _, err := backup.ReadHeader(bufioReader(file.Bytes()))
	if err != nil || h.KEKID != k.ID() || h.Format != backup.FormatVersion {
		t.Fatalf("header %+v, %v; want KEK %s", h, err, k.ID())
	}

	c, err := backup.Read(bytes.NewReader(file.Bytes()), k)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !c.Summary.Equal(sum) {
		t.Fatalf("read summary %+v, written %+v", c.Summary, sum)
	}
	targets := map[string]store.Store{"bolt": openBolt(t)}
	if pgtest.Enabled() {
		pg, err := postgres.Open(t.Context(), pgtest.NewSchema(t), postgres.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		targets["postgres"] = pg
	}
	wantSnap, wantKeys := dumpAll(t, src)
	for name, dst := range targets {
		if err := dst.Load(t.Context(), c.Snapshot, c.Keys); err != nil {
			t.Fatalf("%s: Load: %v", name, err)
		}
		got, err := backup.Summarize(t.Context(), dst)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(sum) {
			t.Errorf("%s: restored store differs: %s", name, sum.Diff(got))
		}
		gotSnap, gotKeys := dumpAll(t, dst)
		if !reflect.DeepEqual(norm(gotKeys), norm(wantKeys)) || !reflect.DeepEqual(gotSnap.Bindings, wantSnap.Bindings) || gotSnap.NextIndex != wantSnap.NextIndex {
			t.Errorf("%s: restored store differs from the source", name)
		}
		storetest.CheckInvariants(t, dst)
		// A second restore into the now filled store is refused.
		if err := dst.Load(t.Context(), c.Snapshot, c.Keys); !errors.Is(err, store.ErrNotEmpty) {
			t.Errorf("%s: Load into a filled store: %v, want ErrNotEmpty", name, err)
		}
	}
}

func norm(keys []store.Key) []store.Key {
	out := make([]store.Key, len(keys))
	for i, k := range keys {
		for _, p := range []*time.Time{&k.Since, &k.CoolingUntil, &k.ReleasedAt, &k.CreatedAt} {
			if !p.IsZero() {
				*p = p.UTC()
			}
		}
		if k.DepositTx != nil {
			tx := *k.DepositTx
			tx.RecordedAt = tx.RecordedAt.UTC()
			if len(tx.Raw) == 0 {
				tx.Raw = nil
			}
			k.DepositTx = &tx
		}
		out[i] = k
	}
	return out
}

func TestWrongKEKAndTampering(t *testing.T) {
	k := kek(t, "22")
	src := openBolt(t)
	fill(t, src, k)
	var file bytes.Buffer
	if _, err := backup.Write(t.Context(), &file, src, k, time.Now()); err != nil {
		t.Fatal(err)
	}
	good := file.Bytes()
	if _, err := backup.Read(bytes.NewReader(good), kek(t, "33")); !errors.Is(err, backup.ErrWrongKEK) {
		t.Errorf("Read with another KEK: %v, want ErrWrongKEK", err)
	}
	headerEnd := bytes.Index(good[len(backup.Magic):], []byte("\n")) + len(backup.Magic) + 1
	cases := map[string][]byte{
		"payload byte flipped": flip(good, headerEnd+100),
		"last byte flipped":    flip(good, len(good)-1),
		"cut short":            good[:len(good)-40],
		"cut at a frame":       good[:headerEnd+4],
		"data appended":        append(bytes.Clone(good), 0),
		"header changed":       bytes.Replace(good, []byte(`"format":1`), []byte(`"format":1 `), 1),
	}
	for what, b := range cases {
		if _, err := backup.Read(bytes.NewReader(b), k); !errors.Is(err, backup.ErrCorrupt) {
			t.Errorf("%s: Read = %v, want ErrCorrupt", what, err)
		}
	}
	// A store bound to another KEK is not backed up under this one.
	if _, err := backup.Write(t.Context(), &bytes.Buffer{}, src, kek(t, "44"), time.Now()); !errors.Is(err, backup.ErrWrongKEK) {
		t.Errorf("Write with a KEK the store is not sealed with: %v, want ErrWrongKEK", err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

// Large stores span several frames.
func TestManyFrames(t *testing.T) {
	k := kek(t, "55")
	src := openBolt(t)
	var keys []store.NewKey
	for i := range 12000 {
		pk := storetest.PK(i)
		sealed, _ := k.Seal(make([]byte, 32), pk[:])
		keys = append(keys, store.NewKey{Pubkey: pk, SealedSecret: sealed, Origin: store.OriginImported})
	}
	if err := src.AddKeys(context.Background(), keys, store.StateAvailable, time.Now()); err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	sum, err := backup.Write(t.Context(), &file, src, k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if file.Len() < 2<<20 {
		t.Fatalf("backup of %d bytes: the test wants several frames", file.Len())
	}
	c, err := backup.Read(bytes.NewReader(file.Bytes()), k)
	if err != nil || !c.Summary.Equal(sum) || len(c.Keys) != 12000 {
		t.Fatalf("Read: %d keys, %v", len(c.Keys), err)
	}
	// Dropping a whole middle frame is detected.
	headerEnd := bytes.Index(file.Bytes()[len(backup.Magic):], []byte("\n")) + len(backup.Magic) + 1
	first := int(uint32(file.Bytes()[headerEnd])<<24 | uint32(file.Bytes()[headerEnd+1])<<16 | uint32(file.Bytes()[headerEnd+2])<<8 | uint32(file.Bytes()[headerEnd+3]))
	dropped := append(bytes.Clone(file.Bytes()[:headerEnd]), file.Bytes()[headerEnd+4+first:]...)
	if _, err := backup.Read(bytes.NewReader(dropped), k); !errors.Is(err, backup.ErrCorrupt) {
		t.Errorf("a frame dropped: %v, want ErrCorrupt", err)
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
