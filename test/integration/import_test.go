package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Pre-deposited keys: a server that never mints (--deposits off) refuses
// what its pool cannot satisfy, assigns nothing, and serves keys imported
// from keystores (into the running server) and from a mnemonic (into the
// stopped server's store). Re-importing changes nothing and says so.
func TestImportAndDepositsOff(t *testing.T) {
	work := t.TempDir()
	// Keystores of 4 keys, made by a dev server (their deposits are on its
	// chain: "made elsewhere" for the server below).
	made, pw := devKeystores(t, work, 4)

	data := t.TempDir()
	s := startServer(t, data, "--deposits", "off", "--reuse-delay", "0s")
	out, err := run(t, "request", "--server", s.grpcAddr, "--pod-name", "validator-0", "--keys", "2", "--out", filepath.Join(work, "none"), "--insecure-kdf")
	if err == nil || !strings.Contains(out, "pool exhausted: 0 available, 2 requested") {
		t.Fatalf("request on an empty pool without minting: %v\n%s", err, out)
	}
	if c := s.counts(t); c["assigned"] != 0 || c["pending-deposit"] != 0 {
		t.Fatalf("counts after a refused request: %v", c)
	}

	out = mustRun(t, "import", "--server", s.grpcAddr, "--keystores", filepath.Join(work, "src", "keystores"), "--password-file", pw)
	if !strings.Contains(out, "imported 4 keys as available (no deposits sent); 0 already stored") {
		t.Fatalf("import: %s", out)
	}
	out = mustRun(t, "import", "--server", s.grpcAddr, "--keystores", filepath.Join(work, "src", "keystores"), "--passwords-dir", filepath.Join(work, "src", "secrets"))
	if !strings.Contains(out, "imported 0 keys") || !strings.Contains(out, "4 already stored, unchanged") || strings.Count(out, "already stored, unchanged: 0x") != 4 {
		t.Fatalf("re-import: %s", out)
	}
	msg, got := request(t, s, "validator-0", 3, filepath.Join(work, "v0"))
	if !strings.Contains(msg, "recycled 3, minted 0") {
		t.Fatalf("request from imported keys: %s", msg)
	}
	for pk, secret := range got {
		if string(made[pk]) != string(secret) {
			t.Fatalf("key %s is not one of the imported keys", pk)
		}
	}
	out, err = run(t, "request", "--server", s.grpcAddr, "--pod-name", "validator-1", "--keys", "2", "--out", filepath.Join(work, "v1"), "--insecure-kdf")
	if err == nil || !strings.Contains(out, "pool exhausted: 1 available, 2 requested") {
		t.Fatalf("request beyond the pool: %v\n%s", err, out)
	}
	if c := s.counts(t); c["assigned"] != 3 || c["available"] != 1 {
		t.Fatalf("counts: %v", c)
	}

	// Into the store of the stopped server, from a mnemonic.
	mnemonic := filepath.Join(work, "mnemonic.txt")
	if err := os.WriteFile(mnemonic, []byte(mnemonicA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "import", "--data-dir", data, "--kek-file", filepath.Join(data, "kek.hex"), "--mnemonic-file", mnemonic, "--count", "3")
	if err == nil || !strings.Contains(out, "--server") {
		t.Fatalf("offline import while the server runs: %v\n%s", err, out)
	}
	s.stop()
	out = mustRun(t, "import", "--data-dir", data, "--kek-file", filepath.Join(data, "kek.hex"), "--mnemonic-file", mnemonic, "--from", "5", "--count", "3")
	if !strings.Contains(out, "imported 3 keys") || !strings.Contains(out, "derivation indices up to 7 are reserved") {
		t.Fatalf("offline mnemonic import: %s", out)
	}
	out, err = run(t, "import", "--data-dir", data, "--kek-file", filepath.Join(t.TempDir(), "missing.hex"), "--mnemonic-file", mnemonic, "--count", "1")
	if err == nil {
		t.Fatalf("import without a valid KEK file: %s", out)
	}
	s = startServer(t, data, "--deposits", "off", "--reuse-delay", "0s")
	if c := s.counts(t); c["available"] != 4 || c["assigned"] != 3 {
		t.Fatalf("counts after the offline import: %v", c)
	}
	msg, _ = request(t, s, "validator-1", 4, filepath.Join(work, "v1b"))
	if !regexp.MustCompile(`holds 4 keys \(recycled 4, minted 0\)`).MatchString(msg) {
		t.Fatalf("request after the offline import: %s", msg)
	}
}
