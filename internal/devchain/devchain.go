// Package devchain runs an Ethereum execution chain inside the process for
// dev mode and tests: go-ethereum's node with a simulated beacon (the engine
// of the simulated backend), the official deposit contract deployed, a funded
// dev account with a fixed, public key, blocks produced on a timer, and
// JSON-RPC (HTTP and WebSocket on one port) on a loopback address.
//
// # Blocks
//
// Every BlockTime (default 1 s) the chain looks at its transaction pool and
// makes a block if transactions are pending, so a transaction is mined within
// about one BlockTime. Without transactions it makes an empty block only
// IdleBlockTime (default 12 s, a slot) after the last block: time on chain
// advances without storing a block (and its state) every second.
//
// # Crash safety
//
// With a data directory the chain is kept on disk and continues where it
// stopped, also after the process was killed (SIGKILL, OOM kill) at any
// moment: a new data directory gets a LevelDB database, which hands every
// write to the operating system before it returns, and the hash state scheme
// in archive mode, which writes the state of every block to the database
// before the block becomes the head. So every block a client has seen (a
// receipt, a deposit event) is there after a restart, and a restarted dev
// server finds all its deposits. What a kill loses is what no block holds
// yet: the transaction pool (the depositor sends its recorded transactions
// again) and the simulated beacon's fork choice (rebuilt from the head). A
// power loss or an operating system crash can still lose the last writes.
//
// Data directories created before (go-ethereum's defaults: Pebble, which
// buffers writes in the process, and the path state scheme, which keeps the
// recent state in memory until a clean shutdown) are opened as they are, with
// a warning: a kill makes them go back to an older block, or lose the
// deposit contract.
//
// Archive mode keeps the state of every block: about 4 KB per empty block on
// disk (the system contracts change storage in every block), so about 30 MB a
// day idle at one block per IdleBlockTime of 12 s (a block every second would
// be about 350 MB a day), plus about 2.5 KB per deposit.
//
// Never use the chain, or its dev key, for anything of value.
package devchain

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/rawdb"
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

// Block production defaults.
const (
	// DefaultBlockTime is how often the chain makes a block when transactions
	// are pending, when Config.BlockTime is 0.
	DefaultBlockTime = time.Second
	// DefaultIdleBlockTime is the longest time without a block (an empty one)
	// when Config.IdleBlockTime is 0: a slot.
	DefaultIdleBlockTime = 12 * time.Second
)

// Config configures a dev chain.
type Config struct {
	// DataDir keeps the chain on disk; empty means in memory.
	DataDir string
	// BlockTime is how often the chain looks for pending transactions and
	// makes a block with them (0: DefaultBlockTime).
	BlockTime time.Duration
	// IdleBlockTime is the longest time without a block: without pending
	// transactions an empty block is made this long after the last block (0:
	// DefaultIdleBlockTime). At or below BlockTime every tick makes a block,
	// empty or not.
	IdleBlockTime time.Duration
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
	idleTime  time.Duration
	crashSafe bool
	logger    *slog.Logger

	commitMu   sync.Mutex
	lastCommit time.Time // when this process last made a block
	producing  bool
	stop       chan struct{}
	done       chan struct{}
	close      sync.Once
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
	if cfg.IdleBlockTime <= 0 {
		cfg.IdleBlockTime = DefaultIdleBlockTime
	}
	c := &Chain{key: DevKey(), blockTime: cfg.BlockTime, idleTime: cfg.IdleBlockTime, logger: cfg.Logger,
		stop: make(chan struct{}), done: make(chan struct{}), lastCommit: time.Now()}
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
	// A small database cache (go-ethereum's default is 512 MB): a dev chain
	// needs little, and LevelDB's write buffer (a quarter of it) is the
	// journal replayed at start after a kill.
	ethConf.DatabaseCache = 32

	// A new data directory gets the crash-safe layout; an existing one is
	// opened with the database engine and state scheme it was created with.
	chaindata := ""
	existing := ""
	if cfg.DataDir != "" {
		chaindata = filepath.Join(cfg.DataDir, nodeConf.Name, "chaindata")
		if existing = rawdb.PreexistingDatabase(chaindata); existing == "" {
			nodeConf.DBEngine, ethConf.StateScheme = newLayout.engine, newLayout.scheme
		}
	}
	if c.node, err = node.New(&nodeConf); err != nil {
		return nil, fmt.Errorf("dev chain node: %w", err)
	}
	if existing != "" {
		if ethConf.StateScheme, err = storedScheme(c.node); err != nil {
			return nil, fmt.Errorf("dev chain: open the database in %s: %w", chaindata, err)
		}
	}
	if ethConf.StateScheme == rawdb.HashScheme {
		// Archive mode: the state of every block is committed to the
		// database with the block. No snapshot: it would be rebuilt after
		// every kill, and the state is small.
		ethConf.NoPruning = true
		ethConf.SnapshotCache = 0
	}
	if c.eth, err = eth.New(c.node, &ethConf); err != nil {
		return nil, fmt.Errorf("dev chain: %w", err)
	}
	if cfg.DataDir != "" {
		engine, scheme := rawdb.PreexistingDatabase(chaindata), c.eth.BlockChain().TrieDB().Scheme()
		c.crashSafe = engine == rawdb.DBLeveldb && scheme == rawdb.HashScheme
		if !c.crashSafe {
			c.logger.Warn("dev chain is not crash-safe: this data directory was made by an earlier pkmanager, whose chain keeps its latest "+
				"blocks in memory until a clean shutdown, so a kill (SIGKILL, OOM kill) takes it back to an older block, losing deposits the "+
				"server counted as confirmed, or keeps it from starting. For a crash-safe dev chain use a new data directory "+
				"(move this one away whole: its store's keys were deposited on this chain)",
				slog.String("dir", chaindata), slog.String("db_engine", engine), slog.String("state_scheme", scheme))
		}
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
		if cfg.DataDir != "" && !c.crashSafe {
			err = fmt.Errorf("%w (this chain in %s is not crash-safe and probably lost blocks when its process was killed; start with a new data directory)", err, chaindata)
		}
		return nil, err
	}
	if !cfg.Manual {
		c.producing = true
		go c.produce()
	}
	return c, nil
}

