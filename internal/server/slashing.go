package server

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Slashing-protection custody (package slashing) needs the chain's
// parameters: its genesis validators root, which every interchange names,
// and its clock, for release-time watermarks. This server knows them for
// the public networks (deposit.KnownGenesis) and makes up its own for the
// dev chain; a beacon node (--beacon-url) tells them for any network and
// wins over both. Without one, for any other network they are unknown:
// releases that carry an interchange are refused and requests get none.

// Dev chain parameters: the embedded dev chain has no beacon chain, so dev
// mode gives it a clock of its own. Genesis is when a dev server first
// opened the store, or --dev-genesis-time then (store.BindDevGenesis), with
// mainnet's timing; the genesis validators root is devGenesisValidatorsRoot
// of it.
const (
	devSecondsPerSlot = 12 * time.Second
	devSlotsPerEpoch  = 32
)

// devGenesisValidatorsRoot is the dev chain's made-up genesis validators
// root: SHA-256 of "pkmanager dev chain", the genesis fork version and the
// genesis time (Unix seconds, 8 bytes big-endian). It names no real chain,
// so no history of a real network is ever accepted by a dev server.
func devGenesisValidatorsRoot(forkVersion [4]byte, genesis time.Time) [32]byte {
	h := sha256.New()
	h.Write([]byte("pkmanager dev chain"))
	h.Write(forkVersion[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(genesis.Unix())))
	var r [32]byte
	h.Sum(r[:0])
	return r
}

// setupSlashing decides the chain parameters of slashing-protection
// custody and makes the custody the APIs use.
func (s *Server) setupSlashing(ctx context.Context) error {
	network := s.opts.Mint.Network
	g, known := deposit.KnownGenesis(network)
	switch {
	case s.beaconChain != nil:
		// The beacon node's word (--beacon-url) wins: it is the chain. On
		// a public network it must be that network's.
		bc := *s.beaconChain
		if known && (bc.GenesisValidatorsRoot != g.ValidatorsRoot || !bc.GenesisTime.Equal(g.Time)) {
			return fmt.Errorf("--beacon-url: the beacon node's chain (genesis validators root 0x%x, genesis %s) is not %s's (0x%x, %s)",
				bc.GenesisValidatorsRoot[:], bc.GenesisTime.UTC().Format(time.RFC3339), network.Name, g.ValidatorsRoot[:], g.Time.UTC().Format(time.RFC3339))
		}
		s.spChain = slashing.Chain{GenesisValidatorsRoot: bc.GenesisValidatorsRoot, GenesisTime: bc.GenesisTime,
			SecondsPerSlot: bc.SecondsPerSlot, SlotsPerEpoch: bc.SlotsPerEpoch}
	case s.opts.Dev:
		c, err := s.devSlashingChain(ctx)
		if err != nil {
			return err
		}
		s.spChain = c
	case known:
		s.spChain = slashing.Chain{GenesisValidatorsRoot: g.ValidatorsRoot, GenesisTime: g.Time,
			SecondsPerSlot: g.SecondsPerSlot, SlotsPerEpoch: g.SlotsPerEpoch}
	case network == deposit.Network{}:
		// --deposits off without --network: nothing names the chain.
		s.spErr = fmt.Errorf("%w: this server runs with --deposits off and neither --network nor --beacon-url, so it does not know the beacon chain "+
			"(genesis validators root, genesis time): releases with --slashing-protection are refused and requests carry no slashing_protection.json; "+
			"give --beacon-url, or --network (%s)", slashing.ErrChainUnknown, strings.Join(deposit.NetworkNames(), ", "))
		s.logger.Warn("slashing-protection custody off: " + s.spErr.Error())
	default:
		s.spErr = fmt.Errorf("%w: this server does not know the beacon chain of network %s (genesis validators root, genesis time): "+
			"it knows them for %s only; on another network it can neither check an uploaded interchange nor compute release-time watermarks, "+
			"so releases with --slashing-protection are refused and requests carry no slashing_protection.json",
			slashing.ErrChainUnknown, network, strings.Join(deposit.NetworkNames(), ", "))
		s.logger.Warn("slashing-protection custody off: " + s.spErr.Error())
	}
	if s.spErr == nil {
		if err := s.spChain.Validate(); err != nil {
			return err
		}
		s.logger.Info("slashing-protection custody on", slog.String("chain", s.spChain.String()))
	}
	s.custody = slashing.NewCustody(s.SlashingChain, s.store)
	return nil
}

// devSlashingChain returns the dev chain's parameters, fixing its genesis
// in the store the first time.
func (s *Server) devSlashingChain(ctx context.Context) (slashing.Chain, error) {
	b, err := s.store.Bindings(ctx)
	if err != nil {
		return slashing.Chain{}, fmt.Errorf("read the store's bindings: %w", err)
	}
	v, ok := b[store.BindDevGenesis]
	want := s.opts.DevGenesisTime
	if ok && !want.IsZero() && v != strconv.FormatInt(want.Unix(), 10) {
		return slashing.Chain{}, fmt.Errorf("--dev-genesis-time %s: the store's dev chain began at %s (Unix %s) and keeps that genesis; leave the flag out, or use a new data dir",
			want.UTC().Format(time.RFC3339), unixString(v), v)
	}
	if !ok {
		if want.IsZero() {
			want = s.now()
		}
		v = strconv.FormatInt(want.Unix(), 10)
		if err := s.store.Bind(ctx, store.BindDevGenesis, v); err != nil {
			return slashing.Chain{}, fmt.Errorf("record the dev chain's genesis time: %w", err)
		}
		if b, err = s.store.Bindings(ctx); err != nil { // another server may have bound it first
			return slashing.Chain{}, fmt.Errorf("read the store's bindings: %w", err)
		}
		v = b[store.BindDevGenesis]
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec <= 0 {
		return slashing.Chain{}, fmt.Errorf("the store's dev chain genesis time %q is not a Unix time", v)
	}
	genesis := time.Unix(sec, 0).UTC()
	return slashing.Chain{
		GenesisValidatorsRoot: devGenesisValidatorsRoot(s.opts.Mint.Network.GenesisForkVersion, genesis),
		GenesisTime:           genesis,
		SecondsPerSlot:        devSecondsPerSlot,
		SlotsPerEpoch:         devSlotsPerEpoch,
	}, nil
}

// unixString renders a Unix time in seconds as RFC 3339 (or as it is).
func unixString(v string) string {
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return v
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// SlashingChain returns the chain parameters of slashing-protection
// custody, or an error wrapping slashing.ErrChainUnknown that says why
// there are none and what to configure.
func (s *Server) SlashingChain() (slashing.Chain, error) {
	if s.spErr != nil {
		return slashing.Chain{}, s.spErr
	}
	if s.spChain.GenesisTime.IsZero() {
		return slashing.Chain{}, fmt.Errorf("%w: the server is still starting", slashing.ErrChainUnknown)
	}
	return s.spChain, nil
}
