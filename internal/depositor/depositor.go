// Package depositor puts the deposits of minted validator keys on chain: it
// simulates, signs, records, sends and confirms deposit transactions to the
// official deposit contract, and recovers every unfinished deposit after a
// restart, so that a key is deposited exactly once and is never handed out
// before (or without) its deposit.
//
// # Work and ownership
//
// The store is the queue: a pending-deposit key without a DepositTx is a
// deposit to send, one with a DepositTx is a deposit in flight. The sender
// (Run) is a loop that exactly one process runs at a time (it owns the
// funder's nonces: nothing else may send from the funder account). A server
// starts Run while it owns the sending role; with several replicas on one
// store, only the owner runs it, and the others' requests wait by polling the
// store. Notify wakes the sender of this process early.
//
// # Crash safety
//
// For every deposit the sender, in this order: simulates it (eth_estimateGas:
// a revert fails the key, nothing is sent), checks the funder balance for the
// whole batch, signs it with the next nonce, records the signed transaction
// with the store (SetDepositTx, committed before anything leaves the process),
// and only then broadcasts it. For each recorded transaction, after a restart
// as in normal running:
//   - mined (receipt found): after Confirmations blocks, ConfirmDeposit, or,
//     if it reverted, FailDeposit;
//   - not mined and its nonce still free: rebroadcast the same signed bytes
//     (same hash) when the node does not know it;
//   - its nonce consumed by another transaction (Confirmations deep): look
//     the key up in the deposit index; found -> confirm, not found -> the
//     recorded transaction can never be mined, so the key is signed again
//     with a new nonce, recorded, and sent.
//
// So a deposit is never sent twice: a second transaction for a key is only
// made once the first provably cannot be included.
//
// # The chain is the truth
//
// The store's word that a key has no deposit is not enough (a store
// restored from an older backup, a store rebuilt from a mnemonic, two
// installations sharing one): before the first signature for a key, the
// sender looks it up in the deposit index (package depositindex, kept in
// the store and resumed from its last block; FindDeposits). A key whose
// deposit is on chain with this key's withdrawal credentials and amount is
// confirmed, not deposited again; one with other credentials is failed (the
// chain has another owner's deposit for it). A derived key whose deposit no
// transaction of this store made is failed too: another installation on the
// same mnemonic may hold it (the minter already skips derivation indices
// whose keys have deposits; this covers a deposit made after that check).
// Random keys exist only here, so their deposits are ours whoever paid
// them.
package depositor

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositindex"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Chain is what the depositor needs from an execution-layer JSON-RPC client.
// *ethclient.Client (HTTP or WebSocket) and the simulated backend's client
// satisfy it.
type Chain interface {
	ChainID(ctx context.Context) (*big.Int, error)
	BlockNumber(ctx context.Context) (uint64, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	BalanceAt(ctx context.Context, account common.Address, blockNumber *big.Int) (*big.Int, error)
	NonceAt(ctx context.Context, account common.Address, blockNumber *big.Int) (uint64, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	EstimateGas(ctx context.Context, call ethereum.CallMsg) (uint64, error)
	CallContract(ctx context.Context, call ethereum.CallMsg, blockNumber *big.Int) ([]byte, error)
	CodeAt(ctx context.Context, account common.Address, blockNumber *big.Int) ([]byte, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
	TransactionReceipt(ctx context.Context, txHash common.Hash) (*types.Receipt, error)
	TransactionByHash(ctx context.Context, hash common.Hash) (tx *types.Transaction, isPending bool, err error)
	FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error)
}

// Store is what the depositor needs from the store.
type Store interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	GetKey(ctx context.Context, pubkey store.Pubkey) (store.Key, error)
	SetDepositTx(ctx context.Context, pubkey store.Pubkey, tx store.DepositTx, now time.Time) error
	ConfirmDeposit(ctx context.Context, pubkey store.Pubkey, block uint64, now time.Time) (store.Key, error)
	FailDeposit(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error
	AppendAudit(ctx context.Context, e store.AuditEvent) error
	depositindex.Store
}

// Actor is the audit trail's actor of the sender's decisions (deposits
// sent, confirmed and failed).
const Actor = "depositor"

// Defaults.
const (
	DefaultPollInterval     = 500 * time.Millisecond
	DefaultRescanInterval   = 2 * time.Second
	DefaultRebroadcastAfter = time.Minute
	DefaultLogChunk         = 10_000
	// DepositGasLimit is the least gas limit of a deposit transaction. A
	// deposit's gas depends on its position in the contract's Merkle tree,
	// which a simulation at the latest block cannot know (other deposits may
	// come first): about 65,000 usually, up to about 250,000 when it starts a
	// new level of the tree (counts 2^k - 1). Only the gas used is paid.
	DepositGasLimit = 300_000
	// DefaultGasReserve is the gas per deposit assumed by the funds check
	// before deposits are simulated.
	DefaultGasReserve = DepositGasLimit
	// DefaultMaxFeeGwei and DefaultMaxPriorityFeeGwei cap the fees per gas.
	DefaultMaxFeeGwei         = 200
	DefaultMaxPriorityFeeGwei = 2
)

// Errors callers test with errors.Is.
var (
	// ErrInsufficientFunds: the funder cannot pay for the deposits; nothing
	// was sent.
	ErrInsufficientFunds = errors.New("insufficient funds")
	// ErrFeeCap: the base fee is above the configured maximum fee per gas;
	// nothing is sent until it falls.
	ErrFeeCap = errors.New("base fee above the fee cap")
	// ErrWrongChain: the node is on another chain than configured.
	ErrWrongChain = errors.New("wrong chain")
	// ErrNoContract: no deposit contract at the configured address.
	ErrNoContract = errors.New("no deposit contract")
)

// Config configures a Depositor. Chain, Store, Contract and FunderKey are
// required.
type Config struct {
	Chain     Chain
	Store     Store
	Contract  common.Address
	FunderKey *ecdsa.PrivateKey
	// ChainID, when set, must be the node's chain ID (Check fails otherwise).
	ChainID *big.Int
	// Confirmations: a deposit counts once its block has this many blocks on
	// top, itself included (1: mined). 0 means 1.
	Confirmations uint64
	// MaxFeePerGas and MaxPriorityFeePerGas cap the EIP-1559 fees (wei);
	// nil means DefaultMaxFeeGwei and DefaultMaxPriorityFeeGwei.
	MaxFeePerGas         *big.Int
	MaxPriorityFeePerGas *big.Int
	// AmountGwei is the deposit amount the funds check assumes for keys not
	// minted yet (CheckFunds); 0 means 32 ETH.
	AmountGwei uint64
	// PollInterval is how often the sender looks at the chain (and waiters
	// at the store); 0 means DefaultPollInterval.
	PollInterval time.Duration
	// RescanInterval is how often the sender re-reads the pending keys from
	// the store without a Notify (keys added by other replicas).
	RescanInterval time.Duration
	// RebroadcastAfter: an unmined transaction the node does not know is
	// sent again after this long.
	RebroadcastAfter time.Duration
	// LogChunk is the largest block range of one eth_getLogs call.
	LogChunk uint64
	// IndexStart is the first block the deposit index reads; nil means the
	// deposit contract's deployment block on the public networks, else 0.
	IndexStart *uint64
	// IndexInterval is how often Run brings the deposit index up to date
	// (0: 12 s).
	IndexInterval time.Duration
	Metrics       *Metrics
	Logger        *slog.Logger
	Now           func() time.Time
}

// Depositor sends and confirms deposits. Its methods are safe for
// concurrent use; Run must run at most once at a time.
type Depositor struct {
	cfg     Config
	funder  common.Address
	amount  *big.Int // wei of AmountGwei
	wake    chan struct{}
	running atomic.Bool
	gasHint atomic.Uint64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every settlement or block change
	blocked error         // why the sender cannot send now (nil: it can)
	// inflightWei is the most this process's unmined transactions can
	// still cost (value + gas x fee cap), set by the sender.
	inflightWei *big.Int

	ixMu  sync.Mutex
	index *depositindex.Index // made on first use (it needs the chain ID)

	hooks hooks // tests only
}

// hooks let tests stop the process at the points that matter for crash safety.
type hooks struct {
	afterRecord    func(n int) // after n transactions were recorded, before any is broadcast
	afterBroadcast func(n int) // after n transactions were broadcast
}

// New checks cfg and returns a Depositor. It does not contact the chain.
func New(cfg Config) (*Depositor, error) {
	if cfg.Chain == nil || cfg.Store == nil {
		return nil, errors.New("depositor: chain client and store are required")
	}
	if cfg.FunderKey == nil {
		return nil, errors.New("depositor: no funder key")
	}
	if cfg.Contract == (common.Address{}) {
		return nil, errors.New("depositor: no deposit contract address")
	}
	if cfg.Confirmations == 0 {
		cfg.Confirmations = 1
	}
	if cfg.MaxFeePerGas == nil {
		cfg.MaxFeePerGas = Gwei(DefaultMaxFeeGwei)
	}
	if cfg.MaxPriorityFeePerGas == nil {
		cfg.MaxPriorityFeePerGas = Gwei(DefaultMaxPriorityFeeGwei)
	}
	if cfg.MaxPriorityFeePerGas.Cmp(cfg.MaxFeePerGas) > 0 {
		return nil, fmt.Errorf("depositor: max priority fee %s wei is above the max fee %s wei", cfg.MaxPriorityFeePerGas, cfg.MaxFeePerGas)
	}
	if cfg.AmountGwei == 0 {
		cfg.AmountGwei = 32_000_000_000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.RescanInterval <= 0 {
		cfg.RescanInterval = DefaultRescanInterval
	}
	if cfg.RebroadcastAfter <= 0 {
		cfg.RebroadcastAfter = DefaultRebroadcastAfter
	}
	if cfg.LogChunk == 0 {
		cfg.LogChunk = DefaultLogChunk
	}
	if cfg.IndexInterval <= 0 {
		cfg.IndexInterval = 12 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Depositor{
		cfg:         cfg,
		funder:      crypto.PubkeyToAddress(cfg.FunderKey.PublicKey),
		amount:      depositcontract.GweiToWei(cfg.AmountGwei),
		wake:        make(chan struct{}, 1),
		changed:     make(chan struct{}),
		inflightWei: new(big.Int),
	}
	d.gasHint.Store(DefaultGasReserve)
	return d, nil
}

// Gwei returns n gwei in wei.
func Gwei(n uint64) *big.Int { return depositcontract.GweiToWei(n) }

// Funder is the address deposits are paid from.
func (d *Depositor) Funder() common.Address { return d.funder }

// Contract is the deposit contract's address.
func (d *Depositor) Contract() common.Address { return d.cfg.Contract }

// Confirmations is the configured confirmation depth.
func (d *Depositor) Confirmations() uint64 { return d.cfg.Confirmations }

// PollInterval is how often waiters should look at the store.
func (d *Depositor) PollInterval() time.Duration { return d.cfg.PollInterval }

// Notify wakes the sender: new pending-deposit keys are in the store. It
// never blocks.
func (d *Depositor) Notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Changed returns a channel that is closed at the next change of a deposit's
// state made by this process's sender (confirmed, failed) or of Blocked.
// Waiters take the channel before they look at the store.
func (d *Depositor) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

func (d *Depositor) signal() {
	d.mu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// Blocked returns why this process's sender cannot send deposits now (e.g.
// ErrInsufficientFunds, ErrFeeCap), or nil.
func (d *Depositor) Blocked() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.blocked
}

func (d *Depositor) setBlocked(err error) {
	d.mu.Lock()
	prev := d.blocked
	d.blocked = err
	d.mu.Unlock()
	if (prev == nil) != (err == nil) || (err != nil && prev.Error() != err.Error()) {
		if err != nil {
			d.cfg.Logger.Error("deposits blocked; nothing is sent until this is fixed", slog.Any("error", err))
		} else {
			d.cfg.Logger.Info("deposits unblocked")
		}
		d.signal()
	}
}

// Check verifies the chain: the node's chain ID (against Config.ChainID when
// set) and that a deposit contract is at the configured address. It returns
// the chain ID and the contract's deposit count.
func (d *Depositor) Check(ctx context.Context) (chainID *big.Int, depositCount uint64, err error) {
	id, err := d.cfg.Chain.ChainID(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read the chain ID from the execution node: %w", err)
	}
	if d.cfg.ChainID != nil && id.Cmp(d.cfg.ChainID) != 0 {
		return nil, 0, fmt.Errorf("%w: the execution node is on chain %s, configured chain is %s", ErrWrongChain, id, d.cfg.ChainID)
	}
	code, err := d.cfg.Chain.CodeAt(ctx, d.cfg.Contract, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("read the code of the deposit contract %s: %w", d.cfg.Contract, err)
	}
	if len(code) == 0 {
		return nil, 0, fmt.Errorf("%w at %s on chain %s (deploy one with `pkmanager deposit-contract deploy`)", ErrNoContract, d.cfg.Contract, id)
	}
	n, err := depositcontract.DepositCount(ctx, d.cfg.Chain, d.cfg.Contract, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w at %s: %w", ErrNoContract, d.cfg.Contract, err)
	}
	return id, n, nil
}

// Index returns the deposit index of the contract on the node's chain,
// making it on first use.
func (d *Depositor) Index(ctx context.Context) (*depositindex.Index, error) {
	d.ixMu.Lock()
	defer d.ixMu.Unlock()
	if d.index != nil {
		return d.index, nil
	}
	id := d.cfg.ChainID
	if id == nil {
		var err error
		if id, err = d.cfg.Chain.ChainID(ctx); err != nil {
			return nil, fmt.Errorf("read the chain ID from the execution node: %w", err)
		}
	}
	ix, err := depositindex.New(depositindex.Config{
		Chain: d.cfg.Chain, Store: d.cfg.Store, Contract: d.cfg.Contract, ChainID: id,
		Start: d.cfg.IndexStart, Chunk: d.cfg.LogChunk, Logger: d.cfg.Logger,
		OnSync: func(st depositindex.Stats) { d.cfg.Metrics.IndexBlock.Set(float64(st.Cursor.Next) - 1) },
	})
	if err != nil {
		return nil, err
	}
	d.index = ix
	return ix, nil
}

// FindDeposits returns the first DepositEvent on chain of each of pubkeys
// that has one (see package depositindex).
func (d *Depositor) FindDeposits(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]depositcontract.Event, error) {
	ix, err := d.Index(ctx)
	if err != nil {
		return nil, err
	}
	found, err := ix.Find(ctx, pubkeys)
	if err != nil {
		return nil, fmt.Errorf("look for existing deposits on chain: %w", err)
	}
	return found, nil
}

// CheckFunds checks that the funder can pay n more deposits of the
// configured amount at the current fee cap, besides the deposits in flight
// in this process. The error wraps ErrInsufficientFunds and names both
// amounts.
func (d *Depositor) CheckFunds(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	balance, err := d.cfg.Chain.BalanceAt(ctx, d.funder, nil)
	if err != nil {
		return fmt.Errorf("read the funder balance: %w", err)
	}
	d.cfg.Metrics.FunderBalance.Set(weiFloat(balance))
	perDeposit := new(big.Int).Add(d.amount, new(big.Int).Mul(new(big.Int).SetUint64(d.gasHint.Load()), d.cfg.MaxFeePerGas))
	need := new(big.Int).Mul(perDeposit, big.NewInt(int64(n)))
	d.mu.Lock()
	committed := new(big.Int).Set(d.committedWei())
	d.mu.Unlock()
	avail := new(big.Int).Sub(balance, committed)
	if avail.Cmp(need) < 0 {
		return d.fundsError(n, need, balance, committed)
	}
	return nil
}

func (d *Depositor) fundsError(n int, need, balance, committed *big.Int) error {
	extra := ""
	if committed.Sign() > 0 {
		extra = fmt.Sprintf(", of which %s are reserved for deposits in flight", formatWei(committed))
	}
	return fmt.Errorf("%w: %d %s need %s (amount + max fee each), funder %s has %s%s; nothing was sent",
		ErrInsufficientFunds, n, plural(n, "deposit", "deposits"), formatWei(need), d.funder.Hex(), formatWei(balance), extra)
}

// committedWei is the cost of this process's unmined transactions; d.mu held.
func (d *Depositor) committedWei() *big.Int { return d.inflightWei }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// formatWei writes an amount as "X ETH (N wei)".
func formatWei(w *big.Int) string {
	return fmt.Sprintf("%s ETH (%s wei)", ethString(w), w.String())
}

func ethString(w *big.Int) string {
	f := new(big.Float).SetPrec(128).SetInt(w)
	f.Quo(f, big.NewFloat(1e18))
	s := f.Text('f', 9)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func weiFloat(w *big.Int) float64 {
	f, _ := new(big.Float).SetInt(w).Float64()
	return f
}

// LoadFunderKey reads a hex secp256k1 key (64 hex characters, optional 0x)
// from path. The key, and anything derived from the file's content, never
// appears in an error. warning is set when the file is readable by others.
func LoadFunderKey(path string) (key *ecdsa.PrivateKey, warning string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("funder key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("funder key file %s is accessible by other users (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("funder key file: %w", err)
	}
	key, err = ParseFunderKey(string(raw))
	if err != nil {
		return nil, "", fmt.Errorf("funder key file %s: %w", path, err)
	}
	return key, warning, nil
}

// ParseFunderKey parses a hex secp256k1 key; errors never quote the input.
func ParseFunderKey(text string) (*ecdsa.PrivateKey, error) {
	h := strings.TrimSpace(text)
	h = strings.TrimPrefix(strings.TrimPrefix(h, "0x"), "0X")
	if len(h) != 64 {
		return nil, fmt.Errorf("want 64 hex characters (a secp256k1 private key), got %d characters", len(h))
	}
	key, err := crypto.HexToECDSA(h)
	if err != nil {
		return nil, errors.New("not a valid hex secp256k1 private key")
	}
	return key, nil
}
