package keydir

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteLegacyJSON(t *testing.T) {
	ks := genKeys(t, 2, true)
	path := filepath.Join(t.TempDir(), "sub", "keys.json")
	if err := WriteLegacyJSON(path, ks); err != nil {
		t.Fatal(err)
	}
	b64 := func(i int) string { return base64.StdEncoding.EncodeToString(ks[i].Secret) }
	want := `{"keys":[` +
		`{"validator_key":"` + b64(0) + `","withdrawal_key":"` + b64(0) + `"},` +
		`{"validator_key":"` + b64(1) + `","withdrawal_key":"` + b64(1) + `"}]}`
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("legacy JSON\n%s\nwant\n%s", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, %v", fi.Mode(), err)
	}

	// Rewritten as a whole, atomically: no temporary file left.
	if err := WriteLegacyJSON(path, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != `{"keys":[]}` {
		t.Errorf("empty: %s", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(entries))
	}
}
