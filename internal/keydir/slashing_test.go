package keydir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSlashingProtection(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	want := filepath.Join(out, SlashingProtectionFile)

	// Nothing to write and nothing there: nothing happens.
	if p, removed, err := WriteSlashingProtection(out, nil); err != nil || removed || p != want {
		t.Fatalf("empty, no file: %q %v %v", p, removed, err)
	}
	for _, data := range []string{`{"a":1}`, `{"b":2}`} {
		p, removed, err := WriteSlashingProtection(out, []byte(data))
		if err != nil || removed || p != want {
			t.Fatalf("write: %q %v %v", p, removed, err)
		}
		got, err := os.ReadFile(want)
		if err != nil || string(got) != data {
			t.Fatalf("file holds %q (%v), want %q", got, err, data)
		}
		fi, _ := os.Stat(want)
		if fi.Mode().Perm() != fileMode {
			t.Fatalf("mode %v", fi.Mode())
		}
		di, _ := os.Stat(out)
		if di.Mode().Perm() != dirMode {
			t.Fatalf("directory mode %v", di.Mode())
		}
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	// No history any more: the stale file goes.
	if _, removed, err := WriteSlashingProtection(out, nil); err != nil || !removed {
		t.Fatalf("remove: %v %v", removed, err)
	}
	if _, err := os.Stat(want); !os.IsNotExist(err) {
		t.Fatalf("stale file still there: %v", err)
	}
}
