// Package devchain runs an Ethereum execution chain inside the process for
// dev mode and tests: go-ethereum's node with a simulated beacon (the engine
// of the simulated backend), the official deposit contract deployed, a funded
// dev account with a fixed, public key, blocks produced on a timer, and
// JSON-RPC (HTTP and WebSocket on one port) on a loopback address.
//
// With a data directory the chain is kept on disk and continues where it
// stopped after a clean shutdown, so a restarted dev server finds its earlier
// deposits. Never use it, or its dev key, for anything of value.
package devchain

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/eth"
	"github.com/ethereum/go-ethereum/eth/catalyst"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/eth/filters"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/p2p"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
)

// DevKeyHex is the dev account's secp256k1 key: the first account of the
// well-known "test test ... junk" development mnemonic. It is public; the
// dev chain funds it at genesis and deposits are paid from it.
const DevKeyHex = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

// ChainID of the dev chain (go-ethereum's dev chain configuration).
var ChainID = params.AllDevChainProtocolChanges.ChainID

// DefaultBlockTime is the block interval when Config.BlockTime is 0.
const DefaultBlockTime = time.Second

// Config configures a dev chain.
type Config struct {
	// DataDir keeps the chain on disk; empty means in memory.
	DataDir string
	// BlockTime is the block interval (0: DefaultBlockTime). Blocks are made
	// also when empty, like a real chain.
	BlockTime time.Duration
	// Manual turns the block timer off: blocks are made by Commit only (tests).
	Manual bool
	// RPCAddr is the loopback host:port for JSON-RPC over HTTP and
	// WebSocket; empty means none. Port 0 picks a free port.
	RPCAddr string
	// GasLimit is the block gas limit (0: go-ethereum's default, 60M).
	GasLimit uint64
	// Alloc funds extra accounts at genesis (tests).
	Alloc  types.GenesisAlloc
	Logger *slog.Logger
}

// Chain is a running dev chain.
type Chain struct {
	node      *node.Node
	eth       *eth.Ethereum
	beacon    *catalyst.SimulatedBeacon
	client    *ethclient.Client
	key       *ecdsa.PrivateKey
	contract  common.Address
	endpoint  string
	blockTime time.Duration
	logger    *slog.Logger

	commitMu  sync.Mutex
	producing bool
	stop      chan struct{}
	done      chan struct{}
	close     sync.Once
}

// DevKey returns the dev account's key.
func DevKey() *ecdsa.PrivateKey {
	k, err := crypto.HexToECDSA(DevKeyHex)
	if err != nil {
		panic(err)
	}
	return k
}

// DevAddress is the dev account's address.
func DevAddress() common.Address { return crypto.PubkeyToAddress(DevKey().PublicKey) }

// devBalance funds the dev account: 10^9 ETH.
var devBalance = new(big.Int).Mul(big.NewInt(1_000_000_000), big.NewInt(params.Ether))

