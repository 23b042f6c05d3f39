package bolt

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{Logger: quiet})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openTemp(t testing.TB) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "pkmanager.db"))
}

// TestConformance runs the conformance suite, and checks after each case
// that the active index agrees with the pool and the readings.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := openTemp(t)
		t.Cleanup(func() { checkActiveIndex(t, s) })
		return s
	})
}

func TestReopen(t *testing.T) {
	storetest.RunReopen(t,
		func(t *testing.T) store.Store { return openTemp(t) },
		func(t *testing.T, s store.Store) store.Store {
			path := s.(*Store).Path()
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openAt(t, path)
		})
}

func TestOpenCreatesPrivateFileAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "store")
	path := filepath.Join(dir, "pkmanager.db")
	s := openAt(t, path)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700, filepath.Dir(dir): 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o, want %04o", p, got, want)
		}
	}
}

func TestOpenWarnsAboutOpenFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pkmanager.db")
	openAt(t, path).Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "0644") {
		t.Errorf("no warning about mode 0644 in the log:\n%s", logs.String())
	}
}

func TestOpenUnsupportedSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pkmanager.db")
	openAt(t, path).Close()

	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaSchema, binary.BigEndian.AppendUint32(nil, SchemaVersion+1))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{Logger: quiet})
	if raw, _ := os.ReadFile(path); !bytes.Equal(raw, orig) {
		t.Error("Open wrote to a store of another schema version")
	}
	if !errors.Is(err, store.ErrUnsupportedSchema) {
		t.Fatalf("Open = %v, want ErrUnsupportedSchema", err)
	}
	for _, want := range []string{path, fmt.Sprintf("version %d", SchemaVersion+1), fmt.Sprintf("version %d", SchemaVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestOpenLockedInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pkmanager.db")
	first := openAt(t, path)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	s, err := Open(path, Options{LockTimeout: timeout, Logger: quiet})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("second Open of the same file succeeded")
	}
	checkLocked(t, err, path, elapsed, timeout)

	// Once the first store is closed, the file opens again.
	first.Close()
	openAt(t, path)
}

// TestOpenLockedByAnotherProcess runs this test binary as a helper process
// that holds the store open.
func TestOpenLockedByAnotherProcess(t *testing.T) {
	if os.Getenv("PKM_BOLT_LOCK_HELPER") != "" {
		return // only the helper's own test runs in the helper
	}
	path := filepath.Join(t.TempDir(), "pkmanager.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), "PKM_BOLT_LOCK_HELPER="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper process: %q, %v", line, err)
	}
	const timeout = 300 * time.Millisecond
	start := time.Now()
	s, err := Open(path, Options{LockTimeout: timeout, Logger: quiet})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("Open of a file another process holds succeeded")
	}
	checkLocked(t, err, path, elapsed, timeout)
}

// TestLockHelper is the helper process of TestOpenLockedByAnotherProcess: it
// holds the store until its stdin closes.
func TestLockHelper(t *testing.T) {
	path := os.Getenv("PKM_BOLT_LOCK_HELPER")
	if path == "" {
		t.Skip("helper process only")
	}
	s, err := Open(path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

func checkLocked(t *testing.T, err error, path string, elapsed, timeout time.Duration) {
	t.Helper()
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Open = %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("store %s is in use by another pkmanager process", path); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if elapsed < timeout-50*time.Millisecond || elapsed > timeout+time.Second {
		t.Errorf("Open gave up after %v, want about %v", elapsed, timeout)
	}
}

func TestOpenNotAStore(t *testing.T) {
	dir := t.TempDir()
	random := make([]byte, 64<<10)
	_, _ = rand.Read(random)
	cases := map[string][]byte{
		"text":   []byte("this is not a database\n"),
		"random": random,
	}
	for name, content := range cases {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Options{Logger: quiet})
		if err == nil || !strings.Contains(err.Error(), "is not a pkmanager store") || errors.Is(err, store.ErrLocked) {
			t.Errorf("Open(%s file) = %v, want a not-a-store error", name, err)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
			t.Errorf("Open changed the %s file", name)
		}
	}

	// A bbolt database that some other program wrote.
	path := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("widgets")); return err })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{Logger: quiet}); err == nil || !strings.Contains(err.Error(), "not a pkmanager store") {
		t.Errorf("Open(foreign bbolt file) = %v, want a not-a-store error", err)
	}

	if _, err := Open(dir, Options{Logger: quiet}); err == nil {
		t.Error("Open(a directory) succeeded")
	}
}

