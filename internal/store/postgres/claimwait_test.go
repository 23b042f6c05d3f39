package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// lockKeys locks up to n claimable pool keys (available, in pubkey order) in
// a transaction of another session, as an uncommitted claim or sweep would,
// and rolls it back after hold. It returns when the locks are held, and a
// channel closed right before they are released: the server frees them while
// it processes the ROLLBACK, so a waiting claim may return before Rollback
// does (a channel closed after Rollback made the test fail once under load).
func lockKeys(t *testing.T, u string, n int, hold time.Duration) <-chan struct{} {
	t.Helper()
	conn := pgtest.Connect(t, u)
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(t.Context(), `SELECT pubkey FROM pkm_keys WHERE state = 'available' ORDER BY pubkey LIMIT $1 FOR UPDATE`, n)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	if len(locked) != n {
		t.Fatalf("test setup: locked %d keys, want %d", len(locked), n)
	}
	releasing, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(hold)
		close(releasing)
		_ = tx.Rollback(context.Background())
	}()
	t.Cleanup(func() { <-done })
	return releasing
}

// A claim never reports a shortfall while claimable keys exist that other
// transactions merely hold locked: it waits until they are released (or
// taken), however long that takes.
func TestClaimWaitsForLockedKeys(t *testing.T) {
	const hold = time.Second
	for _, tc := range []struct {
		name   string
		locked int // of the pool's 3 keys
		aon    bool
		token  bool
	}{
		{name: "AllLocked", locked: 3},
		{name: "SomeLocked", locked: 2},
		{name: "AllOrNothing", locked: 1, aon: true},
		{name: "ReserveToken", locked: 3, token: true},
		{name: "ReserveTokenSomeLocked", locked: 2, token: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := pgtest.NewSchema(t)
			s := open(t, u)
			if err := s.AddKeys(t.Context(), newKeys(1, 3), store.StateAvailable, time.Now()); err != nil {
				t.Fatal(err)
			}
			released := lockKeys(t, u, tc.locked, hold)
			now := time.Now()
			p := store.ClaimParams{Pod: "pod-a", PodUID: "uid-a", Want: 3, Now: now, AllOrNothing: tc.aon}
			if tc.token {
				p.ReserveToken, p.ReserveUntil = "tok", now.Add(time.Hour)
			}
			c, err := s.Claim(t.Context(), p)
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			select {
			case <-released:
			default:
				t.Errorf("Claim returned before the locked keys were released")
			}
			if len(c.Keys) != 3 || c.Shortfall != 0 || c.Recycled != 3 || c.Reservation != nil {
				t.Fatalf("Claim while pool keys were locked = %d keys, shortfall %d, recycled %d, reservation %+v; want the 3 keys, recycled, no reservation (nothing to mint)",
					len(c.Keys), c.Shortfall, c.Recycled, c.Reservation)
			}
			wantCounts(t, s, map[store.State]int{store.StateAssigned: 3})
		})
	}
}

// A claim whose ctx ends while it waits for locked pool keys fails with an
// error wrapping ctx.Err(), not a shortfall, and takes no reservation.
func TestClaimWaitDeadline(t *testing.T) {
	for _, token := range []bool{false, true} {
		t.Run(map[bool]string{false: "NoToken", true: "ReserveToken"}[token], func(t *testing.T) {
			u := pgtest.NewSchema(t)
			s := open(t, u)
			if err := s.AddKeys(t.Context(), newKeys(1, 3), store.StateAvailable, time.Now()); err != nil {
				t.Fatal(err)
			}
			released := lockKeys(t, u, 3, 1500*time.Millisecond)
			now := time.Now()
			p := store.ClaimParams{Pod: "pod-a", PodUID: "uid-a", Want: 3, Now: now}
			if token {
				p.ReserveToken, p.ReserveUntil = "tok", now.Add(time.Hour)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			c, err := s.Claim(ctx, p)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Claim with a deadline while every pool key is locked = %d keys, shortfall %d, reservation %+v, error %v; want an error wrapping context.DeadlineExceeded",
					len(c.Keys), c.Shortfall, c.Reservation, err)
			}
			<-released
			wantCounts(t, s, map[store.State]int{store.StateAvailable: 3})
			conn := pgtest.Connect(t, u)
			var reserved int
			if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pkm_pods WHERE res_token IS NOT NULL`).Scan(&reserved); err != nil {
				t.Fatal(err)
			}
			if reserved != 0 {
				t.Errorf("%d mint reservations after a claim that ended waiting; want none", reserved)
			}
			// The pool is claimable again.
			c, err = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "uid-a", Want: 3, Now: time.Now()})
			if err != nil || len(c.Keys) != 3 {
				t.Fatalf("Claim after the locks went = %d keys, %v; want 3", len(c.Keys), err)
			}
		})
	}
}

func wantCounts(t *testing.T, s store.Store, want map[store.State]int) {
	t.Helper()
	got, err := s.Counts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range store.States {
		if got[st] != want[st] {
			t.Errorf("Counts() = %v, want %v", got, want)
			return
		}
	}
}
