package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKEK(t *testing.T) *KEK {
	t.Helper()
	k, err := ParseKEK(strings.Repeat("ab", KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := testKEK(t)
	secret := bytes.Repeat([]byte{7}, 32)
	pub := bytes.Repeat([]byte{1}, 48)
	sealed, err := k.Seal(secret, pub)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed output contains the plaintext")
	}
	again, _ := k.Seal(secret, pub)
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of one secret are equal: nonce not random")
	}
	got, err := k.Open(sealed, pub)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %x %v", got, err)
	}
}

func TestOpenRejects(t *testing.T) {
	k := testKEK(t)
	pub := bytes.Repeat([]byte{1}, 48)
	sealed, err := k.Seal(bytes.Repeat([]byte{7}, 32), pub)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ParseKEK(strings.Repeat("cd", KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(sealed, pub); !errors.Is(err, ErrOpen) {
		t.Errorf("wrong KEK: %v", err)
	}
	if _, err := k.Open(sealed, bytes.Repeat([]byte{2}, 48)); !errors.Is(err, ErrOpen) {
		t.Errorf("other pubkey: %v", err)
	}
	bad := append([]byte(nil), sealed...)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open(bad, pub); !errors.Is(err, ErrOpen) {
		t.Errorf("tampered: %v", err)
	}
	if _, err := k.Open(sealed[:5], pub); !errors.Is(err, ErrOpen) {
		t.Errorf("short: %v", err)
	}
	if k.ID() == other.ID() || len(k.ID()) != 16 {
		t.Errorf("ids %q %q", k.ID(), other.ID())
	}
}

func TestParseKEKErrorsHideInput(t *testing.T) {
	for _, in := range []string{"", "zz", strings.Repeat("ab", 31), strings.Repeat("secretvalue", 6)} {
		_, err := ParseKEK(in)
		if err == nil {
			t.Fatalf("%q accepted", in)
		}
		if in != "" && strings.Contains(err.Error(), in) {
			t.Fatalf("error repeats the input: %v", err)
		}
	}
}

func TestGenerateAndLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	k, created, warn, err := LoadOrGenerateKEKFile(path)
	if err != nil || !created || warn != "" {
		t.Fatalf("generate: created=%v warn=%q err=%v", created, warn, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	k2, created, _, err := LoadOrGenerateKEKFile(path)
	if err != nil || created || k2.ID() != k.ID() {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	if _, err := GenerateKEKFile(path); err == nil {
		t.Fatal("GenerateKEKFile overwrote an existing key")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, warn, err := LoadKEKFile(path); err != nil || warn == "" {
		t.Fatalf("world-readable file: warn=%q err=%v", warn, err)
	}
}
