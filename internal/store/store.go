// Package store defines pkmanager's persistent state: every validator key, the
// one state it is in, and which pod holds it. Backends (bbolt, PostgreSQL)
// implement Store and must pass the conformance suite in package storetest.
//
// The contract every backend keeps:
//   - each method that changes state is one atomic transaction: it happens
//     completely or not at all;
//   - a key is in exactly one state, and an assigned key has exactly one pod;
//   - secret keys arrive sealed (encrypted by the caller) and are stored as
//     given: a backend never sees a plaintext secret.
package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// PubkeyLength is the length of a compressed BLS12-381 G1 public key.
const PubkeyLength = 48

// Pubkey is a compressed BLS12-381 public key. It identifies a key record.
type Pubkey [PubkeyLength]byte

// String returns the key as 0x-prefixed lower-case hex.
func (p Pubkey) String() string { return "0x" + hex.EncodeToString(p[:]) }

// ParsePubkey reads a 48-byte public key written as hex, with or without 0x.
func ParsePubkey(s string) (Pubkey, error) {
	var p Pubkey
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil {
		return p, fmt.Errorf("public key %q is not hex: %w", s, err)
	}
	if len(b) != PubkeyLength {
		return p, fmt.Errorf("public key has %d bytes, want %d", len(b), PubkeyLength)
	}
	copy(p[:], b)
	return p, nil
}

// State is the one state a key is in.
type State string

// The key states. Transitions:
//
//	(minted) -> pending-deposit -> assigned | available
//	(minted/imported) -> assigned | available
//	available -> assigned -> cooling-down -> available
//	any -> retired (final)
const (
	// StatePendingDeposit: minted, deposit not confirmed yet; never handed out.
	StatePendingDeposit State = "pending-deposit"
	// StateAvailable: deposited and free; the next request may take it.
	StateAvailable State = "available"
	// StateAssigned: held by exactly one pod (Key.Pod).
	StateAssigned State = "assigned"
	// StateCoolingDown: released, not reusable before Key.CoolingUntil.
	StateCoolingDown State = "cooling-down"
	// StateRetired: out of circulation for good (Key.RetiredReason).
	StateRetired State = "retired"
)

// States lists every state in lifecycle order.
var States = []State{StatePendingDeposit, StateAvailable, StateAssigned, StateCoolingDown, StateRetired}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Origin says where a key came from.
type Origin string

// Key origins.
const (
	// OriginRandom: generated from random bytes by the server.
	OriginRandom Origin = "random"
	// OriginDerived: derived per EIP-2333/2334 from the server's mnemonic at
	// m/12381/3600/<DerivationIndex>/0/0.
	OriginDerived Origin = "derived"
	// OriginImported: added by an operator (keystore or mnemonic import).
	OriginImported Origin = "imported"
)

// DepositData is the signed deposit of a key, as the consensus spec defines it.
type DepositData struct {
	WithdrawalCredentials [32]byte
	AmountGwei            uint64
	Signature             [96]byte
	DepositMessageRoot    [32]byte
	DepositDataRoot       [32]byte
	ForkVersion           [4]byte
	NetworkName           string
}

// Key is one validator key's record. SealedSecret and Deposit are filled only
// where a method says so; listings leave them empty.
type Key struct {
	Pubkey Pubkey
	State  State
	Origin Origin
	// DerivationIndex is i in m/12381/3600/i/0/0 when Origin is OriginDerived
	// (and for imported keys whose path is known, with HasDerivationIndex).
	DerivationIndex    uint32
	HasDerivationIndex bool

	// Pod is the holder of an assigned key, or the pod a pending-deposit key
	// is intended for (may be empty). Empty in every other state.
	Pod    string
	PodUID string // UID of the holding pod when known
	// LastPod is the most recent pod that held the key (kept after release,
	// for audit and the assignments page).
	LastPod string

	// Since is when the key entered its current state.
	Since time.Time
	// CoolingUntil is set in StateCoolingDown: the key may not be reused before it.
	CoolingUntil time.Time
	// ReleasedAt is the last time a pod released the key; zero if never held.
	// Available keys are recycled in ReleasedAt order, oldest first.
	ReleasedAt    time.Time
	RetiredReason string
	CreatedAt     time.Time

	SealedSecret []byte       // AEAD ciphertext of the 32-byte secret key
	Deposit      *DepositData // nil in listings unless asked for
}

// NewKey is a key to be added to the store.
type NewKey struct {
	Pubkey             Pubkey
	SealedSecret       []byte
	Origin             Origin
	DerivationIndex    uint32
	HasDerivationIndex bool
	Deposit            *DepositData // nil for imported keys whose deposit was made elsewhere
}

// ClaimParams asks for a pod's keys, topped up from the pool.
type ClaimParams struct {
	Pod    string
	PodUID string // may be empty
	Want   int    // >= 1
	Now    time.Time
}

