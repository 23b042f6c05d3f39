package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// The deposit index is the store's copy of where the deposit contract's
// DepositEvents are: for each public key seen in one, the blocks that hold
// it. Package depositindex keeps it up to date and answers "does this key
// already have a deposit on chain?" from it with a lookup, not a scan of the
// chain's history. It is a copy of chain data: never part of a Dump, left
// alone by Load, and rebuilt from the chain when lost or when it was made
// from another chain.

// IndexCursor says how far the deposit index reaches.
type IndexCursor struct {
	// Source names the chain and contract the entries come from; "" for
	// an empty index.
	Source string
	// Next is the first block not indexed yet: every DepositEvent of
	// Source in a block before Next has its entry.
	Next uint64
	// Hash is the hash of block Next-1 when known (zero otherwise), so that
	// a reorganization below the cursor is noticed.
	Hash [32]byte
}

// IndexEntry says that Block holds a DepositEvent for a public key whose
// IndexKey is Key.
type IndexEntry struct {
	Key   uint64
	Block uint64
}

// IndexKey is the deposit index's key of a public key: the first 8 bytes
// of its SHA-256, big-endian. Different public keys may share a key; a
// lookup finds candidate blocks, and their logs say which keys they hold.
func IndexKey(p Pubkey) uint64 {
	h := sha256.Sum256(p[:])
	return binary.BigEndian.Uint64(h[:8])
}

// ErrCursorMoved: the deposit index's cursor is not where the caller last
// read it (another process moved it); nothing was changed.
var ErrCursorMoved = errors.New("deposit index cursor moved")

// DepositIndex is the part of Store that keeps the deposit index.
type DepositIndex interface {
	// DepositIndexCursor returns the index's cursor (the zero IndexCursor
	// for an empty index).
	DepositIndexCursor(ctx context.Context) (IndexCursor, error)

	// MoveDepositIndex moves the cursor from from to to in one
	// transaction, only if it is still from (else ErrCursorMoved, changing
	// nothing). When to.Source differs from from.Source every entry is
	// deleted first; otherwise entries of blocks at or after to.Next are
	// (nothing, when to.Next is not before from.Next; a rewind otherwise).
	// Then entries are added; an entry already present is kept once.
	// to.Source must be non-empty and every entry's Block before to.Next
	// (ErrInvalidArgument).
	MoveDepositIndex(ctx context.Context, from, to IndexCursor, entries []IndexEntry) error

	// LookupDepositIndex returns, for each of keys that has entries, the
	// blocks holding them in ascending order; keys without entries are
	// absent from the map.
	LookupDepositIndex(ctx context.Context, keys []uint64) (map[uint64][]uint64, error)
}

// ValidateMoveDepositIndex checks the arguments of MoveDepositIndex.
func ValidateMoveDepositIndex(to IndexCursor, entries []IndexEntry) error {
	if to.Source == "" {
		return fmt.Errorf("move deposit index: no source: %w", ErrInvalidArgument)
	}
	for _, e := range entries {
		if e.Block >= to.Next {
			return fmt.Errorf("move deposit index: entry of block %d is not before the new cursor %d: %w", e.Block, to.Next, ErrInvalidArgument)
		}
	}
	return nil
}
