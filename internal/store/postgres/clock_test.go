package postgres_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// lockedBuffer is a log sink safe for the store's clock goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openLocalClock opens a store on url for a replica whose wall clock is
// local, closed at cleanup.
func openLocalClock(t *testing.T, url string, log *slog.Logger, local func() time.Time) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.OpenWithLocalClock(ctx, url, postgres.Options{Logger: log}, local)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Replicas whose wall clocks disagree judge cooling-down and reservation
// expiry alike when they pass the store's Now: the database's clock.
func TestClockFollowsDatabase(t *testing.T) {
	u := pgtest.NewSchema(t)
	ctx := t.Context()
	s1 := open(t, u)
	ahead := func() time.Time { return time.Now().Add(2 * time.Hour) }
	var logs lockedBuffer
	s2 := openLocalClock(t, u, slog.New(slog.NewTextHandler(&logs, nil)), ahead)

	var db time.Time
	if err := pgtest.Connect(t, u).QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	// The store estimates the database's clock from its fastest sample, off
	// by at most half that sample's round trip either way: a few ms on a
	// loaded machine (a run under load saw -1.4 ms), so a reading slightly
	// before db is no error.
	for i, s := range []*postgres.Store{s1, s2} {
		if d := s.Now().Sub(db); d < -100*time.Millisecond || d > time.Second {
			t.Errorf("store %d: Now() is %v after the database's clock, want within a second", i+1, d)
		}
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "disagree") {
		t.Errorf("a replica 2 h off the database's clock logged %q, want a warning", l)
	}

	// Replica 1 releases keys for an hour; replica 2, 2 h ahead, must not
	// reuse them.
	if err := s1.AddKeys(ctx, newKeys(1, 2), store.StateAvailable, s1.Now()); err != nil {
		t.Fatal(err)
	}
	if c, err := s1.Claim(ctx, store.ClaimParams{Pod: "pod-a", Want: 2, Now: s1.Now()}); err != nil || len(c.Keys) != 2 {
		t.Fatalf("Claim(pod-a) = %d keys, %v", len(c.Keys), err)
	}
	now := s1.Now()
	if _, err := s1.Release(ctx, store.ReleaseParams{Pod: "pod-a", Now: now, Until: now.Add(time.Hour), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	c, err := s2.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: s2.Now()})
	if err != nil || len(c.Keys) != 0 || c.Shortfall != 1 {
		t.Fatalf("Claim on replica 2 at its store's Now = %d keys, shortfall %d, %v; want none: the keys cool down for another hour", len(c.Keys), c.Shortfall, err)
	}
	// Judged by replica 2's own wall clock (what the store's clock
	// corrects), the key would be reused an hour early.
	c, err = s2.Claim(ctx, store.ClaimParams{Pod: "pod-c", Want: 1, Now: ahead()})
	if err != nil || len(c.Keys) != 1 {
		t.Fatalf("test setup: Claim on replica 2 at its local time = %d keys, %v; want the cooling key (the test must detect local clocks)", len(c.Keys), err)
	}

	// Replica 1 reserves pod-r's keys for a minute; replica 2 sees the
	// reservation live (and waits instead of minting).
	now = s1.Now()
	c, err = s1.Claim(ctx, store.ClaimParams{Pod: "pod-r", Want: 2, Now: now, ReserveToken: "tok-1", ReserveUntil: now.Add(time.Minute)})
	if err != nil || c.Reservation == nil || c.Reservation.Token != "tok-1" {
		t.Fatalf("Claim(pod-r) on replica 1 = reservation %+v, %v; want tok-1's", c.Reservation, err)
	}
	now = s2.Now()
	c, err = s2.Claim(ctx, store.ClaimParams{Pod: "pod-r", Want: 2, Now: now, ReserveToken: "tok-2", ReserveUntil: now.Add(time.Minute)})
	if err != nil || c.Reservation == nil || c.Reservation.Token != "tok-1" {
		t.Fatalf("Claim(pod-r) on replica 2 at its store's Now = reservation %+v, %v; want tok-1's, still live", c.Reservation, err)
	}
	now = ahead()
	c, err = s2.Claim(ctx, store.ClaimParams{Pod: "pod-r", Want: 2, Now: now, ReserveToken: "tok-2", ReserveUntil: now.Add(time.Minute)})
	if err != nil || c.Reservation == nil || c.Reservation.Token != "tok-2" {
		t.Fatalf("test setup: Claim(pod-r) on replica 2 at its local time = reservation %+v, %v; want it to take over (a second mint)", c.Reservation, err)
	}
}

// While the database is unreachable the store's clock keeps its last
// reading and goes on with the local monotonic clock.
func TestClockWhileDatabaseAway(t *testing.T) {
	proxy, u := pgtest.NewProxy(t, pgtest.NewSchema(t))
	s := open(t, u)
	proxy.Cut()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := s.SyncClock(ctx); err == nil {
		t.Fatal("SyncClock with the database away succeeded")
	}
	n1 := s.Now()
	time.Sleep(50 * time.Millisecond)
	n2 := s.Now()
	if d := n2.Sub(n1); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("Now() moved by %v in 50 ms", d)
	}
	if d := n2.Sub(time.Now()).Abs(); d > time.Second {
		t.Errorf("Now() is %v off the local clock (which agrees with the database's)", d)
	}
	proxy.Restore()
	if err := s.SyncClock(t.Context()); err != nil {
		t.Errorf("SyncClock after the database came back: %v", err)
	}
}