// Claim is the outcome of a Claim or AddAssigned: the pod's whole set after the
// transaction (with sealed secrets) and how many keys it still lacks.
type Claim struct {
	Keys      []Key
	Shortfall int
	// Recycled counts keys this call moved from the pool into the pod.
	Recycled int
}

// AddParams adds freshly minted keys on behalf of a pod that asked for Want keys.
type AddParams struct {
	Pod    string
	PodUID string
	Want   int
	Keys   []NewKey
	Now    time.Time
}

// ListOptions filters ListKeys. Zero values select everything.
type ListOptions struct {
	States      []State // any of these states; empty = all
	Pod         string  // only keys whose Pod is this name
	WithDeposit bool    // fill Key.Deposit
}

// Store is pkmanager's persistent state. All methods are safe for concurrent
// use. Errors that callers act on are wrapped from the sentinels below.
type Store interface {
	// Claim, in one transaction: takes the pod's current assigned keys; if it
	// holds fewer than Want, turns cooling-down keys whose CoolingUntil <= Now
	// into available keys as needed and assigns available keys to the pod,
	// oldest ReleasedAt first (never-released keys after released ones, then by
	// CreatedAt, then by pubkey), until it holds Want keys or the pool is
	// empty. A pod that already holds >= Want keys gets exactly its set back
	// and nothing changes. It returns the pod's whole set with SealedSecret
	// filled, and the shortfall. When the pod's keys are recorded under another
	// non-empty PodUID than a non-empty p.PodUID, it fails with ErrPodUIDMismatch
	// and changes nothing. A pod holding no keys adopts p.PodUID; an empty
	// recorded UID is filled in.
	Claim(ctx context.Context, p ClaimParams) (Claim, error)

	// AddAssigned inserts minted keys in one transaction: as many as the pod
	// still lacks (Want minus its current set) are assigned to it, the rest go
	// to the pool as available. Returns the pod's whole set like Claim. Fails
	// with ErrKeyExists (changing nothing) if any pubkey is already stored, and
	// with ErrPodUIDMismatch like Claim.
	AddAssigned(ctx context.Context, p AddParams) (Claim, error)

	// AddKeys inserts keys in state (StateAvailable or StatePendingDeposit), all
	// or none. A key already stored fails the whole call with ErrKeyExists.
	AddKeys(ctx context.Context, keys []NewKey, state State, now time.Time) error

	// Release moves every key the pod holds to cooling-down until `until`,
	// sets ReleasedAt and LastPod, and returns how many keys it moved. A pod
	// holding nothing is not an error: it returns 0. When podUID is non-empty
	// and the pod's keys are recorded under another non-empty UID it fails with
	// ErrPodUIDMismatch and changes nothing.
	Release(ctx context.Context, pod, podUID string, until, now time.Time) (int, error)

	// Retire takes a key out of circulation in any state (also from a pod).
	// ErrNotFound if the pubkey is unknown; retiring a retired key changes nothing.
	Retire(ctx context.Context, pubkey Pubkey, reason string, now time.Time) error

	// Sweep turns every cooling-down key whose CoolingUntil <= now into an
	// available key and returns how many it moved.
	Sweep(ctx context.Context, now time.Time) (int, error)

	// GetKey returns one key with SealedSecret and Deposit filled, or ErrNotFound.
	GetKey(ctx context.Context, pubkey Pubkey) (Key, error)

	// ListKeys calls fn for every key matching opts, in pubkey order.
	// SealedSecret is never filled; Deposit only with opts.WithDeposit.
	// Returning an error from fn stops the walk and ListKeys returns it. fn
	// must not call other Store methods.
	ListKeys(ctx context.Context, opts ListOptions, fn func(Key) error) error

	// Counts returns the number of keys in each state (every state present).
	Counts(ctx context.Context) (map[State]int, error)

	// ReserveIndices atomically reserves count consecutive derivation indices
	// and returns the first. Reserved indices are never handed out again, even
	// when the keys derived from them are never added.
	ReserveIndices(ctx context.Context, count int) (uint32, error)

	// Bind records value under name the first time it is called for name;
	// later calls with the same value succeed, with another value they fail
	// with ErrBindingMismatch. The server binds e.g. the KEK's fingerprint so a
	// store is never opened with the wrong key.
	Bind(ctx context.Context, name, value string) error

	// Ping checks that the store is usable (for readiness).
	Ping(ctx context.Context) error

	// Close releases the store. Other methods must not be called afterwards.
	Close() error
}

// Sentinel errors. Backends wrap them with context; callers test with errors.Is.
var (
	ErrNotFound          = errors.New("not found")
	ErrKeyExists         = errors.New("key already exists")
	ErrPodUIDMismatch    = errors.New("pod's keys are held under another pod UID")
	ErrBindingMismatch   = errors.New("store is bound to another value")
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrUnsupportedSchema = errors.New("unsupported store schema version")
	ErrLocked            = errors.New("store is locked by another process")
)
