package server

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// A server on PostgreSQL holds the store lock shared from start to stop; if
// its session is lost and a tool (migrate-store, restore) takes the store
// before the server has it again, the tool believes no server runs: the
// server stops.
func TestPostgresServerStopsWhenAToolTookItsStore(t *testing.T) {
	base := pgtest.NewSchema(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "pkm-storelock-test")
	u.RawQuery = q.Encode()
	fork, _ := deposit.ParseForkVersion("0x10000038")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := New(ctx, Options{
		StoreURL: u.String(), KEK: testKEK(t), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	admin := pgtest.Connect(t, pgtest.BaseURL(t))
	var pid int32
	var classid, objid uint32
	err = admin.QueryRow(ctx, `SELECT l.pid, l.classid::int8, l.objid::int8 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.mode = 'ShareLock' AND l.granted AND a.application_name = 'pkm-storelock-test' LIMIT 1`).Scan(&pid, &classid, &objid)
	if err != nil {
		t.Fatalf("the server holds no shared store lock: %v", err)
	}
	key := int64(uint64(classid)<<32 | uint64(objid))
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	tool := pgtest.Connect(t, base)
	eventually(t, 5*time.Second, "the tool to take the store", func() bool {
		var ok bool
		if err := tool.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	})
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "took the store") {
			t.Fatalf("Serve = %v, want it to stop because a tool took the store", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server kept serving after a tool took its store")
	}
}
