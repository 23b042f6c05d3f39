package server

import (
	"context"
	"errors"

	"github.com/pkmanager/pkmanager/internal/sparepool"
)

// setupSparePool makes the spare pool of --spare-pool (package sparepool):
// minted keys deposited ahead of requests. It needs on-chain deposits.
func (s *Server) setupSparePool() error {
	if s.opts.SparePool <= 0 {
		return nil
	}
	if s.deposits == nil || s.deposits.dep == nil {
		return errors.New("--spare-pool needs on-chain deposits (--deposits chain): spare keys are minted and deposited ahead of requests")
	}
	cfg := sparepool.Config{
		Target: s.opts.SparePool, Store: s.store, Refiller: s.alloc, Sender: s.deposits.dep,
		Registerer: s.metrics.Registry, Logger: s.logger,
	}
	if s.opts.Beacon.RequireActive {
		cfg.Readings = s.store // keys that will never be active do not count
	}
	p, err := sparepool.New(cfg)
	if err != nil {
		return err
	}
	s.sparePool = p
	return nil
}

// runSparePool refills the spare pool on the replica that owns the role,
// until ctx ends. A replica that loses the role stops at once; the next
// owner counts the pool again from the store (spares whose deposits are
// under way included), so the pool overshoots by at most one round's keys
// (minted by the old owner as it lost the role), and no deposit is paid twice.
func (s *Server) runSparePool(ctx context.Context) {
	if s.sparePool == nil {
		return
	}
	s.runOwned(ctx, "spare-pool", s.sparePool.Run)
}
