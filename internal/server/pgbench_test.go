package server

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
	schema := schemaOf(b, schemaURL)
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
	return runPgbench(b, schemaURL, clients, d, "simple",
		"\\set id random(1, 100000)\nUPDATE "+schema+".pkm_pgbench SET v = v + 1 WHERE id = :id;\n")
}

// pgbenchClaims measures the database's own rate of the claim the servers
// make (pkm_claim_audit: one new pod, one key from the pool, with its audit
// event, in its own transaction) with pgbench: `clients` connections for d,
// each with the prepared-statement protocol, as pgx uses, on a pool of its
// own (a new schema of n available keys; the servers' pool is not touched).
// The servers' rate beside it says how much of the cost is the database's.
func pgbenchClaims(b *testing.B, clients, n int, d time.Duration) float64 {
	b.Helper()
	u := pgtest.NewSchema(b)
	fillPGPool(b, u, n)
	// One key per transaction, for want 1 (all or nothing off, as with a
	// minter), the Go store's retries for locked keys, no RequireActive.
	tps := runPgbench(b, u, clients, d, "prepared", "\\set r random(1, 1000000000)\n"+
		"SELECT count(*) FROM pkm_claim_audit('pgbench-' || :client_id || '-' || :r, '', 1, now(), false, 20, '', now(), "+
		"false, NULL, NULL, 'assign', 'recycle', 'pgbench', 'uid-adopted', '');\n")
	// A claim of an empty pool is cheaper: the rate counts only if every
	// claim took a key.
	var left int
	if err := pgtest.Connect(b, u).QueryRow(b.Context(), "SELECT count(*) FROM pkm_keys WHERE state = 'available'").Scan(&left); err != nil {
		b.Fatal(err)
	}
	if left == 0 {
		b.Fatalf("pgbench claimed all %d keys of its pool in %s: make the pool larger", n, d)
	}
	return tps
}

// schemaOf is the schema of a pgtest.NewSchema URL.
func schemaOf(b *testing.B, schemaURL string) string {
	b.Helper()
	u, err := url.Parse(schemaURL)
	if err != nil {
		b.Fatal(err)
	}
	return u.Query().Get("search_path")
}

// runPgbench runs the pgbench script body (protocol "simple" or
// "prepared") from `clients` connections for d on the database of
// schemaURL, with its schema first on the search path, and returns the
// transactions per second pgbench reports.
func runPgbench(b *testing.B, schemaURL string, clients int, d time.Duration, protocol, body string) float64 {
	b.Helper()
	exe := pgbenchPath(b)
	u, err := url.Parse(schemaURL)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	schema := q.Get("search_path")
	q.Del("search_path") // pgx's run-time parameter; libpq refuses it in a URI
	q.Set("options", "-c search_path="+schema)
	// libpq decodes %20, not Encode's "+", as a space (a "+" of the
	// values themselves is encoded as %2B).
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	script := filepath.Join(b.TempDir(), "script.sql")
	if err := os.WriteFile(script, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(b.Context(), exe, "-n", "-M", protocol, "-c", strconv.Itoa(clients), "-j", "2",
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
