package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/slashing"
)

// A server with --deposits off and no network takes the beacon node's
// chain for slashing-protection custody, of whatever fork version; without
// a beacon node it says, where the chain is needed, what to give.
func TestDepositsOffWithoutNetwork(t *testing.T) {
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 9))
	if err != nil {
		t.Fatal(err)
	}
	start := func(urls ...string) *Server {
		t.Helper()
		srv, err := New(context.Background(), Options{
			StoreURL: "bolt://" + filepath.Join(t.TempDir(), "s.db"), KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			Deposits: DepositOptions{Mode: DepositsOff}, Logger: slog.New(slog.DiscardHandler), Beacon: BeaconOptions{URLs: urls},
		})
		if err != nil {
			t.Fatalf("New with --deposits off and no network: %v", err)
		}
		t.Cleanup(func() { srv.close() })
		return srv
	}

	hoodi, err := deposit.LookupNetwork("hoodi")
	if err != nil {
		t.Fatal(err)
	}
	chain := beacon.Chain{GenesisTime: time.Now().Add(-time.Hour).Truncate(time.Second), GenesisValidatorsRoot: [32]byte{7, 7},
		GenesisForkVersion: hoodi.GenesisForkVersion, SecondsPerSlot: 12 * time.Second, SlotsPerEpoch: 32}
	f := beacontest.NewFake(chain, time.Now)
	defer f.Close()
	c, err := start(f.URL()).SlashingChain()
	if err != nil || c.GenesisValidatorsRoot != chain.GenesisValidatorsRoot || !c.GenesisTime.Equal(chain.GenesisTime) {
		t.Fatalf("custody chain %v %v, want the beacon node's %v", c, err, chain)
	}

	_, err = start().SlashingChain()
	if !errors.Is(err, slashing.ErrChainUnknown) || !strings.Contains(err.Error(), "--deposits off") ||
		!strings.Contains(err.Error(), "give --beacon-url, or --network (mainnet") {
		t.Fatalf("custody chain without network or beacon node: %v, want an error saying what to give", err)
	}
}
