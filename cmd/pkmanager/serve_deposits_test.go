package main

import (
	"strings"
	"testing"

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
