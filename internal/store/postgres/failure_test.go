package postgres_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type dumped struct {
	snap store.Snapshot
	keys []store.Key
}

func dump(t *testing.T, s store.Store) dumped {
	t.Helper()
	var d dumped
	var err error
	d.snap, err = s.Dump(t.Context(), func(k store.Key) error { d.keys = append(d.keys, k); return nil })
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return d
}

// A connection that dies in the middle of a transaction (after the pod's row
// was locked and its UID changed, while inserting keys) leaves nothing
// behind, and the store carries on with new connections.
func TestConnectionLossMidTransaction(t *testing.T) {
	u := pgtest.NewSchema(t)
	s := open(t, u)
	ctx := t.Context()
	if err := s.AddKeys(ctx, newKeys(1, 1), store.StateAvailable, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", Want: 1, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s)

	// Another session inserts k2 and keeps its transaction open, so the
	// store's insert of k2 waits for it.
	blocker := pgtest.Connect(t, u)
	btx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer btx.Rollback(context.Background())
	var blockerPID int
	if err := btx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&blockerPID); err != nil {
		t.Fatal(err)
	}
	k2 := pk(2)
	if _, err := btx.Exec(ctx, `INSERT INTO pkm_keys (pubkey, state, origin, since, created_at, sealed_secret)
		VALUES ($1, 'available', 'random', now(), now(), '\x01')`, k2[:]); err != nil {
		t.Fatal(err)
	}

	// pod-a holds k1 without a UID: the call fills it in (cascading to k1),
	// then inserts k2 and k3, and waits.
	done := make(chan error, 1)
	go func() {
		_, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-a", PodUID: "uid-a", Want: 3, Keys: newKeys(2, 3), Now: time.Now()})
		done <- err
	}()
	admin := pgtest.Connect(t, pgtest.BaseURL(t))
	var victim int
	waitFor(t, 10*time.Second, "the store's insert to wait for the blocker", func() bool {
		err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, blockerPID).Scan(&victim)
		return err == nil
	})
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, victim); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("AddAssigned succeeded although its connection was terminated")
		}
		if errors.Is(err, store.ErrKeyExists) {
			t.Fatalf("AddAssigned failed with %v: it must have lost its connection, not seen the blocker's key", err)
		}
		t.Logf("AddAssigned failed as expected: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("AddAssigned did not return after its connection was terminated")
	}
	if err := btx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	after := dump(t, s)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("store changed by a transaction whose connection died:\nbefore %+v\n after %+v", before, after)
	}
	var pods int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM `+schemaOf(t, u)+`.pkm_pods WHERE name = 'pod-a' AND uid = ''`).Scan(&pods); err != nil {
		t.Fatal(err)
	}
	if pods != 1 {
		t.Errorf("pod-a's row lost its empty UID (rows with uid '': %d)", pods)
	}
	// The store goes on with a fresh connection.
	c, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-a", PodUID: "uid-a", Want: 3, Keys: newKeys(2, 3), Now: time.Now()})
	if err != nil {
		t.Fatalf("AddAssigned after the connection loss: %v", err)
	}
	if len(c.Keys) != 3 || c.Keys[0].PodUID != "uid-a" {
		t.Errorf("pod-a holds %d keys under %q, want 3 under uid-a", len(c.Keys), c.Keys[0].PodUID)
	}
	storetest.CheckInvariants(t, s)
}

func schemaOf(t *testing.T, rawURL string) string {
	t.Helper()
	var schema string
	if err := pgtest.Connect(t, rawURL).QueryRow(t.Context(), `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	return schema
}

// While the database is unreachable Ping fails (the server reports
// not-ready) and calls fail without changing anything; when it is back the
// store recovers by itself.
func TestDatabaseDownAndBack(t *testing.T) {
	u := pgtest.NewSchema(t)
	proxy, viaProxy := pgtest.NewProxy(t, u)
	s := open(t, viaProxy)
	ctx := t.Context()
	if err := s.AddKeys(ctx, newKeys(1, 4), store.StateAvailable, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	before := dump(t, s)

	proxy.Cut()
	for range 3 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.Ping(pctx)
		cancel()
		if err == nil {
			t.Fatal("Ping succeeded while the database is unreachable")
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = s.Claim(cctx, store.ClaimParams{Pod: "pod-a", Want: 2, Now: time.Now()})
		cancel()
		if err == nil {
			t.Fatal("Claim succeeded while the database is unreachable")
		}
	}

	proxy.Restore()
	waitFor(t, 15*time.Second, "Ping to succeed once the database is back", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return s.Ping(pctx) == nil
	})
	if after := dump(t, s); !reflect.DeepEqual(before, after) {
		t.Errorf("store changed while unreachable:\nbefore %+v\n after %+v", before, after)
	}
	c, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", Want: 2, Now: time.Now()})
	if err != nil || len(c.Keys) != 2 {
		t.Fatalf("Claim after recovery: %d keys, %v", len(c.Keys), err)
	}
	storetest.CheckInvariants(t, s)
}
