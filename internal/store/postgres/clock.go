package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var _ store.Clock = (*Store)(nil)

const (
	// clockSyncEvery is how often a store reads the database's clock again.
	clockSyncEvery = 30 * time.Second
	// clockSyncTimeout bounds one reading.
	clockSyncTimeout = 5 * time.Second
	// clockSamples is how many round trips one reading takes; the one
	// with the shortest round trip counts (its midpoint is the closest).
	clockSamples = 3
	// maxClockOffset is the difference between the database's and the
	// local clock above which a reading is logged at WARN: the replicas'
	// clocks disagree (the store is unaffected, its Now follows the
	// database).
	maxClockOffset = time.Second
)

// clockSync is one reading of the database's clock: db at the moment the
// local clock read local (with its monotonic reading).
type clockSync struct {
	db    time.Time
	local time.Time
	rtt   time.Duration
}

// Now returns the database's time: its clock_timestamp() at the last
// reading (corrected by half the round trip), plus the time elapsed since
// then on the local monotonic clock, so that a step of the local wall clock
// does not move it. Every replica on the database judges times by it
// (cooling-down, reservation expiry). The store reads the database's clock
// at Open and every 30 s; while the database is unreachable it keeps the
// last reading. See store.Clock.
func (s *Store) Now() time.Time {
	c := s.clock.Load()
	return c.db.Add(s.localNow().Sub(c.local))
}

// syncClock reads the database's clock, on one connection, clockSamples
// times, and keeps the reading with the shortest round trip.
func (s *Store) syncClock(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("read the database's clock: %w", wrapCtx(ctx, err))
	}
	defer conn.Release()
	var best *clockSync
	for range clockSamples {
		var db time.Time
		t0 := s.localNow()
		if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&db); err != nil {
			return fmt.Errorf("read the database's clock: %w", wrapCtx(ctx, err))
		}
		t1 := s.localNow()
		rtt := t1.Sub(t0)
		if best == nil || rtt < best.rtt {
			best = &clockSync{db: db.UTC().Add(rtt / 2), local: t1, rtt: rtt}
		}
	}
	s.clock.Store(best)
	// Wall clock against wall clock (db has no monotonic reading).
	offset := best.db.Sub(best.local)
	if large := offset.Abs() > maxClockOffset; large != s.clockOff.Swap(large) {
		if large {
			s.log.Warn("the database's clock and this replica's disagree; the store follows the database's",
				slog.String("store", s.where), slog.Duration("database_ahead_by", offset), slog.Duration("round_trip", best.rtt))
		} else {
			s.log.Info("the database's clock and this replica's agree again",
				slog.String("store", s.where), slog.Duration("database_ahead_by", offset))
		}
	}
	return nil
}

// followClock reads the database's clock every clockSyncEvery until ctx
// ends, keeping the last reading when one fails.
func (s *Store) followClock(ctx context.Context) {
	t := time.NewTicker(clockSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, clockSyncTimeout)
		err := s.syncClock(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("store clock keeps its last reading of the database's", slog.String("store", s.where), slog.Any("error", err))
		}
	}
}
