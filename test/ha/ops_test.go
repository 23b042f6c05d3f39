package ha

import (
	"bufio"
	"context"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/backup"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// podKeys asks a server for a pod's keys and returns their sorted hex pubkeys.
func podKeys(t *testing.T, grpcAddr, pod string, n int) []string {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, err := pb.NewKeyServiceClient(conn).RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, Count: uint32(n)})
	if err != nil {
		t.Fatalf("RequestKeys(%s): %v", pod, err)
	}
	var out []string
	for _, k := range r.GetKeys() {
		out = append(out, hex.EncodeToString(k.GetPubkey()))
	}
	slices.Sort(out)
	return out
}

func mustRun(t *testing.T, extraEnv []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, extraEnv, args...)
	if err != nil {
		t.Fatalf("pkmanager %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func mustFail(t *testing.T, extraEnv []string, want string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, extraEnv, args...)
	if err == nil {
		t.Fatalf("pkmanager %s succeeded, want a failure saying %q:\n%s", strings.Join(args, " "), want, out)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("pkmanager %s failed without saying %q:\n%s", strings.Join(args, " "), want, out)
	}
	return out
}

// A bbolt installation is backed up, moved to PostgreSQL with migrate-store
// and restored from the backup into another database; servers on the
// results answer every pod with the keys it held before. Passwords of the
// database URLs never appear in any output.
func TestBackupRestoreMigrate(t *testing.T) {
	pgSource := pgtest.NewSchema(t)
	pgRestore := pgtest.NewSchema(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "bolt")
	boltURL := "bolt://" + filepath.Join(dataDir, "pkmanager.db")
	kekEnv := []string{"PKM_KEK=" + testKEK}

	// A bbolt server hands out keys.
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	srv, err := serve(t, dataDir, grpcAddr, httpAddr, nil, "--deposits", "export")
	if err != nil {
		t.Fatal(err)
	}
	before := map[string][]string{}
	for pod, n := range map[string]int{"pod-a": 3, "pod-b": 2, "pod-c": 1} {
		before[pod] = podKeys(t, grpcAddr, pod, n)
	}
	// While it runs, its store cannot be backed up (the file is locked).
	out := mustFail(t, kekEnv, "stop the server", "backup", "--store", boltURL, "--out", filepath.Join(dir, "early.pkb"))
	_ = out
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(dir, "pk.backup")
	out = mustRun(t, kekEnv, "backup", "--store", boltURL, "--out", file)
	if !strings.Contains(out, "keys:   6 (") || !strings.Contains(out, "assigned 6") {
		t.Errorf("backup output does not report 6 assigned keys:\n%s", out)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, st.Mode())
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := backup.ReadHeader(bufio.NewReader(f))
	f.Close()
	if err != nil || h.KEKID == "" || !strings.Contains(out, h.KEKID) {
		t.Fatalf("backup header %+v (%v) does not name the KEK the output names:\n%s", h, err, out)
	}
	mustFail(t, kekEnv, "exists", "backup", "--store", boltURL, "--out", file)

	// migrate-store: bbolt -> PostgreSQL, verified.
	out = mustRun(t, nil, "migrate-store", "--from", boltURL, "--to", pgSource)
	if !strings.Contains(out, "verified after the restore rule") || !strings.Contains(out, "assigned 6") {
		t.Errorf("migrate-store output:\n%s", out)
	}
	assertNoPassword(t, out, pgSource)
	out = mustFail(t, nil, "empty store", "migrate-store", "--from", boltURL, "--to", pgSource)
	assertNoPassword(t, out, pgSource)

	// restore: the file into another database; with the wrong KEK it is
	// refused and names the KEK it needs.
	out = mustFail(t, []string{"PKM_KEK=" + strings.Repeat("77", 32)}, h.KEKID, "restore", "--in", file, "--store", pgRestore)
	assertNoPassword(t, out, pgRestore)
	out = mustRun(t, kekEnv, "restore", "--in", file, "--store", pgRestore)
	if !strings.Contains(out, "(verified)") {
		t.Errorf("restore output:\n%s", out)
	}
	assertNoPassword(t, out, pgRestore)
	mustFail(t, kekEnv, "empty store", "restore", "--in", file, "--store", pgRestore)

	// Servers on both PostgreSQL stores give every pod its keys back.
	for _, u := range []string{pgSource, pgRestore} {
		g, hh := freeAddr(t), freeAddr(t)
		p, err := serve(t, filepath.Join(dir, "pgdata"), g, hh, nil, "--store", u, "--deposits", "export")
		if err != nil {
			t.Fatal(err)
		}
		assertNoPassword(t, p.stderr.String(), u)
		for pod, keys := range before {
			if got := podKeys(t, g, pod, len(keys)); !slices.Equal(got, keys) {
				t.Errorf("after the move pod %s gets %v, before it held %v", pod, got, keys)
			}
		}
		if err := p.stop(20 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

func assertNoPassword(t *testing.T, out, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if pw, ok := u.User.Password(); ok && len(pw) >= 4 && strings.Contains(out, pw) {
		t.Errorf("output shows the database password:\n%s", out)
	}
}
