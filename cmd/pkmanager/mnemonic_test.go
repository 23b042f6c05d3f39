package main

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The BIP-39 reference vector with passphrase "TREZOR": the passphrase file
// is read (one trailing newline dropped) into the seed.
func TestMnemonicSeedPassphrase(t *testing.T) {
	dir := t.TempDir()
	mn := filepath.Join(dir, "m.txt")
	pp := filepath.Join(dir, "p.txt")
	os.WriteFile(mn, []byte(strings.Repeat("abandon ", 11)+"about\n"), 0o600)
	os.WriteFile(pp, []byte("TREZOR\n"), 0o600)
	seed, err := mnemonicSeed(mn, pp)
	if err != nil {
		t.Fatal(err)
	}
	const want = "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
	if got := hex.EncodeToString(seed); got != want {
		t.Fatalf("seed with passphrase TREZOR = %s, want %s", got, want)
	}
	plain, err := mnemonicSeed(mn, "")
	if err != nil || hex.EncodeToString(plain) == want {
		t.Fatalf("seed without passphrase: %x, %v", plain, err)
	}
	os.WriteFile(pp, []byte("\n"), 0o600)
	if _, err := mnemonicSeed(mn, pp); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty passphrase file: %v", err)
	}
}
