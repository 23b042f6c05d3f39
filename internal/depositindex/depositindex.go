// Package depositindex answers "does this public key already have a deposit
// on chain?" without scanning the chain's history for every question.
//
// The deposit contract's DepositEvent has no indexed topics, so a node cannot
// filter its logs by public key: finding one key's deposit means reading every
// DepositEvent since the contract was deployed (about 2 million on mainnet).
// An Index reads them once, in chunks of blocks, and keeps in the store
// (store.DepositIndex) an 8-byte key of each public key with the block that
// holds its event, and a cursor (the next block to read, with the hash of the
// last one read). Sync resumes from the cursor; Find looks keys up in the
// store, reads the logs of the few candidate blocks to see which public keys
// they really hold, and reads the newest blocks (those not in the stored
// index yet) live.
//
// The stored index stops Margin blocks below the head, so that it never holds
// entries of blocks a reorganization may still remove; those blocks are read
// at every Find. When the block at the cursor no longer has the hash recorded
// for it (a reorganization deeper than Margin), the index is rewound and read
// again from there. Entries of another chain or contract (a store moved to
// another network) are dropped and the index starts over.
//
// Several processes may keep one index (replicas on PostgreSQL): each move
// of the cursor names the cursor it starts from, and the store refuses a move
// from a cursor another process has moved since (store.ErrCursorMoved); the
// loser reads the cursor again and continues from there.
package depositindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Chain is what the index reads from an execution node.
type Chain interface {
	BlockNumber(ctx context.Context) (uint64, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error)
}

// Store keeps the index (store.DepositIndex).
type Store interface {
	DepositIndexCursor(ctx context.Context) (store.IndexCursor, error)
	MoveDepositIndex(ctx context.Context, from, to store.IndexCursor, entries []store.IndexEntry) error
	LookupDepositIndex(ctx context.Context, keys []uint64) (map[uint64][]uint64, error)
}

// Defaults.
const (
	// DefaultChunk is the largest block range of one eth_getLogs call. A
	// node that refuses a range (too many results, range too large) gets
	// half of it, down to one block.
	DefaultChunk = 10_000
	// DefaultMargin is how many of the newest blocks stay out of the stored
	// index (and are read at every Find): two epochs, beyond which a
	// reorganization would undo finalized blocks.
	DefaultMargin = 64
)

// deployBlocks are the blocks that deployed the deposit contracts of the
// public networks, by chain ID: no DepositEvent is older. Other chains are
// read from block 0.
var deployBlocks = map[uint64]uint64{
	1:        11_052_984, // mainnet
	11155111: 1_273_020,  // sepolia
	17000:    0,          // holesky (genesis)
	560048:   0,          // hoodi (genesis)
}

// StartBlock returns the first block that may hold a DepositEvent of the
// deposit contract on the chain with chainID: its deployment block on the
// public networks, 0 on others.
func StartBlock(chainID *big.Int) uint64 {
	if chainID != nil && chainID.IsUint64() {
		return deployBlocks[chainID.Uint64()]
	}
	return 0
}

// Config configures an Index. Chain, Store, Contract and ChainID are
// required.
type Config struct {
	Chain    Chain
	Store    Store
	Contract common.Address
	// ChainID is the chain's ID; with Contract it names the index's source,
	// so that entries of another chain are never used.
	ChainID *big.Int
	// Start is the first block read; nil means StartBlock(ChainID).
	Start *uint64
	// Chunk is the largest block range of one eth_getLogs; 0 means
	// DefaultChunk.
	Chunk uint64
	// Margin: the newest Margin blocks are read live, not stored; 0 means
	// DefaultMargin.
	Margin uint64
	// OnSync, when set, is called after every completed Sync (metrics).
	OnSync func(Stats)
	Logger *slog.Logger
}

// Index is a deposit index. It is safe for concurrent use.
type Index struct {
	cfg    Config
	source string
	start  uint64

	mu       sync.Mutex    // one Sync at a time in this process
	chunk    atomic.Uint64 // current eth_getLogs range (halved on refusal)
	lastLog  time.Time
	statsMu  sync.Mutex
	lastSync Stats
}

// Stats describe the index after a Sync.
type Stats struct {
	Cursor store.IndexCursor
	Head   uint64 // the chain's head at the sync
	Calls  int    // eth_getLogs calls the sync made
}

