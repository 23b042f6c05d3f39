package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/pkmanager/pkmanager/internal/ownership"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Coordination between replicas. Requests need none beyond the store: duplicate
// requests of one pod on different replicas meet in its transactions and mint
// reservations (see allocator.Allocator.Request). Single-owner work (the
// deposit sender, the sweeper) runs under the store's ownership runner on a
// store shared by several replicas (PostgreSQL); the embedded bbolt store
// admits one process, so "always owner" suffices.

// ownerRunner returns the runner of single-owner work: the store's when it
// elects owners (store.Owners: an advisory lock per role on PostgreSQL),
// else Single.
func (s *Server) ownerRunner() ownership.Runner {
	if s.owner != nil {
		return s.owner
	}
	if o, ok := store.As[store.Owners](s.store); ok {
		s.owner = o.Ownership()
	} else {
		s.owner = ownership.Single{Logger: s.logger}
	}
	return s.owner
}

// runOwned runs run on this replica while it owns role, until ctx ends
// (run returns when its ctx ends: ownership lost, or ctx).
func (s *Server) runOwned(ctx context.Context, role string, run func(ctx context.Context)) {
	_ = s.ownerRunner().Run(ctx, role, func(ctx context.Context) error {
		run(ctx)
		return ctx.Err()
	})
}

// coordinate decides who runs the single-owner work: the deposit sender runs
// under the Kubernetes Lease when leader election is on, else under the
// store's ownership runner.
func (s *Server) coordinate() {
	if s.opts.Deposits.RunSender != nil {
		return
	}
	var r ownership.Runner = s.ownerRunner()
	if e := s.LeaderElector(); e != nil {
		r = e
	}
	s.opts.Deposits.RunSender = func(ctx context.Context, run func(ctx context.Context) error) error {
		return r.Run(ctx, "deposit-sender", run)
	}
}

// healthInterval is how often the gRPC health status follows the store.
const healthInterval = time.Second

// runBackground runs the sweeper (on the replica that owns the role; sweeping
// is safe anywhere, this only saves work), the reuse gate's epoch checks (on
// the owner: they count quiet epochs in memory) and keeps the gRPC health status in
// step with the store's readiness, until ctx ends.
func (s *Server) runBackground(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		s.runOwned(ctx, "sweeper", func(ctx context.Context) { s.alloc.RunSweeper(ctx, s.opts.SweepInterval) })
	})
	wg.Go(func() { s.runGate(ctx) })      // reuse gate (beacon.go), on the owner
	wg.Go(func() { s.runLifecycle(ctx) }) // validator statuses (lifecycle.go), on the owner
	wg.Go(func() { s.runSparePool(ctx) }) // spare pool (sparepool.go), on the owner
	wg.Go(func() { s.followReadiness(ctx) })
	wg.Wait()
}

// followReadiness sets the gRPC health status to NOT_SERVING while the store
// is unreachable and back to SERVING when it answers again (as /readyz
// does on each call).
func (s *Server) followReadiness(ctx context.Context) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	serving := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.ready(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && serving:
			s.logger.Warn("not ready", slog.Any("error", err))
			s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			serving = false
		case err == nil && !serving:
			s.logger.Info("ready again")
			s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			serving = true
		}
	}
}