// Start starts the chain, deploys the deposit contract from the dev account
// if it is not there yet (its address is the dev account's first contract
// address), and starts making blocks.
func Start(ctx context.Context, cfg Config) (_ *Chain, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BlockTime <= 0 {
		cfg.BlockTime = DefaultBlockTime
	}
	c := &Chain{key: DevKey(), blockTime: cfg.BlockTime, logger: cfg.Logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	nodeConf := node.DefaultConfig
	nodeConf.Name = "devchain"
	nodeConf.DataDir = cfg.DataDir
	nodeConf.IPCPath = ""
	nodeConf.P2P = p2p.Config{NoDiscovery: true, NoDial: true, MaxPeers: 0}
	nodeConf.AuthPort = 0
	if cfg.RPCAddr != "" {
		host, portStr, err := net.SplitHostPort(cfg.RPCAddr)
		if err != nil {
			return nil, fmt.Errorf("dev chain RPC address %q: %w", cfg.RPCAddr, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("dev chain RPC address %q: only loopback addresses are allowed", cfg.RPCAddr)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("dev chain RPC address %q: %w", cfg.RPCAddr, err)
		}
		if port == 0 {
			// The node reports a configured port 0 as is; pick a free one.
			if port, err = freePort(host); err != nil {
				return nil, err
			}
		}
		nodeConf.HTTPHost, nodeConf.HTTPPort = host, port
		nodeConf.HTTPModules = []string{"eth", "net", "web3", "txpool"}
		nodeConf.HTTPVirtualHosts = []string{"localhost", "127.0.0.1"}
		nodeConf.WSHost, nodeConf.WSPort = host, port
		nodeConf.WSModules = nodeConf.HTTPModules
		nodeConf.WSOrigins = []string{"*"}
	}

	alloc := core.SystemContractAllocs()
	for a, acc := range cfg.Alloc {
		alloc[a] = acc
	}
	alloc[DevAddress()] = types.Account{Balance: devBalance}
	gasLimit := cfg.GasLimit
	if gasLimit == 0 {
		gasLimit = ethconfig.Defaults.Miner.GasCeil
	}
	ethConf := ethconfig.Defaults
	ethConf.Genesis = &core.Genesis{Config: params.AllDevChainProtocolChanges, GasLimit: gasLimit, Alloc: alloc}
	ethConf.Miner.GasCeil = gasLimit
	ethConf.SyncMode = ethconfig.FullSync
	ethConf.TxPool.NoLocals = true
	ethConf.TxPool.GlobalSlots = 8192
	ethConf.TxPool.AccountSlots = 8192
	ethConf.TxPool.GlobalQueue = 8192
	ethConf.TxPool.AccountQueue = 8192

	if c.node, err = node.New(&nodeConf); err != nil {
		return nil, fmt.Errorf("dev chain node: %w", err)
	}
	if c.eth, err = eth.New(c.node, &ethConf); err != nil {
		return nil, fmt.Errorf("dev chain: %w", err)
	}
	fs := filters.NewFilterSystem(c.eth.APIBackend, filters.Config{})
	c.node.RegisterAPIs([]rpc.API{{Namespace: "eth", Service: filters.NewFilterAPI(fs)}})
	if err := c.node.Start(); err != nil {
		return nil, fmt.Errorf("start dev chain (RPC %s): %w", cfg.RPCAddr, err)
	}
	if c.beacon, err = catalyst.NewSimulatedBeacon(0, common.Address{}, c.eth); err != nil {
		return nil, fmt.Errorf("dev chain beacon: %w", err)
	}
	c.client = ethclient.NewClient(c.node.Attach())
	if cfg.RPCAddr != "" {
		c.endpoint = c.node.HTTPEndpoint()
	}

	if err := c.deploy(ctx); err != nil {
		return nil, err
	}
	if !cfg.Manual {
		c.producing = true
		go c.produce()
	}
	return c, nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("dev chain RPC: find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// deploy deploys the deposit contract unless the dev account already did.
func (c *Chain) deploy(ctx context.Context) error {
	c.contract = crypto.CreateAddress(DevAddress(), 0)
	code, err := c.client.CodeAt(ctx, c.contract, nil)
	if err != nil {
		return fmt.Errorf("dev chain: read deposit contract code: %w", err)
	}
	if len(code) > 0 {
		return nil
	}
	nonce, err := c.client.NonceAt(ctx, DevAddress(), nil)
	if err != nil {
		return fmt.Errorf("dev chain: %w", err)
	}
	if nonce != 0 {
		return fmt.Errorf("dev chain: the dev account has sent %d transactions but no deposit contract is at %s", nonce, c.contract)
	}
	// Make blocks while Deploy waits for its receipt.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.Commit()
			}
		}
	}()
	d, err := depositcontract.Deploy(ctx, c.client, c.key, nil, 10*time.Millisecond)
	close(done)
	if err != nil {
		return fmt.Errorf("dev chain: deploy the deposit contract: %w", err)
	}
	if d.Address != c.contract {
		return fmt.Errorf("dev chain: deposit contract deployed at %s, expected %s", d.Address, c.contract)
	}
	c.logger.Info("dev chain: deposit contract deployed", slog.String("address", d.Address.Hex()), slog.Uint64("block", d.Block))
	return nil
}

func (c *Chain) produce() {
	defer close(c.done)
	t := time.NewTicker(c.blockTime)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.Commit()
		}
	}
}

// Commit makes a block now with the pending transactions, and returns its
// number.
func (c *Chain) Commit() uint64 {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	select {
	case <-c.stop:
		return 0
	default:
	}
	c.beacon.Commit()
	return c.eth.BlockChain().CurrentBlock().Number.Uint64()
}

// Client returns an in-process JSON-RPC client of the chain.
func (c *Chain) Client() *ethclient.Client { return c.client }

// RPCEndpoint is the HTTP JSON-RPC URL (the same port serves WebSocket), or
// "" without Config.RPCAddr.
func (c *Chain) RPCEndpoint() string { return c.endpoint }

// DepositContract is the address of the deposit contract.
func (c *Chain) DepositContract() common.Address { return c.contract }

// FunderKey is the dev account's key (public knowledge: DevKeyHex).
func (c *Chain) FunderKey() *ecdsa.PrivateKey { return c.key }

// BlockTime is the block interval.
func (c *Chain) BlockTime() time.Duration { return c.blockTime }

// Close stops block production and the node (writing the chain to disk when
// it has a data directory).
func (c *Chain) Close() error {
	var err error
	c.close.Do(func() {
		c.commitMu.Lock()
		close(c.stop)
		c.commitMu.Unlock()
		if c.producing {
			<-c.done
		}
		if c.client != nil {
			c.client.Close()
		}
		if c.node != nil {
			if cerr := c.node.Close(); cerr != nil && !errors.Is(cerr, node.ErrNodeStopped) {
				err = cerr
			}
		}
	})
	return err
}
