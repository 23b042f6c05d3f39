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

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/slashing"
)

// newSlashingTestServer makes (does not serve) a server on store path for
// network.
func newSlashingTestServer(t *testing.T, path string, dev bool, network deposit.Network) *Server {
	t.Helper()
	srv, err := newSlashingServer(path, dev, time.Time{}, network)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func newSlashingServer(path string, dev bool, devGenesis time.Time, network deposit.Network) (*Server, error) {
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 9))
	if err != nil {
		return nil, err
	}
	return New(context.Background(), Options{
		Dev: dev, DevGenesisTime: devGenesis, StoreURL: "bolt://" + path, KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint:   mint.Config{Network: network, Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		Logger: slog.New(slog.DiscardHandler),
	})
}

func TestSlashingChain(t *testing.T) {
	dir := t.TempDir()
	fork, _ := deposit.ParseForkVersion("0x10000038")
	devnet := deposit.Network{Name: "devnet", GenesisForkVersion: fork}

	// Dev mode: genesis when the store was first served, fixed in the
	// store; a made-up root of the devnet.
	path := filepath.Join(dir, "dev.db")
	before := time.Now().Add(-time.Second)
	srv := newSlashingTestServer(t, path, true, devnet)
	c, err := srv.SlashingChain()
	if err != nil {
		t.Fatal(err)
	}
	if c.GenesisTime.Before(before) || c.GenesisTime.After(time.Now()) || c.SecondsPerSlot != 12*time.Second || c.SlotsPerEpoch != 32 ||
		c.GenesisValidatorsRoot != devGenesisValidatorsRoot(fork, c.GenesisTime) {
		t.Fatalf("dev chain %v", c)
	}
	if err := srv.close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a new genesis would differ
	srv = newSlashingTestServer(t, path, true, devnet)
	again, err := srv.SlashingChain()
	if err != nil || again != c {
		t.Fatalf("after a restart: %v %v, want %v", again, err, c)
	}
	if _, err := srv.custody.Chain(); err != nil {
		t.Fatalf("the APIs' custody: %v", err)
	}
	srv.close()

	// --dev-genesis-time fixes the genesis of a new store; a store keeps
	// its own.
	genesis := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	path = filepath.Join(dir, "dev2.db")
	srv, err = newSlashingServer(path, true, genesis, devnet)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := srv.SlashingChain(); err != nil || !c.GenesisTime.Equal(genesis) {
		t.Fatalf("--dev-genesis-time: %v %v", c, err)
	}
	srv.close()
	if srv, err = newSlashingServer(path, true, genesis, devnet); err != nil {
		t.Fatalf("the same --dev-genesis-time again: %v", err)
	}
	srv.close()
	if srv, err = newSlashingServer(path, true, genesis.Add(time.Hour), devnet); err == nil || !strings.Contains(err.Error(), "keeps that genesis") {
		if srv != nil {
			srv.close()
		}
		t.Fatalf("another --dev-genesis-time: %v", err)
	}

	// A public network: its known genesis.
	mainnet, _ := deposit.LookupNetwork("mainnet")
	srv = newSlashingTestServer(t, filepath.Join(dir, "mainnet.db"), false, mainnet)
	c, err = srv.SlashingChain()
	if err != nil {
		t.Fatal(err)
	}
	if slashing.FormatRoot(c.GenesisValidatorsRoot) != "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95" || c.GenesisTime.Unix() != 1606824023 {
		t.Fatalf("mainnet %v", c)
	}
	srv.close()

	// Any other network: unknown, and the error says what to do.
	srv = newSlashingTestServer(t, filepath.Join(dir, "devnet.db"), false, devnet)
	defer srv.close()
	_, err = srv.SlashingChain()
	if !errors.Is(err, slashing.ErrChainUnknown) || !strings.Contains(err.Error(), "network devnet (0x10000038)") ||
		!strings.Contains(err.Error(), "mainnet, sepolia, holesky, hoodi only") {
		t.Fatalf("unknown chain: %v", err)
	}
	if _, err := srv.custody.Upload(context.Background(), "validator-0", []byte("{}")); !errors.Is(err, slashing.ErrChainUnknown) {
		t.Fatalf("upload without chain parameters: %v", err)
	}
}
