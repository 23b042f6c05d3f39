package server

import (
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/ethereum/go-ethereum/common"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/devchain"
)

// Deposit defaults (SetDefaults; serve's flags show them).
const (
	// DefaultDevRPCAddr is where the embedded dev chain serves JSON-RPC.
	DefaultDevRPCAddr = "127.0.0.1:8545"
	// PublicConfirmations is the default Confirmations on a public
	// network outside dev mode (1 elsewhere).
	PublicConfirmations = 2
	// DevRPCNone as DevRPCAddr: the dev chain serves no JSON-RPC.
	DevRPCNone = "none"
)

// setDepositDefaults gives the deposit options the defaults of the mode
// and of the network keys are minted for (Mint.Network): on a public
// network its chain ID and deposit contract (deposit.PublicExecutionChain)
// and PublicConfirmations; in dev mode without an execution node the
// embedded dev chain.
func (o *Options) setDepositDefaults(dev bool) {
	d := &o.Deposits
	if d.Mode == "" {
		d.Mode = pick(dev || d.RPCURL != "", DepositsChain, DepositsExport)
	}
	if dev {
		// Dev mode never runs against a public network: not by ChainID,
		// nor with an execution node that turns out to be on one.
		d.RefuseChainIDs = map[uint64]string{}
		for name, c := range deposit.PublicExecutionChains() {
			d.RefuseChainIDs[c.ChainID] = name
		}
	}
	if d.MaxFeePerGas == nil {
		d.MaxFeePerGas = depositor.Gwei(depositor.DefaultMaxFeeGwei)
	}
	if d.MaxPriorityFeePerGas == nil {
		d.MaxPriorityFeePerGas = depositor.Gwei(depositor.DefaultMaxPriorityFeeGwei)
	}
	if !o.given("dev-block-time", d.DevBlockTime == 0) {
		d.DevBlockTime = devchain.DefaultBlockTime
	}
	if !o.given("dev-rpc-addr", d.DevRPCAddr == "") {
		d.DevRPCAddr = DefaultDevRPCAddr
	}
	pub, public := deposit.PublicExecutionChain(o.Mint.Network.Name)
	if d.Confirmations == 0 {
		d.Confirmations = pick(public && !dev, uint64(PublicConfirmations), 1)
	}
	if d.Mode == DepositsChain && dev && d.RPCURL == "" && d.DevChain == nil {
		rpc := d.DevRPCAddr
		if rpc == DevRPCNone {
			rpc = ""
		}
		// DataDir is the caller's (serve: devchain in --data-dir).
		d.DevChain = &devchain.Config{BlockTime: d.DevBlockTime, RPCAddr: rpc}
		return
	}
	if !public || d.RPCURL == "" {
		return
	}
	if d.ChainID == nil {
		d.ChainID = new(big.Int).SetUint64(pub.ChainID)
	}
	if d.Contract == (common.Address{}) {
		d.Contract = common.HexToAddress(pub.DepositContract)
	}
}

