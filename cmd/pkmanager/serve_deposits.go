package main

import (
	"fmt"
	"io"
	"math/big"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/server"
)

// gwei is a gwei in wei.
const gwei = 1e9

// registerDepositFlags binds serve's deposit flags to o's fields (defaults
// and checks: server.Options.SetDefaults and Validate); --funder-key-file
// names a file serve reads into o.FunderKey.
func registerDepositFlags(fl *pflag.FlagSet, o *server.DepositOptions, funderKeyFile *string) {
	fl.StringVar((*string)(&o.Mode), "deposits", "", "what happens to the deposits of new keys: chain (send them to the deposit contract and hand keys out once confirmed; default with --dev or --eth1-rpc), export (assign at once and export the deposit data for an operator; the validator is inactive until someone submits it; default otherwise) or off (never mint: a request the pool cannot satisfy fails)")
	fl.StringVar(&o.RPCURL, "eth1-rpc", "", "execution node JSON-RPC URL (http://, https://, ws://, wss://) for on-chain deposits")
	fl.Var(addressValue{&o.Contract}, "deposit-contract", "address of the deposit contract (0x...; default on mainnet, sepolia, holesky and hoodi: the network's)")
	fl.StringVar(funderKeyFile, "funder-key-file", "", "file with the hex secp256k1 key of the account that pays the deposits (never logged). Nothing else may send transactions from this account")
	fl.Var(bigUintValue{&o.ChainID, 1}, "chain-id", "expected chain ID of the execution node (default: the public network's with --network, any on a devnet)")
	fl.Uint64Var(&o.Confirmations, "confirmations", 0, fmt.Sprintf("blocks a deposit needs (its own included) before its key is handed out (default 1 on devnets and in dev mode, %d on public networks)", server.PublicConfirmations))
	o.MaxFeePerGas, o.MaxPriorityFeePerGas = depositor.Gwei(depositor.DefaultMaxFeeGwei), depositor.Gwei(depositor.DefaultMaxPriorityFeeGwei)
	fl.Var(bigUintValue{&o.MaxFeePerGas, gwei}, "max-fee-gwei", "cap on the max fee per gas of deposit transactions (gwei); deposits wait while the base fee is above it")
	fl.Var(bigUintValue{&o.MaxPriorityFeePerGas, gwei}, "max-priority-fee-gwei", "cap on the priority fee per gas of deposit transactions (gwei)")
	fl.DurationVar(&o.DevBlockTime, "dev-block-time", devchain.DefaultBlockTime, "dev mode: how often the embedded chain makes a block while transactions are pending (otherwise an empty block every 12s)")
	fl.StringVar(&o.DevRPCAddr, "dev-rpc-addr", server.DefaultDevRPCAddr, "dev mode: loopback address of the embedded chain's JSON-RPC (HTTP and WebSocket); \""+server.DevRPCNone+"\" for none")
	fl.DurationVar(&o.PollInterval, "deposit-poll-interval", 0, "how often the deposit sender looks at the chain (default 500ms; in dev mode a quarter of the block time)")
}

// loadFunderKey reads --funder-key-file into o.FunderKey.
func loadFunderKey(o *server.DepositOptions, file string, b *banner) error {
	if file == "" {
		return nil
	}
	key, warning, err := depositor.LoadFunderKey(file)
	if err != nil {
		return fmt.Errorf("--funder-key-file: %w", err)
	}
	if warning != "" {
		b.Warnings = append(b.Warnings, warning)
	}
	o.FunderKey = key
	return nil
}

// addressValue is a flag holding an execution address ("" while unset).
type addressValue struct{ p *common.Address }

func (v addressValue) Type() string { return "string" }

func (v addressValue) String() string {
	if v.p == nil || *v.p == (common.Address{}) {
		return ""
	}
	return v.p.Hex()
}

func (v addressValue) Set(s string) error {
	if !common.IsHexAddress(s) {
		return fmt.Errorf("%q is not an address", s)
	}
	a, err := deposit.ParseExecutionAddress(s)
	if err != nil {
		return err
	}
	*v.p = a
	return nil
}

// bigUintValue is a uint64 flag held as a *big.Int (nil while unset), in
// units of unit: 1 (a chain ID) or gwei held in wei (a fee cap).
type bigUintValue struct {
	p    **big.Int
	unit int64
}

func (v bigUintValue) Type() string { return "uint64" }

func (v bigUintValue) String() string {
	if v.p == nil || *v.p == nil {
		return "0"
	}
	return new(big.Int).Quo(*v.p, big.NewInt(v.unit)).String()
}

func (v bigUintValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return err
	}
	*v.p = new(big.Int).Mul(new(big.Int).SetUint64(n), big.NewInt(v.unit))
	return nil
}

// depositBanner is what serve prints about deposits.
type depositBanner struct {
	lines []string
}

// fillDepositBanner describes the deposit setup of a running server, its
// execution node rpcURL redacted.
func fillDepositBanner(b *banner, info server.DepositInfo, rpcURL string) {
	var lines []string
	switch info.Mode {
	case server.DepositsExport:
		lines = append(lines, "export (keys are assigned at once; submit their deposits from `pkmanager deposit-data`: a validator is inactive until its deposit is made)")
		if info.Contract != "" {
			lines = append(lines, fmt.Sprintf("deposits already on chain are checked on chain ID %s, contract %s (%d deposits so far) via %s; nothing is sent",
				info.ChainID, info.Contract, info.DepositCount, redact.URL(rpcURL)))
		} else {
			lines = append(lines, "no execution node (--eth1-rpc): exports cannot leave out deposits already made (deposit-data needs --all)")
		}
	case server.DepositsOff:
		lines = append(lines, "off (never mints: requests are served from the pool of imported and released keys only)")
	case server.DepositsChain:
		src := "execution node " + redact.URL(rpcURL)
		if info.DevRPC != "" || rpcURL == "" {
			src = fmt.Sprintf("embedded dev chain (a block every %s while transactions are pending, else every 12s)", info.DevBlockTime)
		}
		lines = append(lines,
			fmt.Sprintf("on chain via %s, chain ID %s, %d confirmation(s)", src, info.ChainID, info.Confirmations),
			"deposit contract "+info.Contract+fmt.Sprintf(" (%d deposits so far)", info.DepositCount),
			"funder "+info.Funder)
		if info.DevRPC != "" {
			lines = append(lines, "dev chain JSON-RPC "+info.DevRPC+" (HTTP and WebSocket); dev funder key 0x"+info.DevFunderKey+" (public, dev only)")
		}
	}
	b.Deposit.lines = lines
}

func (db depositBanner) print(w io.Writer) {
	for i, l := range db.lines {
		label := "deposits:    "
		if i > 0 {
			label = "             "
		}
		fmt.Fprintf(w, "  %s %s\n", label, l)
	}
}
