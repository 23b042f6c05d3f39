package server

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// pgbenchPath finds pgbench: on $PATH, else in Debian's versioned directory.
// It comes with the PostgreSQL server package (Debian's postgresql-15, which
// scripts/postgres-test-db.sh installs for the tests).
func pgbenchPath(b *testing.B) string {
	b.Helper()
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench"); len(m) > 0 {
		return m[len(m)-1]
	}
	b.Fatal("pgbench not found: it comes with the PostgreSQL server package (Debian: postgresql-15, installed by scripts/postgres-test-db.sh)")
	return ""
}

var pgbenchTPS = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchCommits measures the database's rate of single-row-update commits
// with pgbench: `clients` connections, each running UPDATE of one random row
// of a 100,000-row table in its own transaction, for d, in a table of the
// schema of schemaURL (a pgtest.NewSchema URL). It returns the commits per
// second pgbench reports.
func pgbenchCommits(b *testing.B, schemaURL string, clients int, d time.Duration) float64 {
	b.Helper()
	exe := pgbenchPath(b)
	u, err := url.Parse(schemaURL)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	schema := q.Get("search_path")
	q.Del("search_path") // pgx's run-time parameter; libpq refuses it in a URI
	u.RawQuery = q.Encode()
	conn := pgtest.Connect(b, schemaURL)
	for _, stmt := range []string{
		"CREATE TABLE " + schema + ".pkm_pgbench (id int PRIMARY KEY, v bigint NOT NULL)",
		"INSERT INTO " + schema + ".pkm_pgbench SELECT g, 0 FROM generate_series(1, 100000) g",
		"VACUUM ANALYZE " + schema + ".pkm_pgbench",
	} {
		if _, err := conn.Exec(b.Context(), stmt); err != nil {
			b.Fatalf("pgbench table: %v", err)
		}
	}
	script := filepath.Join(b.TempDir(), "update.sql")
	body := "\\set id random(1, 100000)\nUPDATE " + schema + ".pkm_pgbench SET v = v + 1 WHERE id = :id;\n"
	if err := os.WriteFile(script, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(b.Context(), exe, "-n", "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(d.Seconds())), "-f", script, u.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench: %v\n%s", err, out)
	}
	m := pgbenchTPS.FindSubmatch(out)
	if m == nil {
		b.Fatalf("pgbench printed no rate:\n%s", out)
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		b.Fatal(err)
	}
	return tps
}
