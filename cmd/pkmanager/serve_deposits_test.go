package main

import (
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/server"
)

// The deposit flags set server.DepositOptions's fields themselves: the
// contract as an address, the chain ID and the fee caps (gwei) as numbers;
// a malformed address is refused by its flag.
func TestDepositFlagsBindOptions(t *testing.T) {
	var o server.DepositOptions
	var keyFile string
	fl := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	registerDepositFlags(fl, &o, &keyFile)
	if o.MaxFeePerGas.Cmp(depositor.Gwei(depositor.DefaultMaxFeeGwei)) != 0 || fl.Lookup("max-fee-gwei").DefValue == "0" {
		t.Errorf("--max-fee-gwei default: %v (shown %q)", o.MaxFeePerGas, fl.Lookup("max-fee-gwei").DefValue)
	}
	err := fl.Parse([]string{"--deposits", "chain", "--deposit-contract", "0x5FbDB2315678afecb367f032d93F642f64180aa3", "--chain-id", "1337",
		"--max-fee-gwei", "7", "--max-priority-fee-gwei", "2", "--funder-key-file", "k.hex", "--confirmations", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Mode != server.DepositsChain || o.Contract != common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3") || o.ChainID.Int64() != 1337 ||
		o.MaxFeePerGas.Cmp(depositor.Gwei(7)) != 0 || o.MaxPriorityFeePerGas.Cmp(depositor.Gwei(2)) != 0 || o.Confirmations != 3 || keyFile != "k.hex" {
		t.Errorf("options %+v, key file %q", o, keyFile)
	}
	if err := fl.Parse([]string{"--deposit-contract", "0x1234"}); err == nil || !strings.Contains(err.Error(), `"0x1234" is not an address`) || !strings.Contains(err.Error(), "--deposit-contract") {
		t.Errorf("bad --deposit-contract: %v", err)
	}
}
