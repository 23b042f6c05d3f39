package server

import (
	"context"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/httpapi"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
)

// setupLifecycle makes the validator watcher on the beacon node: statuses
// of every key once per epoch, retirement of slashed and exited keys,
// voluntary exits.
func (s *Server) setupLifecycle(node *beacon.Node) error {
	w, err := lifecycle.New(lifecycle.Config{
		Store: s.store, Beacon: node, Opener: s.opts.KEK,
		Registerer: s.metrics.Registry, Logger: s.logger, Now: s.now,
	})
	if err != nil {
		return err
	}
	s.lifecycle = w
	return nil
}

// runLifecycle refreshes the validator statuses on the replica that owns
// the role, until ctx ends.
func (s *Server) runLifecycle(ctx context.Context) {
	if s.lifecycle == nil {
		return
	}
	s.runOwned(ctx, "validator-status", s.lifecycle.Run)
}

// validatorReader is the store's validator readings for the APIs, while
// this server reads them (with --beacon-url).
func (s *Server) validatorReader() httpapi.ValidatorReader {
	if s.lifecycle == nil {
		return nil
	}
	return s.store
}

// ExitKeys signs voluntary exits (and submits them); see lifecycle.Watcher.Exit.
// Admin-only on every API. Without --beacon-url it fails with
// lifecycle.ErrNoBeacon.
func (s *Server) ExitKeys(ctx context.Context, req lifecycle.ExitRequest) ([]lifecycle.Signed, error) {
	if s.lifecycle == nil {
		return nil, lifecycle.ErrNoBeacon
	}
	return s.lifecycle.Exit(ctx, req)
}
