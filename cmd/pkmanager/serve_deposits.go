package main

import (
	"errors"
	"fmt"
	"io"
	"math/big"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/server"
)

// Deposit defaults.
const (
	devRPCAddr = "127.0.0.1:8545"
	// publicConfirmations is the default --confirmations on public networks.
	publicConfirmations = 2
)

// publicChainIDs are the execution-layer chain IDs of the public networks:
// the node behind --eth1-rpc must be on the one of --network.
var publicChainIDs = map[string]int64{
	"mainnet": 1,
	"sepolia": 11155111,
	"holesky": 17000,
	"hoodi":   560048,
}

// publicDepositContracts are the public networks' deposit contracts (the
// networks' published configurations, DEPOSIT_CONTRACT_ADDRESS): the default
// of --deposit-contract there, and the only address it may name.
var publicDepositContracts = map[string]string{
	"mainnet": "0x00000000219ab540356cBB839Cbe05303d7705Fa",
	"sepolia": "0x7f02C3E3c98b133055B8B348B2Ac625669Ed295D",
	"holesky": "0x4242424242424242424242424242424242424242",
	"hoodi":   "0x00000000219ab540356cBB839Cbe05303d7705Fa",
}

// depositFlags are serve's flags for deposits.
type depositFlags struct {
	mode                string
	eth1RPC             string
	contract            string
	funderKeyFile       string
	chainID             uint64
	confirmations       uint64
	maxFeeGwei          uint64
	maxPriorityFeeGwei  uint64
	devBlockTime        time.Duration
	devRPCAddr          string
	depositPollInterval time.Duration
}

func (d *depositFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&d.mode, "deposits", "", "what happens to the deposits of new keys: chain (send them to the deposit contract and hand keys out once confirmed; default with --dev or --eth1-rpc), export (assign at once and export the deposit data for an operator; the validator is inactive until someone submits it; default otherwise) or off (never mint: a request the pool cannot satisfy fails)")
	fl.StringVar(&d.eth1RPC, "eth1-rpc", "", "execution node JSON-RPC URL (http://, https://, ws://, wss://) for on-chain deposits")
	fl.StringVar(&d.contract, "deposit-contract", "", "address of the deposit contract (0x...; default on mainnet, sepolia, holesky and hoodi: the network's)")
	fl.StringVar(&d.funderKeyFile, "funder-key-file", "", "file with the hex secp256k1 key of the account that pays the deposits (never logged). Nothing else may send transactions from this account")
	fl.Uint64Var(&d.chainID, "chain-id", 0, "expected chain ID of the execution node (default: the public network's with --network, any on a devnet)")
	fl.Uint64Var(&d.confirmations, "confirmations", 0, fmt.Sprintf("blocks a deposit needs (its own included) before its key is handed out (default 1 on devnets and in dev mode, %d on public networks)", publicConfirmations))
	fl.Uint64Var(&d.maxFeeGwei, "max-fee-gwei", depositor.DefaultMaxFeeGwei, "cap on the max fee per gas of deposit transactions (gwei); deposits wait while the base fee is above it")
	fl.Uint64Var(&d.maxPriorityFeeGwei, "max-priority-fee-gwei", depositor.DefaultMaxPriorityFeeGwei, "cap on the priority fee per gas of deposit transactions (gwei)")
	fl.DurationVar(&d.devBlockTime, "dev-block-time", devchain.DefaultBlockTime, "dev mode: how often the embedded chain makes a block while transactions are pending (otherwise an empty block every 12s)")
	fl.StringVar(&d.devRPCAddr, "dev-rpc-addr", devRPCAddr, "dev mode: loopback address of the embedded chain's JSON-RPC (HTTP and WebSocket); \"none\" for none")
	fl.DurationVar(&d.depositPollInterval, "deposit-poll-interval", 0, "how often the deposit sender looks at the chain (default 500ms; in dev mode a quarter of the block time)")
}

