package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
)

func newBeaconServer(t *testing.T, dev bool, network deposit.Network, urls ...string) (*Server, error) {
	t.Helper()
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 9))
	if err != nil {
		t.Fatal(err)
	}
	return New(context.Background(), Options{
		Dev: dev, StoreURL: "bolt://" + filepath.Join(t.TempDir(), "s.db"), KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint:   mint.Config{Network: network, Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		Logger: slog.New(slog.DiscardHandler), Beacon: BeaconOptions{URLs: urls},
	})
}

// With --beacon-url the beacon node's chain is the chain: the reuse gate
// runs, slashing-protection custody takes its genesis (also in dev mode,
// which would make one up), /readyz notes say whether it answers; a node of
// another network is refused.
func TestBeaconNodeIsTheChain(t *testing.T) {
	fork, _ := deposit.ParseForkVersion("0x10000038")
	devnet := deposit.Network{Name: "devnet", GenesisForkVersion: fork}
	chain := beacon.Chain{GenesisTime: time.Now().Add(-time.Hour).Truncate(time.Second), GenesisValidatorsRoot: [32]byte{7, 7},
		GenesisForkVersion: fork, SecondsPerSlot: 6 * time.Second, SlotsPerEpoch: 8}
	f := beacontest.NewFake(chain, time.Now)
	defer f.Close()

	srv, err := newBeaconServer(t, true, devnet, f.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	c, err := srv.SlashingChain()
	if err != nil || c.GenesisValidatorsRoot != chain.GenesisValidatorsRoot || !c.GenesisTime.Equal(chain.GenesisTime) ||
		c.SecondsPerSlot != chain.SecondsPerSlot || c.SlotsPerEpoch != chain.SlotsPerEpoch {
		t.Fatalf("custody chain %v %v, want the beacon node's %v", c, err, chain)
	}
	if srv.gate == nil || len(srv.readyNotes()) != 0 {
		t.Fatalf("gate %v, notes %q", srv.gate, srv.readyNotes())
	}
	f.SetDown(true)
	if _, err := srv.gate.Vet(t.Context(), []store.Pubkey{{0xb0, 1}}); err == nil {
		t.Fatal("Vet with the beacon node down: no error")
	}
	if n := srv.readyNotes(); len(n) != 1 || n[0] != noteBeaconDown {
		t.Errorf("notes with the beacon node down: %q", n)
	}
	f.SetDown(false)
	if _, err := srv.gate.Vet(t.Context(), []store.Pubkey{{0xb0, 1}}); err != nil || len(srv.readyNotes()) != 0 {
		t.Errorf("beacon node back: Vet %v, notes %q", err, srv.readyNotes())
	}

	// Another network's node is refused, naming both.
	other := chain
	other.GenesisForkVersion = [4]byte{0x10, 0, 0, 0x39}
	f2 := beacontest.NewFake(other, time.Now)
	defer f2.Close()
	if _, err := newBeaconServer(t, true, devnet, f2.URL()); err == nil || !strings.Contains(err.Error(), "0x10000039") || !strings.Contains(err.Error(), "devnet") {
		t.Errorf("beacon node of another fork version: %v, want a refusal naming both", err)
	}
	// A node that claims to be hoodi but is not hoodi's chain is refused.
	hoodi, err := deposit.LookupNetwork("hoodi")
	if err != nil {
		t.Fatal(err)
	}
	fake := chain
	fake.GenesisForkVersion = hoodi.GenesisForkVersion
	f3 := beacontest.NewFake(fake, time.Now)
	defer f3.Close()
	if _, err := newBeaconServer(t, false, hoodi, f3.URL()); err == nil || !strings.Contains(err.Error(), "is not hoodi's") {
		t.Errorf("beacon node on hoodi's fork version with another genesis: %v, want a refusal", err)
	}
}

// Without a beacon node the server says reuse has no chain evidence.
func TestNoBeaconNodeNote(t *testing.T) {
	fork, _ := deposit.ParseForkVersion("0x10000038")
	srv, err := newBeaconServer(t, true, deposit.Network{Name: "devnet", GenesisForkVersion: fork})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	if n := srv.readyNotes(); len(n) != 1 || n[0] != noteNoBeacon {
		t.Errorf("notes %q", n)
	}
}