// newLayout is the database engine and state scheme of a new data
// directory. Tests set go-ethereum's defaults ("", "": Pebble and the path
// scheme) to make one as earlier versions did.
var newLayout = struct{ engine, scheme string }{rawdb.DBLeveldb, rawdb.HashScheme}

// storedScheme reads the state scheme of the node's existing chain database.
func storedScheme(n *node.Node) (string, error) {
	db, err := n.OpenDatabaseWithOptions("chaindata", node.DatabaseOptions{})
	if err != nil {
		return "", err
	}
	scheme := rawdb.ReadStateScheme(db)
	if err := db.Close(); err != nil {
		return "", err
	}
	return scheme, nil
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
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
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
			c.commitIf(func(idle time.Duration) bool {
				if idle >= c.idleTime {
					return true
				}
				// Let the pool drop the transactions of the last block.
				if err := c.eth.TxPool().Sync(); err != nil {
					return false
				}
				pending, _ := c.eth.TxPool().Stats()
				return pending > 0
			})
		}
	}
}

// Commit makes a block now with the transactions the pool took before it,
// and returns its number.
func (c *Chain) Commit() uint64 {
	c.settlePool()
	return c.commitIf(func(time.Duration) bool { return true })
}

// settleTimeout bounds settlePool's wait.
const settleTimeout = 2 * time.Second

// settlePool waits until the pool has promoted the transactions it took: no
// sender's next transaction (at its pending nonce) is still queued.
// go-ethereum's pool (v1.17.10) merges a promotion still waiting for its run
// with the forced reset that starts a block; that run takes the senders'
// pending nonces from the head state, so the transaction after a sender's
// pending ones stays queued until the next block (go-ethereum#35649), and a
// Commit right after two transactions could have one. One stranded that way
// already stays so until the next block: then this gives up after
// settleTimeout and says so.
func (c *Chain) settlePool() {
	pool := c.eth.TxPool()
	deadline := time.Now().Add(settleTimeout)
	for {
		waiting := 0
		if _, queued := pool.Stats(); queued > 0 {
			_, q := pool.Content()
			for from, txs := range q {
				if len(txs) > 0 && txs[0].Nonce() == pool.PoolNonce(from) {
					waiting++
				}
			}
		}
		if waiting == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.logger.Warn("dev chain: transactions the pool took are still queued; they go in a later block",
				slog.Int("senders", waiting), slog.Duration("waited", settleTimeout))
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// commitIf makes a block if want, given the time since the last block this
// process made, says so; it returns the head's number (0 after Close).
func (c *Chain) commitIf(want func(idle time.Duration) bool) uint64 {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	select {
	case <-c.stop:
		return 0
	default:
	}
	if want(time.Since(c.lastCommit)) {
		c.beacon.Commit()
		c.lastCommit = time.Now()
	}
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

// BlockTime is how often the chain makes a block when transactions are
// pending.
func (c *Chain) BlockTime() time.Duration { return c.blockTime }

// IdleBlockTime is the longest time without a block.
func (c *Chain) IdleBlockTime() time.Duration { return c.idleTime }

// CrashSafe reports whether the chain keeps every block it made when its
// process is killed: true for chains on disk created by this version (see
// the package documentation); false in memory.
func (c *Chain) CrashSafe() bool { return c.crashSafe }

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
