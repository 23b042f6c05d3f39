package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/reusegate"
	"github.com/pkmanager/pkmanager/internal/store"
)

// BeaconOptions configure the reuse gate (package reusegate): with beacon
// nodes, a released key is reused only after the chain has shown it quiet,
// and a recycled key is checked once more right before it is handed out.
// Without them, reuse rests on the store's word (the reuse delay) alone.
type BeaconOptions struct {
	// URLs of beacon nodes of the network keys are minted for (--beacon-url,
	// repeatable: the next is asked when one fails).
	URLs []string
	// QuietEpochs a released key must be seen quiet (--quiet-epochs);
	// 0 means reusegate.DefaultQuietEpochs.
	QuietEpochs int
	// Timeout of one request; 0 means beacon.DefaultTimeout.
	Timeout time.Duration
	// RequireActive (--require-active) hands out only keys the beacon
	// node reports active (allocator.Config.RequireActive); it needs URLs
	// and, when the server mints, on-chain deposits.
	RequireActive bool
}

// setupBeacon dials the beacon nodes and makes the reuse gate, before the
// allocator is made (it vets with the gate). The nodes must be on the
// network the keys are minted for.
func (s *Server) setupBeacon(ctx context.Context) error {
	evidence := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_reuse_chain_evidence",
		Help: "1 when released keys are reused only on a beacon node's word that they are quiet (--beacon-url), 0 when on the store's word (the reuse delay) alone."})
	s.metrics.Registry.MustRegister(evidence)
	bo := s.opts.Beacon
	if len(bo.URLs) == 0 {
		s.logger.Warn("no --beacon-url: a released key is reused after --reuse-delay on the store's word alone; " +
			"nothing checks that no validator client still signs with it. Give a beacon node of the network to have the chain confirm it")
		return s.warnHeldWithoutGate(ctx)
	}
	for _, u := range bo.URLs {
		redact.Remember(u)
	}
	node, err := beacon.Dial(ctx, bo.URLs, beacon.Options{Timeout: bo.Timeout, Logger: s.logger})
	if err != nil {
		return fmt.Errorf("--beacon-url: %w", err)
	}
	c := node.Chain()
	// Without a network (--deposits off mints nothing) the node's chain is
	// taken as it is.
	if want := s.opts.Mint.Network; want.Name != "" && c.GenesisForkVersion != want.GenesisForkVersion {
		return fmt.Errorf("--beacon-url: the beacon node's chain has genesis fork version 0x%x, but keys are minted for %s: "+
			"its word about these keys would mean nothing", c.GenesisForkVersion[:], want)
	}
	s.gate, err = reusegate.New(reusegate.Config{
		Store: s.store, Beacon: node, ReuseDelay: s.opts.ReuseDelay, QuietEpochs: bo.QuietEpochs,
		Registerer: s.metrics.Registry, Logger: s.logger, Now: s.now,
	})
	if err != nil {
		return err
	}
	s.beaconChain = &c
	if err := s.setupLifecycle(node); err != nil {
		return err
	}
	evidence.Set(1)
	s.logger.Info("reuse gate on: released keys are reused only after the beacon node shows them quiet",
		slog.Int("beacon_nodes", len(bo.URLs)), slog.Int("quiet_epochs", s.gate.QuietEpochs()),
		slog.String("genesis_validators_root", fmt.Sprintf("0x%x", c.GenesisValidatorsRoot[:])))
	return nil
}

// warnHeldWithoutGate says so when keys wait for a reuse gate this server
// does not run (it ran with --beacon-url before): they stay out of
// circulation until a server with a beacon node clears them.
func (s *Server) warnHeldWithoutGate(ctx context.Context) error {
	// The counters first: the listing below walks every key record, and
	// most stores have none of these keys.
	counts, err := s.store.Counts(ctx)
	if err != nil {
		return fmt.Errorf("count the keys held for the reuse gate: %w", err)
	}
	if counts[store.StateCoolingDown]+counts[store.StateStillSigning] == 0 {
		return nil
	}
	held := 0
	err = s.store.ListKeys(ctx, store.ListOptions{States: []store.State{store.StateCoolingDown, store.StateStillSigning}}, func(k store.Key) error {
		if k.State == store.StateStillSigning || reusegate.Held(k.CoolingUntil) {
			held++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("count the keys held for the reuse gate: %w", err)
	}
	if held > 0 {
		s.logger.Warn("keys wait for the chain's word that no validator client still signs with them, and this server has no --beacon-url: "+
			"they stay out of circulation until a server with --beacon-url clears them", slog.Int("keys", held))
	}
	return nil
}

// runGate runs the reuse gate's epoch checks on the replica that owns the
// role, until ctx ends.
func (s *Server) runGate(ctx context.Context) {
	if s.gate == nil {
		return
	}
	s.runOwned(ctx, "reuse-gate", s.gate.Run)
}

// Fixed /readyz notes of the reuse gate (they never quote configuration).
const (
	noteNoBeacon   = "no beacon node (--beacon-url): released keys are reused after the reuse delay on the store's word alone, with no chain evidence that they stopped signing"
	noteBeaconDown = "beacon node unreachable: released keys are not reused until it answers"
)

// readyNotes are the reuse gate's /readyz notes: none while it has a beacon
// node that answers. The server stays ready either way: pods that hold
// keys, and new keys, do not need the beacon node.
func (s *Server) readyNotes() []string {
	if s.gate == nil {
		return []string{noteNoBeacon}
	}
	if s.gate.Ready() != nil {
		return []string{noteBeaconDown}
	}
	return nil
}