// New checks cfg and returns an Index. It does not contact the chain.
func New(cfg Config) (*Index, error) {
	if cfg.Chain == nil || cfg.Store == nil {
		return nil, errors.New("deposit index: chain client and store are required")
	}
	if cfg.ChainID == nil {
		return nil, errors.New("deposit index: the chain ID is required")
	}
	if cfg.Contract == (common.Address{}) {
		return nil, errors.New("deposit index: no deposit contract address")
	}
	if cfg.Chunk == 0 {
		cfg.Chunk = DefaultChunk
	}
	if cfg.Margin == 0 {
		cfg.Margin = DefaultMargin
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	start := StartBlock(cfg.ChainID)
	if cfg.Start != nil {
		start = *cfg.Start
	}
	ix := &Index{
		cfg:    cfg,
		source: fmt.Sprintf("%s/%s", cfg.ChainID, strings.ToLower(cfg.Contract.Hex())),
		start:  start,
	}
	ix.chunk.Store(cfg.Chunk)
	return ix, nil
}

// Source names the chain and contract the index reads.
func (ix *Index) Source() string { return ix.source }

// LastSync returns the figures of the last completed Sync.
func (ix *Index) LastSync() Stats {
	ix.statsMu.Lock()
	defer ix.statsMu.Unlock()
	return ix.lastSync
}

// Sync brings the stored index up to Margin blocks below the chain's head,
// from wherever its cursor is, and returns where it stands.
func (ix *Index) Sync(ctx context.Context) (Stats, error) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	head, err := ix.cfg.Chain.BlockNumber(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("deposit index: read the block number: %w", err)
	}
	st := Stats{Head: head}
	cur, err := ix.cfg.Store.DepositIndexCursor(ctx)
	if err != nil {
		return st, fmt.Errorf("deposit index: %w", err)
	}
	for {
		next, err := ix.step(ctx, cur, head, &st)
		if errors.Is(err, store.ErrCursorMoved) {
			// Another process moved it: continue from there.
			if next, err = ix.cfg.Store.DepositIndexCursor(ctx); err != nil {
				return st, fmt.Errorf("deposit index: %w", err)
			}
		} else if err != nil {
			return st, err
		}
		if next == cur {
			break
		}
		cur = next
	}
	st.Cursor = cur
	ix.statsMu.Lock()
	ix.lastSync = st
	ix.statsMu.Unlock()
	if ix.cfg.OnSync != nil {
		ix.cfg.OnSync(st)
	}
	return st, nil
}

// step makes one move of the cursor (a reset, a rewind or one chunk of
// blocks) and returns the new cursor; the cursor itself when it has nothing
// to do.
func (ix *Index) step(ctx context.Context, cur store.IndexCursor, head uint64, st *Stats) (store.IndexCursor, error) {
	if cur.Source != ix.source {
		to := store.IndexCursor{Source: ix.source, Next: ix.start}
		if cur.Source != "" {
			ix.cfg.Logger.Warn("deposit index: the stored index is of another chain or contract; reading this one from the start",
				slog.String("stored", cur.Source), slog.String("source", ix.source), slog.Uint64("from_block", ix.start))
		} else {
			ix.cfg.Logger.Info("deposit index: reading the deposit contract's events", slog.String("source", ix.source),
				slog.Uint64("from_block", ix.start), slog.Uint64("head", head))
		}
		return to, ix.move(ctx, cur, to, nil)
	}
	if cur.Hash != ([32]byte{}) && cur.Next > 0 {
		h, err := ix.header(ctx, cur.Next-1)
		if err != nil {
			return cur, err
		}
		if h.Hash() != cur.Hash {
			back := ix.start
			if span := 4 * ix.cfg.Margin; cur.Next > ix.start+span {
				back = cur.Next - span
			}
			to := store.IndexCursor{Source: ix.source, Next: back}
			if back > ix.start {
				bh, err := ix.header(ctx, back-1)
				if err != nil {
					return cur, err
				}
				to.Hash = bh.Hash()
			}
			ix.cfg.Logger.Warn("deposit index: the chain was reorganized below the index's cursor; reading again from an earlier block",
				slog.Uint64("cursor", cur.Next), slog.Uint64("from_block", back))
			return to, ix.move(ctx, cur, to, nil)
		}
	}
	if head < ix.cfg.Margin {
		return cur, nil
	}
	target := head - ix.cfg.Margin // last block to store
	if cur.Next > target {
		return cur, nil
	}
	end := min(target, cur.Next+ix.chunk.Load()-1)
	events, err := ix.events(ctx, cur.Next, end, st)
	if err != nil {
		return cur, err
	}
	h, err := ix.header(ctx, end)
	if err != nil {
		return cur, err
	}
	entries := make([]store.IndexEntry, len(events))
	for i, e := range events {
		entries[i] = store.IndexEntry{Key: store.IndexKey(e.Pubkey), Block: e.Block}
	}
	to := store.IndexCursor{Source: ix.source, Next: end + 1, Hash: h.Hash()}
	if err := ix.move(ctx, cur, to, entries); err != nil {
		return cur, err
	}
	if end < target && time.Since(ix.lastLog) > 10*time.Second {
		ix.lastLog = time.Now()
		ix.cfg.Logger.Info("deposit index: catching up", slog.Uint64("block", end), slog.Uint64("target", target))
	}
	return to, nil
}

