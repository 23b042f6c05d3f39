package main

import (
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/server"
)

// An --eth1-rpc without a scheme is refused without being shown: its API
// key cannot be told apart from the rest.
func TestEth1RPCWithoutSchemeNotShown(t *testing.T) {
	d := depositFlags{eth1RPC: "mainnet.example.io/v3/NoSchemeKey123", contract: "0x00000000219ab540356cBB839Cbe05303d7705Fa"}
	o := server.DepositOptions{Mode: server.DepositsExport}
	err := d.chainFlags(&o, deposit.Network{Name: "devnet"})
	if err == nil || strings.Contains(err.Error(), "NoSchemeKey123") {
		t.Errorf("chainFlags = %v", err)
	}
}

// On a public network the deposit contract defaults to the network's and
// may not be another; a devnet must name its own. The chain ID defaults to
// the network's too.
func TestPublicNetworkDepositContract(t *testing.T) {
	for name, want := range map[string]string{
		"mainnet": "0x00000000219ab540356cBB839Cbe05303d7705Fa", "sepolia": "0x7f02C3E3c98b133055B8B348B2Ac625669Ed295D",
		"holesky": "0x4242424242424242424242424242424242424242", "hoodi": "0x00000000219ab540356cBB839Cbe05303d7705Fa",
	} {
		n, err := deposit.LookupNetwork(name)
		if err != nil {
			t.Fatal(err)
		}
		d := depositFlags{eth1RPC: "http://127.0.0.1:8545"}
		o := server.DepositOptions{Mode: server.DepositsExport}
		if err := d.chainFlags(&o, n); err != nil {
			t.Fatalf("%s without --deposit-contract: %v", name, err)
		}
		if got := common.Address(o.Contract).Hex(); got != want {
			t.Errorf("%s: deposit contract %s, want %s", name, got, want)
		}
		if o.ChainID == nil || o.ChainID.Int64() != publicChainIDs[name] {
			t.Errorf("%s: chain ID %v, want %d", name, o.ChainID, publicChainIDs[name])
		}
		d.contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
		if err := d.chainFlags(&server.DepositOptions{Mode: server.DepositsExport}, n); err == nil || !strings.Contains(err.Error(), "is not "+name+"'s deposit contract") {
			t.Errorf("%s with another contract: %v", name, err)
		}
	}
	d := depositFlags{eth1RPC: "http://127.0.0.1:8545"}
	if err := d.chainFlags(&server.DepositOptions{Mode: server.DepositsChain}, deposit.Network{Name: "devnet"}); err == nil || !strings.Contains(err.Error(), "needs --deposit-contract") {
		t.Errorf("devnet without --deposit-contract: %v", err)
	}
}
