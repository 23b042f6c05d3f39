package server

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositindex"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

// DepositMode says what happens to the deposits of newly minted keys.
type DepositMode string

// Deposit modes.
const (
	// DepositsExport: minted keys are assigned at once; their deposit data is
	// exported (deposit-data command, /api/v1/deposit-data) for an operator
	// to submit. Such a validator is inactive until someone does.
	DepositsExport DepositMode = "export"
	// DepositsChain: the server sends each minted key's deposit to the
	// deposit contract and hands the key out once the deposit is confirmed.
	DepositsChain DepositMode = "chain"
	// DepositsOff: the server never mints; a request the pool cannot satisfy
	// fails with "pool exhausted" and assigns nothing.
	DepositsOff DepositMode = "off"
)

// ParseDepositMode reads "chain", "export" or "off".
func ParseDepositMode(s string) (DepositMode, error) {
	switch m := DepositMode(s); m {
	case DepositsExport, DepositsChain, DepositsOff:
		return m, nil
	}
	return "", fmt.Errorf("deposit mode %q: use chain, export or off", s)
}

// SenderRunner runs the deposit sender while this replica owns the sending
// role (the funder's nonces). It calls run with a context that ends when
// ownership is lost or ctx ends, may call it again after regaining
// ownership, and returns when ctx ends; run returns only after everything
// it sent is recorded. With one replica (bbolt) it is RunAlways; a
// multi-replica store passes one that holds a lease or advisory lock while
// run runs, so that never two processes send from one funder.
type SenderRunner func(ctx context.Context, run func(ctx context.Context) error) error

// RunAlways is the SenderRunner of a single replica: it runs the sender until
// ctx ends.
func RunAlways(ctx context.Context, run func(ctx context.Context) error) error { return run(ctx) }

// DepositOptions configure what happens to the deposits of minted keys.
type DepositOptions struct {
	Mode DepositMode // "" means DepositsExport
	// Chain mode: the execution node (HTTP or WebSocket JSON-RPC URL), the
	// deposit contract and the funder's key.
	RPCURL    string
	Contract  common.Address
	FunderKey *ecdsa.PrivateKey
	// ChainID, when set, must be the node's chain ID.
	ChainID              *big.Int
	Confirmations        uint64   // 0 means 1
	MaxFeePerGas         *big.Int // wei; nil: depositor default
	MaxPriorityFeePerGas *big.Int // wei; nil: depositor default
	PollInterval         time.Duration
	// DevChain runs the embedded dev chain (with its dev funder and
	// contract) instead of connecting to RPCURL.
	DevChain *devchain.Config
	// DevBlockTime (--dev-block-time) and DevRPCAddr (--dev-rpc-addr;
	// DevRPCNone: none) are the BlockTime and RPCAddr of the DevChain that
	// SetDefaults makes in dev mode without RPCURL.
	DevBlockTime time.Duration
	DevRPCAddr   string
	// RunSender gates the sender on owning the sending role; nil means
	// RunAlways.
	RunSender SenderRunner
	// RefuseChainIDs names chains the execution node must not be on (dev
	// mode: the public networks, chain ID -> name): New fails when it is.
	RefuseChainIDs map[uint64]string
}

// checkChain fails when the execution node's chain id is one of
// RefuseChainIDs.
func (o DepositOptions) checkChain(id *big.Int) error {
	if id == nil || !id.IsUint64() {
		return nil
	}
	if name, ok := o.RefuseChainIDs[id.Uint64()]; ok {
		return fmt.Errorf("the execution node %s is on %s (chain ID %s), a public network: --dev is for devnets only "+
			"(it generates its key-encryption key, serves without authentication and sends withdrawals to a burn address); run without --dev",
			redact.URL(o.RPCURL), name, id)
	}
	return nil
}

// DepositInfo describes the deposit setup of a running server (banner).
type DepositInfo struct {
	Mode          DepositMode
	ChainID       string
	Contract      string
	Funder        string
	Confirmations uint64
	// DevRPC is the embedded dev chain's JSON-RPC URL ("" without one).
	DevRPC       string
	DevFunderKey string // the dev chain's public dev key, for tools
	DevBlockTime time.Duration
	DepositCount uint64
}

// depositParts is the chain side of a server in chain mode (and the view
// of the chain in export mode with an execution node).
type depositParts struct {
	info   DepositInfo
	chain  *devchain.Chain
	client *ethclient.Client
	dep    *depositor.Depositor // chain mode only
	index  *depositindex.Index  // the deposit index (chainview.go)
	stop   func()
}

