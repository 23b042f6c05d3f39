package bolt

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// TestCloseWritesFreelist: a store closed by Close holds bbolt's free-page
// list, so that the next Open reads it instead of walking every page; the
// first commit after that Open drops the list again (a kill then leaves a
// file whose Open walks the pages, as every commit's file did before), and
// the list read from the file is the one bbolt's own check agrees with.
func TestCloseWritesFreelist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pk.db")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	addKeys := func(s *Store, from, n int) {
		t.Helper()
		keys := make([]store.NewKey, n)
		for i := range keys {
			keys[i] = store.NewKey{Pubkey: testPK(from + i), SealedSecret: make([]byte, 61), Origin: store.OriginImported}
		}
		if err := s.AddKeys(t.Context(), keys, store.StateAvailable, now); err != nil {
			t.Fatal(err)
		}
	}
	// Claims move keys out of the pool bucket: pages are freed.
	addKeys(s, 0, 2000)
	for i := range 50 {
		if _, err := s.Claim(t.Context(), store.ClaimParams{Pod: fmt.Sprintf("pod-%d", i), PodUID: "u", Want: 20, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	if freelistInFile(t, path) {
		t.Fatal("a commit wrote the free-page list: every commit pays for it")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !freelistInFile(t, path) {
		t.Fatal("no free-page list in the file after Close: the next Open walks every page of the store")
	}
	checkFile(t, path)

	s, err = Open(path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	addKeys(s, 2000, 10)
	if freelistInFile(t, path) {
		t.Fatal("the first commit after Open kept the free-page list in the file: a kill now would leave a stale list")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)
	s, err = Open(path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	counts, err := s.Counts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if counts[store.StateAvailable] != 2010-50*20 || counts[store.StateAssigned] != 50*20 {
		t.Fatalf("counts after reopening: %v", counts)
	}
}

// freelistInFile reports whether the file's current meta page (the valid
// one with the higher transaction ID) points at a free-page list: bbolt's
// on-disk meta, page header (16 bytes) then magic, version, page size,
// flags, root bucket (16 bytes), freelist page, high-water page, txid,
// checksum, in the machine's byte order.
func freelistInFile(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const magic = 0xED0CDAED
	pageSize := int(binary.NativeEndian.Uint32(b[16+8:]))
	var freelist, txid uint64
	found := false
	for _, off := range []int{0, pageSize} {
		m := b[off+16:]
		if binary.NativeEndian.Uint32(m) != magic {
			continue
		}
		if id := binary.NativeEndian.Uint64(m[48:]); !found || id > txid {
			freelist, txid, found = binary.NativeEndian.Uint64(m[32:]), id, true
		}
	}
	if !found {
		t.Fatalf("%s: no valid meta page", path)
	}
	return freelist != ^uint64(0)
}

// checkFile runs bbolt's consistency check (every page reachable or free,
// none both) on the closed file.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bbolt check of %s: %v", path, err)
	}
}

// TestCloseTwice: a second Close writes nothing and fails with nothing.
func TestCloseTwice(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "pk.db"), Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
