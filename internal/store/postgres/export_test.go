package postgres

import (
	"context"
	"time"
)

// OpenWithLocalClock is Open on a replica whose local clock is localNow.
func OpenWithLocalClock(ctx context.Context, rawURL string, opts Options, localNow func() time.Time) (*Store, error) {
	return open(ctx, rawURL, opts, localNow)
}

// SyncClock reads the database's clock now, as the store does every 30 s.
func (s *Store) SyncClock(ctx context.Context) error { return s.syncClock(ctx) }