// setupDeposits builds the deposit side of the server and returns what the
// allocator gets: the minter (nil when minting is off) and the depositor (nil
// unless deposits go on chain).
func (s *Server) setupDeposits(ctx context.Context, minter *mint.Minter) (allocator.Minter, allocator.Depositor, error) {
	o := s.opts.Deposits
	switch o.Mode {
	case "", DepositsExport:
		if o.RPCURL != "" {
			if err := s.setupChainView(ctx); err != nil {
				return nil, nil, err
			}
		}
		return minter, nil, nil
	case DepositsOff:
		return nil, nil, nil
	case DepositsChain:
	default:
		return nil, nil, fmt.Errorf("unknown deposit mode %q", o.Mode)
	}
	p := &depositParts{info: DepositInfo{Mode: DepositsChain}}
	s.deposits = p
	contract, key := o.Contract, o.FunderKey
	poll := o.PollInterval
	if o.DevChain != nil {
		cfg := *o.DevChain
		cfg.Logger = s.logger
		chain, err := devchain.Start(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		p.chain, p.client = chain, chain.Client()
		contract, key = chain.DepositContract(), chain.FunderKey()
		p.info.DevRPC, p.info.DevFunderKey, p.info.DevBlockTime = chain.RPCEndpoint(), devchain.DevKeyHex, chain.BlockTime()
		if poll == 0 {
			poll = min(depositor.DefaultPollInterval, chain.BlockTime()/4)
		}
	} else {
		// Options.Validate made sure of the node, contract and funder key.
		dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := ethclient.DialContext(dialCtx, o.RPCURL)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to the execution node %s: %w", redact.URL(o.RPCURL), redact.Error(err))
		}
		p.client = c
		if len(o.RefuseChainIDs) > 0 {
			id, err := scrubbedChain{c}.ChainID(dialCtx)
			if err != nil {
				return nil, nil, fmt.Errorf("read the chain ID from the execution node %s: %w", redact.URL(o.RPCURL), err)
			}
			if err := o.checkChain(id); err != nil {
				return nil, nil, err
			}
		}
	}
	amount := s.opts.Mint.AmountGwei
	dep, err := depositor.New(depositor.Config{
		Chain: scrubbedChain{p.client}, Store: s.store, Contract: contract, FunderKey: key, ChainID: o.ChainID,
		Confirmations: o.Confirmations, MaxFeePerGas: o.MaxFeePerGas, MaxPriorityFeePerGas: o.MaxPriorityFeePerGas,
		AmountGwei: amount, PollInterval: poll, Metrics: depositor.NewMetrics(s.metrics.Registry), Logger: s.logger,
		Now: s.now,
	})
	if err != nil {
		return nil, nil, err
	}
	checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, count, err := dep.Check(checkCtx)
	if err != nil {
		return nil, nil, err
	}
	if p.index, err = dep.Index(checkCtx); err != nil {
		return nil, nil, err
	}
	p.dep = dep
	p.info.ChainID, p.info.Contract, p.info.DepositCount = id.String(), contract.Hex(), count
	p.info.Funder, p.info.Confirmations = crypto.PubkeyToAddress(key.PublicKey).Hex(), dep.Confirmations()
	return minter, dep, nil
}

// setupChainView connects to the execution node of an export-mode server
// and makes the deposit index, so that exports leave out deposits already
// on chain; nothing is ever sent.
func (s *Server) setupChainView(ctx context.Context) error {
	o := s.opts.Deposits // Options.Validate made sure of the contract
	p := &depositParts{info: DepositInfo{Mode: DepositsExport}}
	s.deposits = p
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ec, err := ethclient.DialContext(dialCtx, o.RPCURL)
	if err != nil {
		return fmt.Errorf("connect to the execution node %s: %w", redact.URL(o.RPCURL), redact.Error(err))
	}
	p.client = ec
	c := scrubbedChain{ec}
	id, err := c.ChainID(dialCtx)
	if err != nil {
		return fmt.Errorf("read the chain ID from the execution node %s: %w", redact.URL(o.RPCURL), err)
	}
	if err := o.checkChain(id); err != nil {
		return err
	}
	if o.ChainID != nil && id.Cmp(o.ChainID) != 0 {
		return fmt.Errorf("%w: the execution node is on chain %s, configured chain is %s", depositor.ErrWrongChain, id, o.ChainID)
	}
	count, err := depositcontract.DepositCount(dialCtx, c, o.Contract, nil)
	if err != nil {
		return fmt.Errorf("%w at %s on chain %s: %w", depositor.ErrNoContract, o.Contract.Hex(), id, err)
	}
	if p.index, err = depositindex.New(depositindex.Config{Chain: c, Store: s.store, Contract: o.Contract, ChainID: id, Logger: s.logger}); err != nil {
		return err
	}
	p.info.ChainID, p.info.Contract, p.info.DepositCount = id.String(), o.Contract.Hex(), count
	return nil
}

// DepositInfo describes the deposit setup (zero Mode fields are export).
func (s *Server) DepositInfo() DepositInfo {
	if s.deposits == nil {
		m := s.opts.Deposits.Mode
		if m == "" {
			m = DepositsExport
		}
		return DepositInfo{Mode: m}
	}
	return s.deposits.info
}

// startDeposits runs the sender (through the SenderRunner) until the
// returned stop is called.
func (s *Server) startDeposits(ctx context.Context) (stop func()) {
	p := s.deposits
	if p == nil || (p.dep == nil && p.index == nil) {
		return func() {}
	}
	runner := s.opts.Deposits.RunSender
	if runner == nil {
		runner = RunAlways
	}
	run := func(ctx context.Context) error {
		if p.dep != nil {
			return p.dep.Run(ctx)
		}
		p.index.Keep(ctx, 12*time.Second) // export mode: only the view of the chain
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := runner(runCtx, run); err != nil && runCtx.Err() == nil {
			s.logger.Error("deposit sender stopped; minted keys stay pending-deposit until a server sends their deposits",
				slog.Any("error", err))
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// closeDeposits closes the chain client and the dev chain.
func (s *Server) closeDeposits() {
	p := s.deposits
	if p == nil {
		return
	}
	if p.chain != nil {
		if err := p.chain.Close(); err != nil {
			s.logger.Warn("close the dev chain", slog.Any("error", err))
		}
		return // its client is closed with it
	}
	if p.client != nil {
		p.client.Close()
	}
}

var _ depositor.Store = store.Store(nil)