// options resolves the deposit flags.
func (d *depositFlags) options(dev bool, network deposit.Network, dataDir string, b *banner) (server.DepositOptions, error) {
	var o server.DepositOptions
	mode := d.mode
	if mode == "" {
		mode = string(server.DepositsExport)
		if dev || d.eth1RPC != "" {
			mode = string(server.DepositsChain)
		}
	}
	m, err := server.ParseDepositMode(mode)
	if err != nil {
		return o, fmt.Errorf("--deposits: %w", err)
	}
	o.Mode = m
	if dev {
		// Dev mode never runs against a public network: not by --chain-id,
		// nor with an execution node that turns out to be on one.
		o.RefuseChainIDs = map[uint64]string{}
		for name, id := range publicChainIDs {
			o.RefuseChainIDs[uint64(id)] = name
			if d.chainID == uint64(id) {
				return o, fmt.Errorf("--dev is for devnets only, and --chain-id %d is %s's chain ID: dev mode generates its key-encryption key, "+
					"serves without authentication and sends withdrawals to a burn address. Run without --dev", id, name)
			}
		}
	}
	switch m {
	case server.DepositsOff:
		if d.eth1RPC != "" || d.contract != "" || d.funderKeyFile != "" {
			return o, errors.New("--eth1-rpc, --deposit-contract and --funder-key-file are for --deposits chain or export, not off")
		}
		return o, nil
	case server.DepositsExport:
		// With an execution node the server only reads the chain: exports
		// leave out deposits already made, derived keys skip indices whose
		// keys have deposits.
		if d.funderKeyFile != "" {
			return o, errors.New("--funder-key-file is for --deposits chain: with --deposits export the server never sends a transaction")
		}
		if d.eth1RPC == "" && d.contract == "" {
			return o, nil
		}
		if err := d.chainFlags(&o, network); err != nil {
			return o, err
		}
		return o, nil
	}
	if d.maxPriorityFeeGwei > d.maxFeeGwei {
		return o, fmt.Errorf("--max-priority-fee-gwei %d is above --max-fee-gwei %d", d.maxPriorityFeeGwei, d.maxFeeGwei)
	}
	if d.maxFeeGwei == 0 {
		return o, errors.New("--max-fee-gwei must be at least 1")
	}
	o.MaxFeePerGas, o.MaxPriorityFeePerGas = depositor.Gwei(d.maxFeeGwei), depositor.Gwei(d.maxPriorityFeeGwei)
	o.PollInterval = d.depositPollInterval
	_, public := publicChainIDs[network.Name]
	o.Confirmations = d.confirmations
	if o.Confirmations == 0 {
		o.Confirmations = 1
		if public && !dev {
			o.Confirmations = publicConfirmations
		}
	}
	if err := d.expectChainID(&o, network); err != nil {
		return o, err
	}

	if dev && d.eth1RPC == "" {
		if d.contract != "" || d.funderKeyFile != "" {
			return o, errors.New("--deposit-contract and --funder-key-file need --eth1-rpc (dev mode without --eth1-rpc uses its embedded chain)")
		}
		if d.devBlockTime <= 0 {
			return o, errors.New("--dev-block-time must be positive")
		}
		rpcAddr := d.devRPCAddr
		if rpcAddr == "none" {
			rpcAddr = ""
		}
		o.DevChain = &devchain.Config{DataDir: filepath.Join(dataDir, "devchain"), BlockTime: d.devBlockTime, RPCAddr: rpcAddr}
		o.ChainID = nil
		return o, nil
	}
	if err := d.chainFlags(&o, network); err != nil {
		return o, err
	}
	if d.funderKeyFile == "" {
		return o, errors.New("--deposits chain needs --funder-key-file (hex secp256k1 key of the account that pays the deposits)")
	}
	key, warning, err := depositor.LoadFunderKey(d.funderKeyFile)
	if err != nil {
		return o, fmt.Errorf("--funder-key-file: %w", err)
	}
	if warning != "" {
		b.Warnings = append(b.Warnings, warning)
	}
	o.FunderKey = key
	return o, nil
}

// chainID_ sets the expected chain ID: --chain-id, else the public
// network's.
func (d *depositFlags) expectChainID(o *server.DepositOptions, network deposit.Network) error {
	if d.chainID != 0 {
		o.ChainID = new(big.Int).SetUint64(d.chainID)
	} else if id, ok := publicChainIDs[network.Name]; ok {
		o.ChainID = big.NewInt(id)
	}
	if o.ChainID != nil {
		if id, ok := publicChainIDs[network.Name]; ok && o.ChainID.Cmp(big.NewInt(id)) != 0 {
			return fmt.Errorf("--chain-id %s contradicts --network %s (chain ID %d)", o.ChainID, network.Name, id)
		}
	}
	return nil
}

// chainFlags reads --eth1-rpc, --deposit-contract and the chain ID.
func (d *depositFlags) chainFlags(o *server.DepositOptions, network deposit.Network) error {
	mode := o.Mode
	if err := d.expectChainID(o, network); err != nil {
		return err
	}
	if d.eth1RPC == "" {
		return fmt.Errorf("--deposits %s needs --eth1-rpc (the execution node)", mode)
	}
	if !strings.Contains(d.eth1RPC, "://") {
		// Not shown: without a scheme it cannot be told apart from its
		// API key.
		return errors.New("--eth1-rpc: want a URL (http://, https://, ws:// or wss://)")
	}
	o.RPCURL = d.eth1RPC
	contract := d.contract
	known, public := publicDepositContracts[network.Name]
	if contract == "" {
		if !public {
			return fmt.Errorf("--deposits %s with --eth1-rpc needs --deposit-contract (deploy one on a devnet with `pkmanager deposit-contract deploy`)", mode)
		}
		contract = known
	}
	if !common.IsHexAddress(contract) {
		return fmt.Errorf("--deposit-contract %q is not an address", contract)
	}
	a, err := deposit.ParseExecutionAddress(contract)
	if err != nil {
		return fmt.Errorf("--deposit-contract: %w", err)
	}
	if public && common.Address(a) != common.HexToAddress(known) {
		return fmt.Errorf("--deposit-contract %s is not %s's deposit contract %s: leave the flag out on a public network", contract, network.Name, known)
	}
	o.Contract = a
	return nil
}

// depositBanner is what serve prints about deposits.
type depositBanner struct {
	lines []string
}

func (d *depositFlags) fillBanner(b *banner, info server.DepositInfo) {
	var lines []string
	switch info.Mode {
	case server.DepositsExport:
		lines = append(lines, "export (keys are assigned at once; submit their deposits from `pkmanager deposit-data`: a validator is inactive until its deposit is made)")
		if info.Contract != "" {
			lines = append(lines, fmt.Sprintf("deposits already on chain are checked on chain ID %s, contract %s (%d deposits so far) via %s; nothing is sent",
				info.ChainID, info.Contract, info.DepositCount, redact.URL(d.eth1RPC)))
		} else {
			lines = append(lines, "no execution node (--eth1-rpc): exports cannot leave out deposits already made (deposit-data needs --all)")
		}
	case server.DepositsOff:
		lines = append(lines, "off (never mints: requests are served from the pool of imported and released keys only)")
	case server.DepositsChain:
		src := "execution node " + redact.URL(d.eth1RPC)
		if info.DevRPC != "" || d.eth1RPC == "" {
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