// validateDeposits checks the deposit options against each other, the
// mode and the network; the error names the flag.
func (o *Options) validateDeposits() error {
	d := o.Deposits
	network := o.Mint.Network.Name
	mode := d.Mode
	if mode == "" {
		mode = DepositsExport
	} else if _, err := ParseDepositMode(string(mode)); err != nil {
		return fmt.Errorf("--deposits: %w", err)
	}
	if o.Dev && d.ChainID != nil {
		for name, c := range deposit.PublicExecutionChains() {
			if d.ChainID.IsUint64() && d.ChainID.Uint64() == c.ChainID {
				return fmt.Errorf("--dev is for devnets only, and --chain-id %d is %s's chain ID: dev mode generates its key-encryption key, "+
					"serves without authentication and sends withdrawals to a burn address. Run without --dev", c.ChainID, name)
			}
		}
	}
	noContract := d.Contract == (common.Address{})
	switch mode {
	case DepositsOff:
		if d.RPCURL != "" || !noContract || d.FunderKey != nil {
			return errors.New("--eth1-rpc, --deposit-contract and --funder-key-file are for --deposits chain or export, not off")
		}
		return nil
	case DepositsExport:
		// With an execution node the server only reads the chain: exports
		// leave out deposits already made, derived keys skip indices whose
		// keys have deposits.
		if d.FunderKey != nil {
			return errors.New("--funder-key-file is for --deposits chain: with --deposits export the server never sends a transaction")
		}
		if d.RPCURL == "" && noContract {
			return nil
		}
		return d.validateChain(mode, network)
	}
	if maxFee, tip := d.MaxFeePerGas, d.MaxPriorityFeePerGas; maxFee != nil && tip != nil && tip.Cmp(maxFee) > 0 {
		return fmt.Errorf("--max-priority-fee-gwei %s is above --max-fee-gwei %s", gwei(tip), gwei(maxFee))
	}
	if d.MaxFeePerGas != nil && d.MaxFeePerGas.Sign() <= 0 {
		return errors.New("--max-fee-gwei must be at least 1")
	}
	if d.DevChain != nil {
		if !noContract || d.FunderKey != nil {
			return errors.New("--deposit-contract and --funder-key-file need --eth1-rpc (dev mode without --eth1-rpc uses its embedded chain)")
		}
		if o.given("dev-block-time", d.DevBlockTime == 0) && d.DevBlockTime <= 0 {
			return errors.New("--dev-block-time must be positive")
		}
		return nil
	}
	if err := d.validateChain(mode, network); err != nil {
		return err
	}
	if d.FunderKey == nil {
		return errors.New("--deposits chain needs --funder-key-file (hex secp256k1 key of the account that pays the deposits)")
	}
	return nil
}

// validateChain checks the execution node, chain ID and deposit contract
// of a server that looks at the chain.
func (d DepositOptions) validateChain(mode DepositMode, network string) error {
	pub, public := deposit.PublicExecutionChain(network)
	if public && d.ChainID != nil && (!d.ChainID.IsUint64() || d.ChainID.Uint64() != pub.ChainID) {
		return fmt.Errorf("--chain-id %s contradicts --network %s (chain ID %d)", d.ChainID, network, pub.ChainID)
	}
	if d.RPCURL == "" {
		return fmt.Errorf("--deposits %s needs --eth1-rpc (the execution node)", mode)
	}
	if !strings.Contains(d.RPCURL, "://") {
		// Not shown: without a scheme it cannot be told apart from its
		// API key.
		return errors.New("--eth1-rpc: want a URL (http://, https://, ws:// or wss://)")
	}
	if d.Contract == (common.Address{}) {
		return fmt.Errorf("--deposits %s with --eth1-rpc needs --deposit-contract (deploy one on a devnet with `pkmanager deposit-contract deploy`)", mode)
	}
	if public && d.Contract != common.HexToAddress(pub.DepositContract) {
		return fmt.Errorf("--deposit-contract %s is not %s's deposit contract %s: leave the flag out on a public network", d.Contract.Hex(), network, pub.DepositContract)
	}
	return nil
}

// validateRequireActive checks --require-active against the other
// options: the statuses come from a beacon node, and keys minted with
// exported deposit data (assigned at once, deposited by an operator some
// day) could never be active when they are handed out.
func (o *Options) validateRequireActive() error {
	if !o.Beacon.RequireActive {
		return nil
	}
	if len(o.Beacon.URLs) == 0 {
		return errors.New("--require-active needs --beacon-url: the beacon node says which validators are active")
	}
	switch o.Deposits.Mode {
	case DepositsChain, DepositsOff:
		return nil
	}
	return errors.New("--require-active needs --deposits chain or off: with exported deposit data a minted key is handed out at once, before anyone deposited it, so it is never active then")
}

// gwei is wei in gwei, for messages.
func gwei(wei *big.Int) *big.Int {
	return new(big.Int).Quo(wei, big.NewInt(1e9))
}
