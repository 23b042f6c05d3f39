package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Offline commands open existing stores only: `import --data-dir` with a
// typo is refused instead of filling a new store nobody uses (08c6756
// created it and reported success), unless --create says so; backup and
// migrate-store need an existing source; restore and migrate-store make a
// new target only in an existing directory.
func TestOfflineToolsOpenExistingStoresOnly(t *testing.T) {
	work := t.TempDir()
	kek := filepath.Join(work, "kek.hex")
	if err := os.WriteFile(kek, []byte(strings.Repeat("6b", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	mnemonic := filepath.Join(work, "mnemonic.txt")
	if err := os.WriteFile(mnemonic, []byte(mnemonicA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(work, "pkmanger")
	mustFail := func(want string, args ...string) {
		t.Helper()
		out, err := run(t, args...)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("pkmanager %s: %v, want a failure saying %q:\n%s", strings.Join(args, " "), err, want, out)
		}
	}

	mustFail("give --create", "import", "--data-dir", typo, "--kek-file", kek, "--mnemonic-file", mnemonic, "--count", "1")
	mustFail("does not exist", "import", "--store", "bolt://"+filepath.Join(typo, "x.db"), "--kek-file", kek, "--mnemonic-file", mnemonic, "--count", "1")
	if _, err := os.Stat(typo); err == nil {
		t.Fatalf("a refused import created %s", typo)
	}
	out := mustRun(t, "import", "--data-dir", typo, "--create", "--kek-file", kek, "--mnemonic-file", mnemonic, "--count", "1")
	if !strings.Contains(out, "imported 1 keys") {
		t.Fatalf("import --create: %s", out)
	}
	db := filepath.Join(typo, "pkmanager.db")
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("import --create made no store: %v", err)
	}
	mustFail("--create is for", "import", "--server", "127.0.0.1:1", "--create", "--mnemonic-file", mnemonic, "--count", "1")

	// backup and migrate-store need an existing source.
	missing := filepath.Join(work, "missing.db")
	mustFail("does not exist", "backup", "--store", "bolt://"+missing, "--out", filepath.Join(work, "b.pkb"), "--kek-file", kek)
	mustFail("does not exist", "migrate-store", "--from", "bolt://"+missing, "--to", "bolt://"+filepath.Join(work, "new.db"))
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("a refused command created the missing source")
	}
	if _, err := os.Stat(filepath.Join(work, "new.db")); err == nil {
		t.Fatal("a refused migrate-store created its target")
	}

	// Targets are new stores, in existing directories only.
	file := filepath.Join(work, "b.pkb")
	mustRun(t, "backup", "--store", "bolt://"+db, "--out", file, "--kek-file", kek)
	nodir := filepath.Join(work, "no-such-dir")
	mustFail("create it first", "restore", "--in", file, "--store", "bolt://"+filepath.Join(nodir, "r.db"), "--kek-file", kek)
	mustFail("create it first", "migrate-store", "--from", "bolt://"+db, "--to", "bolt://"+filepath.Join(nodir, "m.db"))
	if _, err := os.Stat(nodir); err == nil {
		t.Fatalf("a refused restore or migrate-store created %s", nodir)
	}
	if out := mustRun(t, "restore", "--in", file, "--store", "bolt://"+filepath.Join(work, "r.db"), "--kek-file", kek); !strings.Contains(out, "(verified)") {
		t.Fatalf("restore into a new store: %s", out)
	}
	if out := mustRun(t, "migrate-store", "--from", "bolt://"+db, "--to", "bolt://"+filepath.Join(work, "m.db")); !strings.Contains(out, "copied") {
		t.Fatalf("migrate-store into a new store: %s", out)
	}
}
