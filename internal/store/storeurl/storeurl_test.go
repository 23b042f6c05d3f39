package storeurl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		url, kind, location string
		shared              bool
	}{
		{"postgres://pkm@db:5432/pk?sslmode=require", "postgres", "postgres://pkm@db:5432/pk?sslmode=require", true},
		{"postgresql://pkm@db/pk", "postgres", "postgresql://pkm@db/pk", true},
		{"bolt:///var/lib/pkm/pkmanager.db", "bolt", "/var/lib/pkm/pkmanager.db", false},
		{"bbolt:///var/lib/pkm/pkmanager.db", "bolt", "/var/lib/pkm/pkmanager.db", false},
		{"bolt://data/pkmanager.db", "bolt", "data/pkmanager.db", false},
		{"/var/lib/pkm/pkmanager.db", "bolt", "/var/lib/pkm/pkmanager.db", false},
		{"pkmanager.db", "bolt", "pkmanager.db", false},
	} {
		kind, loc, err := Parse(c.url)
		if err != nil || kind != c.kind || loc != c.location {
			t.Errorf("Parse(%s) = %s, %s, %v; want %s, %s", c.url, kind, loc, err, c.kind, c.location)
		}
		if got := Shared(c.url); got != c.shared {
			t.Errorf("Shared(%s) = %v", c.url, got)
		}
	}
	for url, want := range map[string]string{
		"":                      "no store given",
		"bolt://":               "names no file",
		"mysql://pkm@db/pk":     `unsupported scheme "mysql" (supported: bolt, postgres)`,
		"postgres://pkm@[::1/x": "store URL",
	} {
		if _, _, err := Parse(url); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", url, err, want)
		}
		if Shared(url) {
			t.Errorf("Shared(%q) = true", url)
		}
	}
}

// MustExist and InExistingDir keep a typo from making a new bbolt store;
// without them Open makes one.
func TestOpenBoltNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pkm.db")
	_, err := Open(t.Context(), "bolt://"+path, Options{MustExist: true})
	if !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("MustExist on a missing file: %v, want ErrNotExist", err)
	}
	_, err = Open(t.Context(), filepath.Join(dir, "typo", "pkm.db"), Options{InExistingDir: true})
	if err == nil || !strings.Contains(err.Error(), "does not exist; create it first") {
		t.Fatalf("InExistingDir in a missing directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "typo")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the missing directory was made: %v", err)
	}
	for _, o := range []Options{{InExistingDir: true}, {MustExist: true, Lock: LockExclusive}} {
		s, err := Open(t.Context(), path, o)
		if err != nil {
			t.Fatalf("Open(%+v): %v", o, err)
		}
		// The file lock admits one process (and one Open) at a time.
		if _, err := Open(t.Context(), "bolt://"+path, Options{}); !errors.Is(err, store.ErrLocked) {
			t.Errorf("second Open of a held file: %v, want ErrLocked", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