// TestSecretsNotInPlaintext seals real secrets, stores them through every
// path that writes secrets, and searches the file for them.
func TestSecretsNotInPlaintext(t *testing.T) {
	kek, err := seal.ParseKEK(strings.Repeat("5a", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pkmanager.db")
	s := openAt(t, path)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	var secrets, sealedSecrets [][]byte
	newKeys := func(n int) []store.NewKey {
		var out []store.NewKey
		for range n {
			var pk store.Pubkey
			_, _ = rand.Read(pk[:])
			secret := make([]byte, 32)
			_, _ = rand.Read(secret)
			sealed, err := kek.Seal(secret, pk[:])
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, secret)
			sealedSecrets = append(sealedSecrets, sealed)
			out = append(out, store.NewKey{Pubkey: pk, SealedSecret: sealed, Origin: store.OriginRandom})
		}
		return out
	}
	if err := s.AddKeys(t.Context(), newKeys(4), store.StateAvailable, now); err != nil {
		t.Fatal(err)
	}
	if err := s.AddKeys(t.Context(), newKeys(2), store.StatePendingDeposit, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddAssigned(t.Context(), store.AddParams{Pod: "pod-a", Want: 2, Keys: newKeys(3), Now: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-b", Want: 2, Now: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range secrets {
		if bytes.Contains(raw, secrets[i]) {
			t.Errorf("secret %d occurs in plaintext in the store file", i)
		}
		if !bytes.Contains(raw, sealedSecrets[i]) {
			t.Errorf("sealed secret %d does not occur in the store file; the search cannot be trusted", i)
		}
	}
}

// TestBatchFailuresAreIsolated runs failing calls concurrently with good
// ones, so that bbolt's group commit rolls back shared batches and re-runs
// their calls: the good calls must not run twice or lose effects.
func TestBatchFailuresAreIsolated(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	keys := make([]store.NewKey, 200)
	for i := range keys {
		keys[i] = store.NewKey{Pubkey: testPK(i), SealedSecret: []byte{1, byte(i)}, Origin: store.OriginRandom}
	}
	if err := s.AddKeys(ctx, keys, store.StateAvailable, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, store.ClaimParams{Pod: "held", PodUID: "U", Want: 1, Now: now}); err != nil {
		t.Fatal(err)
	}
	const n = 64
	errs := make([]error, n)
	results := make([]store.Claim, n)
	done := make(chan struct{})
	for g := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			switch g % 4 {
			case 0: // UID mismatch
				_, errs[g] = s.Claim(ctx, store.ClaimParams{Pod: "held", PodUID: "other", Want: 2, Now: now})
			case 1: // key exists
				_, errs[g] = s.AddAssigned(ctx, store.AddParams{Pod: fmt.Sprintf("add-%d", g), Want: 1, Now: now,
					Keys: []store.NewKey{{Pubkey: testPK(1000 + g), SealedSecret: []byte{1}, Origin: store.OriginRandom}, keys[g]}})
			default:
				results[g], errs[g] = s.Claim(ctx, store.ClaimParams{Pod: fmt.Sprintf("pod-%d", g), Want: 2, Now: now})
			}
		}()
	}
	for range n {
		<-done
	}
	assigned := 1
	for g := range n {
		switch g % 4 {
		case 0:
			if !errors.Is(errs[g], store.ErrPodUIDMismatch) {
				t.Errorf("call %d: %v, want ErrPodUIDMismatch", g, errs[g])
			}
		case 1:
			if !errors.Is(errs[g], store.ErrKeyExists) {
				t.Errorf("call %d: %v, want ErrKeyExists", g, errs[g])
			}
		default:
			if errs[g] != nil || len(results[g].Keys) != 2 || results[g].Recycled != 2 {
				t.Errorf("call %d: %v, %d keys, %d recycled; want 2 and 2", g, errs[g], len(results[g].Keys), results[g].Recycled)
			}
			assigned += 2
		}
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[store.StateAssigned] != assigned || counts[store.StateAvailable] != len(keys)-assigned {
		t.Errorf("counts %v, want %d assigned and %d available", counts, assigned, len(keys)-assigned)
	}
	storetest.CheckInvariants(t, s)
}

func testPK(i int) store.Pubkey {
	var p store.Pubkey
	p[0] = 0xb0
	binary.BigEndian.PutUint64(p[1:], uint64(i))
	return p
}
