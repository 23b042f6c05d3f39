package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mnemonic new writes a new 0600 BIP-39 mnemonic that is not printed, never
// overwrites one, and import derives keys from it with a passphrase.
func TestMnemonicNew(t *testing.T) {
	dir := t.TempDir()
	mn := filepath.Join(dir, "mnemonic.txt")
	out := mustRun(t, "mnemonic", "new", "--out", mn)
	b, err := os.ReadFile(mn)
	if err != nil {
		t.Fatal(err)
	}
	words := strings.Fields(string(b))
	if len(words) != 24 {
		t.Fatalf("%d words in %s", len(words), mn)
	}
	// Exactly the one line, so no word of the mnemonic is printed; a check
	// for each word would also match the message's own words, several of
	// which ("new", "keep", "copy") are BIP-39 words.
	if want := "wrote a new 24-word BIP-39 mnemonic to " + mn + " (mode 0600); keep a copy offline\n"; out != want {
		t.Fatalf("mnemonic new printed\n%q\nwant\n%q", out, want)
	}
	if fi, _ := os.Stat(mn); fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", mn, fi.Mode().Perm())
	}
	if out, err := run(t, "mnemonic", "new", "--out", mn); err == nil || !strings.Contains(out, "never overwritten") {
		t.Fatalf("mnemonic new over an existing file: %v\n%s", err, out)
	}
	if b2, _ := os.ReadFile(mn); string(b2) != string(b) {
		t.Fatal("the existing mnemonic file changed")
	}
	if out := mustRun(t, "mnemonic", "new", "--out", filepath.Join(dir, "m12.txt"), "--words", "12", "--show"); len(strings.Fields(strings.SplitN(out, "\n", 2)[1])) != 12 {
		t.Fatalf("--show --words 12:\n%s", out)
	}

	pp := filepath.Join(dir, "passphrase.txt")
	os.WriteFile(pp, []byte("correct horse\n"), 0o600)
	kek := filepath.Join(dir, "kek.hex")
	os.WriteFile(kek, []byte(strings.Repeat("cd", 32)), 0o600)
	out = mustRun(t, "import", "--store", "bolt://"+filepath.Join(dir, "s.db"), "--create", "--kek-file", kek,
		"--mnemonic-file", mn, "--mnemonic-passphrase-file", pp, "--count", "2")
	if !strings.Contains(out, "imported 2 keys") {
		t.Fatalf("import with a passphrase:\n%s", out)
	}
	if out, err := run(t, "import", "--store", "bolt://"+filepath.Join(dir, "s.db"), "--kek-file", kek, "--mnemonic-passphrase-file", pp,
		"--keystores", dir, "--password-file", pp); err == nil || !strings.Contains(out, "needs --mnemonic-file") {
		t.Fatalf("a passphrase without a mnemonic: %v\n%s", err, out)
	}
}
