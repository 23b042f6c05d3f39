package ha

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// migrate-store refuses a PostgreSQL source while a server runs on it, also
// when the server's connections carry another application_name (08c6756
// counted sessions named "pkmanager", so it copied the live store), and so
// does restore for a target a server runs on; a backup may be taken
// meanwhile. Once the server has stopped, migrate-store copies the store.
func TestToolsRefuseLiveServers(t *testing.T) {
	pg := pgtest.NewSchema(t)
	empty := pgtest.NewSchema(t)
	dir := t.TempDir()
	kekEnv := []string{"PKM_KEK=" + testKEK}
	copyDB := filepath.Join(dir, "copy.db")

	g, h := freeAddr(t), freeAddr(t)
	srv, err := serve(t, filepath.Join(dir, "data"), g, h, nil, "--store", pg+"&application_name=validators", "--deposits", "export")
	if err != nil {
		t.Fatal(err)
	}
	keys := podKeys(t, g, "pod-a", 2)

	out := mustFail(t, nil, "1 pkmanager servers are running on", "migrate-store", "--from", pg, "--to", "bolt://"+copyDB)
	if !strings.Contains(out, "stop them first") {
		t.Errorf("migrate-store does not say what to do:\n%s", out)
	}
	assertNoPassword(t, out, pg)
	if _, err := os.Stat(copyDB); err == nil {
		t.Errorf("the refused migrate-store created %s", copyDB)
	}
	backupFile := filepath.Join(dir, "pk.backup")
	mustRun(t, kekEnv, "backup", "--store", pg, "--out", backupFile)
	// An import may go into a PostgreSQL store its servers use (it holds
	// the store lock shared, like a replica); a store that does not exist
	// yet needs --create.
	mnemonic := filepath.Join(dir, "mnemonic.txt")
	if err := os.WriteFile(mnemonic, []byte("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, kekEnv, "import", "--store", pg, "--mnemonic-file", mnemonic, "--from", "100", "--count", "1"); !strings.Contains(out, "imported 1 keys") {
		t.Errorf("import into the store of a running server:\n%s", out)
	}
	fresh := pgtest.NewSchema(t)
	mustFail(t, kekEnv, "give --create", "import", "--store", fresh, "--mnemonic-file", mnemonic, "--count", "1")
	if out := mustRun(t, kekEnv, "import", "--store", fresh, "--create", "--mnemonic-file", mnemonic, "--count", "1"); !strings.Contains(out, "imported 1 keys") {
		t.Errorf("import --create into an empty schema:\n%s", out)
	}

	// A server on the (empty) target of a restore.
	g2, h2 := freeAddr(t), freeAddr(t)
	srv2, err := serve(t, filepath.Join(dir, "data2"), g2, h2, nil, "--store", empty+"&application_name=other", "--deposits", "export")
	if err != nil {
		t.Fatal(err)
	}
	out = mustFail(t, kekEnv, "1 pkmanager servers are running on", "restore", "--in", backupFile, "--store", empty)
	assertNoPassword(t, out, empty)
	if err := srv2.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}

	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, nil, "migrate-store", "--from", pg, "--to", "bolt://"+copyDB)
	if !strings.Contains(out, "assigned 2") || !strings.Contains(out, "cooling-down 1") {
		t.Errorf("migrate-store output:\n%s", out)
	}
	// The copy serves pod-a its keys.
	g3, h3 := freeAddr(t), freeAddr(t)
	p, err := serve(t, filepath.Join(dir, "data3"), g3, h3, nil, "--store", "bolt://"+copyDB, "--deposits", "export")
	if err != nil {
		t.Fatal(err)
	}
	if got := podKeys(t, g3, "pod-a", 2); !slices.Equal(got, keys) {
		t.Errorf("after the move pod-a gets %v, before it held %v", got, keys)
	}
	if err := p.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}
