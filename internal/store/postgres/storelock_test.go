package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

func openLocked(t *testing.T, rawURL string, mode postgres.LockMode) (*postgres.Store, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, rawURL, postgres.Options{Logger: slog.New(slog.DiscardHandler), Lock: mode})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// withParam returns rawURL with the query parameter k=v.
func withParam(t *testing.T, rawURL, k, v string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String()
}

// lockPIDs lists the backends holding the store lock of schema in mode.
func lockPIDs(t *testing.T, admin *pgx.Conn, schema, mode string) []int32 {
	t.Helper()
	key := uint64(postgres.StoreLockKey(schema))
	rows, err := admin.Query(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 1 AND classid = $1 AND objid = $2 AND mode = $3`, uint32(key>>32), uint32(key), mode)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// Tools that need the servers stopped are refused while any server holds
// the store, whatever application_name its connections carry (08c6756
// counted sessions named "pkmanager"), and get it once the servers are gone.
// Installations in other schemas do not count.
func TestStoreLockToolsVersusServers(t *testing.T) {
	u := pgtest.NewSchema(t)
	other := pgtest.NewSchema(t)
	a, err := openLocked(t, withParam(t, u, "application_name", "not-pkmanager"), postgres.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openLocked(t, u, postgres.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openLocked(t, other, postgres.LockExclusive); err != nil {
		t.Fatalf("a tool on another schema: %v", err)
	}
	_, err = openLocked(t, u, postgres.LockExclusive)
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "2 pkmanager servers are running on") || !strings.Contains(err.Error(), "stop them first") {
		t.Fatalf("tool while 2 servers run: %v", err)
	}
	if pu, _ := url.Parse(u); pu.User != nil {
		if pw, ok := pu.User.Password(); ok && strings.Contains(err.Error(), pw) {
			t.Errorf("the message shows the database password: %v", err)
		}
	}
	b.Close()
	if _, err := openLocked(t, u, postgres.LockExclusive); err == nil || !strings.Contains(err.Error(), "1 pkmanager servers are running") {
		t.Fatalf("tool while 1 server runs: %v", err)
	}
	a.Close()
	tool, err := openLocked(t, u, postgres.LockExclusive)
	if err != nil {
		t.Fatalf("tool after the servers stopped: %v", err)
	}
	// While the tool holds the store, no server starts, and no second tool.
	if _, err := openLocked(t, u, postgres.LockShared); !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "migrate-store or restore") {
		t.Fatalf("server while a tool holds the store: %v", err)
	}
	if _, err := openLocked(t, u, postgres.LockExclusive); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second tool: %v", err)
	}
	if err := tool.CheckLock(); err != nil {
		t.Fatal(err)
	}
	tool.Close()
	if _, err := openLocked(t, u, postgres.LockShared); err != nil {
		t.Fatalf("server after the tool: %v", err)
	}
}

// A server whose store lock session is lost reports it in Ping and takes
// the lock again. If a tool took the store in between, LockTaken says so,
// and the server's transactions wait until the tool is done: nothing the
// server writes lands while the tool holds the store.
func TestStoreLockSessionLost(t *testing.T) {
	u := pgtest.NewSchema(t)
	schema := schemaOf(t, u)
	admin := pgtest.Connect(t, pgtest.BaseURL(t))
	s, err := openLocked(t, u, postgres.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kill := func() {
		t.Helper()
		pids := lockPIDs(t, admin, schema, "ShareLock")
		if len(pids) != 1 {
			t.Fatalf("%d sessions hold the store lock shared, want 1", len(pids))
		}
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pids[0]); err != nil {
			t.Fatal(err)
		}
	}

	kill()
	waitFor(t, 5*time.Second, "Ping to report the lost lock", func() bool { return errors.Is(s.Ping(ctx), postgres.ErrLockLost) })
	waitFor(t, 10*time.Second, "the lock to be taken again", func() bool { return s.Ping(ctx) == nil })
	if n := len(lockPIDs(t, admin, schema, "ShareLock")); n != 1 {
		t.Fatalf("%d sessions hold the lock after reconnecting", n)
	}

	// A tool takes the store in the gap.
	kill()
	tool := pgtest.Connect(t, u)
	waitFor(t, 5*time.Second, "the tool to take the store", func() bool {
		var ok bool
		if err := tool.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", postgres.StoreLockKey(schema)).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	})
	select {
	case <-s.LockTaken():
	case <-time.After(10 * time.Second):
		t.Fatal("LockTaken not closed after a tool took the store")
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	err = s.Bind(wctx, "test-binding", "x")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a write while the tool holds the store: %v, want it to wait until its deadline", err)
	}
	if b, err := s.Bindings(ctx); err != nil || b["test-binding"] != "" {
		t.Fatalf("bindings %v (%v): the write landed", b, err)
	}
	if _, err := tool.Exec(ctx, "SELECT pg_advisory_unlock($1)", postgres.StoreLockKey(schema)); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, "test-binding", "x"); err != nil {
		t.Fatalf("a write after the tool: %v", err)
	}
	waitFor(t, 10*time.Second, "the lock to be taken again after the tool", func() bool { return s.Ping(ctx) == nil })
}