func (ix *Index) move(ctx context.Context, from, to store.IndexCursor, entries []store.IndexEntry) error {
	if err := ix.cfg.Store.MoveDepositIndex(ctx, from, to, entries); err != nil {
		if errors.Is(err, store.ErrCursorMoved) {
			return err
		}
		return fmt.Errorf("deposit index: %w", err)
	}
	return nil
}

func (ix *Index) header(ctx context.Context, n uint64) (*types.Header, error) {
	h, err := ix.cfg.Chain.HeaderByNumber(ctx, new(big.Int).SetUint64(n))
	if err != nil {
		return nil, fmt.Errorf("deposit index: read block %d: %w", n, err)
	}
	return h, nil
}

// events reads the DepositEvents of blocks [from, to], halving the range of
// a call the node refuses.
func (ix *Index) events(ctx context.Context, from, to uint64, st *Stats) ([]depositcontract.Event, error) {
	var out []depositcontract.Event
	for start := from; start <= to; {
		end := min(to, start+ix.chunk.Load()-1)
		st.Calls++
		evs, err := depositcontract.Events(ctx, ix.cfg.Chain, ix.cfg.Contract, start, end, 0)
		if err != nil {
			if ctx.Err() != nil || end == start {
				return nil, fmt.Errorf("deposit index: %w", err)
			}
			n := max(1, (end-start+1)/2)
			ix.chunk.Store(n)
			ix.cfg.Logger.Debug("deposit index: the node refused a log range; asking for less",
				slog.Uint64("blocks", n), slog.Any("error", err))
			continue
		}
		out = append(out, evs...)
		if end == to {
			break
		}
		start = end + 1
	}
	return out, nil
}

// Find returns, for each of pubkeys that has a DepositEvent on chain up to the
// head, its first one (lowest deposit index). It syncs the stored index first.
func (ix *Index) Find(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]depositcontract.Event, error) {
	st, err := ix.Sync(ctx)
	if err != nil {
		return nil, err
	}
	want := make(map[store.Pubkey]bool, len(pubkeys))
	keys := make([]uint64, 0, len(pubkeys))
	for _, p := range pubkeys {
		if !want[p] {
			want[p] = true
			keys = append(keys, store.IndexKey(p))
		}
	}
	out := make(map[store.Pubkey]depositcontract.Event)
	if len(want) == 0 {
		return out, nil
	}
	found, err := ix.cfg.Store.LookupDepositIndex(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("deposit index: %w", err)
	}
	var blocks []uint64
	for _, bs := range found {
		blocks = append(blocks, bs...)
	}
	slices.Sort(blocks)
	blocks = slices.Compact(blocks)
	var events []depositcontract.Event
	for _, b := range blocks {
		evs, err := depositcontract.Events(ctx, ix.cfg.Chain, ix.cfg.Contract, b, b, 0)
		if err != nil {
			return nil, fmt.Errorf("deposit index: %w", err)
		}
		events = append(events, evs...)
	}
	// The blocks not in the stored index yet, read live.
	if st.Cursor.Next <= st.Head {
		tail, err := ix.events(ctx, st.Cursor.Next, st.Head, &Stats{})
		if err != nil {
			return nil, err
		}
		events = append(events, tail...)
	}
	for _, e := range events {
		p := store.Pubkey(e.Pubkey)
		if !want[p] {
			continue
		}
		if prev, ok := out[p]; !ok || e.Index < prev.Index {
			out[p] = e
		}
	}
	return out, nil
}

// Keep brings the stored index up to date every interval until ctx ends, so
// that the checks of Find read few blocks.
func (ix *Index) Keep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := ix.Sync(ctx); err != nil && ctx.Err() == nil {
			ix.cfg.Logger.Warn("deposit index: will retry", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
