// Package pgtest gives tests a PostgreSQL database: the server named by
// PKM_TEST_POSTGRES (scripts/test.sh starts one and sets it), with a fresh
// schema per test.
//
// Without PKM_TEST_POSTGRES a test skips, except under CI=true, where it
// fails: PostgreSQL tests never skip silently in CI.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env is the variable that names the test server:
// postgres://user:password@127.0.0.1:5432/database.
const Env = "PKM_TEST_POSTGRES"

// BaseURL returns the test server's URL, or skips t (fails it under CI=true)
// when none is configured.
func BaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(Env)
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: CI must run the PostgreSQL tests (scripts/test.sh starts a server)", Env)
		}
		t.Skipf("%s is not set: no PostgreSQL to test against (scripts/test.sh starts one)", Env)
	}
	return u
}

// Connect opens a plain connection to url, closed at cleanup.
func Connect(t testing.TB, rawURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		t.Fatalf("connect to the test PostgreSQL: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// NewSchema creates an empty schema in the test database, drops it (with
// everything in it) at cleanup, and returns a URL whose connections use it.
func NewSchema(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	b := make([]byte, 6)
	rand.Read(b)
	name := "pkmt_" + hex.EncodeToString(b)
	admin := Connect(t, base)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Logf("drop test schema %s: %v", name, err)
		}
	})
	return WithSchema(t, base, name)
}

// WithSchema returns rawURL with search_path set to schema.
func WithSchema(t testing.TB, rawURL, schema string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("%s is not a URL", Env)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Enabled reports whether tests should use PostgreSQL: when PKM_TEST_POSTGRES
// is set, and under CI=true (where BaseURL then fails if it is not).
func Enabled() bool {
	return os.Getenv(Env) != "" || os.Getenv("CI") == "true"
}
