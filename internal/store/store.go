// Package store defines pkmanager's persistent state: every validator key, the
// one state it is in, and which pod holds it. Backends (bbolt, PostgreSQL)
// implement Store and must pass the conformance suite in package storetest.
//
// The contract every backend keeps:
//   - each method that changes state is one atomic transaction: it happens
//     completely or not at all;
//   - a key is in exactly one state, and an assigned key has exactly one pod;
//   - secret keys arrive sealed (encrypted by the caller) and are stored as
//     given: a backend never sees a plaintext secret;
//   - times are kept to the microsecond: a backend stores every time truncated
//     to whole microseconds (t.Truncate(time.Microsecond)) and compares the
//     truncated values (so CoolingUntil <= Now is decided on microseconds).
//     Times come back without their location or monotonic reading; compare
//     them with time.Time.Equal. A zero Time in a record means "not set" and
//     comes back as the zero Time. Time arguments (Now, now, until) must be
//     non-zero and in the years 1 to 9999, else ErrInvalidArgument;
//   - invalid arguments fail with ErrInvalidArgument and change nothing; a
//     method called with a ctx that is already done fails with an error
//     wrapping ctx.Err() and changes nothing.
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
//	available | cooling-down | assigned -> still-signing -> cooling-down
//	available | cooling-down | still-signing | assigned (forced) -> exiting
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
	// StateDepositFailed: the key's deposit transaction reverted or was
	// rejected (Key.RetiredReason says why). Never handed out; an operator
	// decides what happens to it (retire it, or deposit it by hand and import).
	StateDepositFailed State = "deposit-failed"
	// StateStillSigning: the beacon node saw the key sign after it was
	// released (or while it was about to be handed out): some validator
	// client still runs it. Never handed out; Key.RetiredReason says what
	// was seen. It goes back to cooling-down (CoolDown) once it has been
	// quiet long enough.
	StateStillSigning State = "still-signing"
	// StateExiting: the server signed the key's voluntary exit (Exit;
	// Key.RetiredReason says who asked). Never handed out; retired once
	// the chain shows it exited (RecordValidators).
	StateExiting State = "exiting"
)

// States lists every state in lifecycle order.
var States = []State{StatePendingDeposit, StateAvailable, StateAssigned, StateCoolingDown, StateRetired, StateDepositFailed, StateStillSigning, StateExiting}

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

// DepositTx is the chain transaction that carries a key's deposit. It is
// recorded before the transaction is broadcast, so a restarted server can
// find, re-broadcast or check it instead of sending a second deposit.
type DepositTx struct {
	Nonce uint64
	Hash  [32]byte
	// Raw is the signed transaction (go-ethereum's binary encoding).
	Raw []byte
	// Block is the number of the block that included the transaction, set by
	// ConfirmDeposit; 0 while unconfirmed.
	Block uint64
	// RecordedAt is when the transaction was recorded (SetDepositTx's now).
	RecordedAt time.Time
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
	Pod string
	// PodUID is the UID of the holding pod when known. All keys assigned to
	// one pod carry the same PodUID; it is empty whenever Pod is.
	PodUID string
	// LastPod is the most recent pod that held the key: set when the key is
	// assigned (so it equals Pod while assigned) and kept after the key
	// leaves the pod, for audit and the assignments page.
	LastPod string

	// Since is when the key entered its current state.
	Since time.Time
	// CoolingUntil is set in StateCoolingDown: the key may not be reused
	// before it. Zero in every other state.
	CoolingUntil time.Time
	// ReleasedAt is the last time a pod released the key; zero if never
	// released. Available keys are recycled in ReleasedAt order, oldest first.
	ReleasedAt time.Time
	// RetiredReason is the reason given to Retire (StateRetired), to
	// FailDeposit (StateDepositFailed), to Quarantine
	// (StateStillSigning) or to Exit (StateExiting); empty in every other
	// state.
	RetiredReason string
	// CreatedAt is when the key was added (the now of the adding call).
	CreatedAt time.Time

	SealedSecret []byte       // AEAD ciphertext of the 32-byte secret key
	Deposit      *DepositData // nil in listings unless asked for
	// DepositTx is the key's deposit transaction, when the server sent one
	// (kept after confirmation); filled where Deposit is.
	DepositTx *DepositTx
	// Protection is the key's slashing-protection watermarks, as its
	// holders uploaded them with their releases; nil when none did. Filled
	// where Deposit is.
	Protection *Protection
}

// NewKey is a key to be added to the store. A valid NewKey (see Validate)
// has a non-empty SealedSecret, one of the defined Origins, and
// HasDerivationIndex set when Origin is OriginDerived.
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
	// AllOrNothing: when the pod cannot reach Want from its own keys and the
	// pool, change nothing and report the Shortfall (for servers that never
	// mint). Not allowed with ReserveToken.
	AllOrNothing bool
	// ReserveToken, when not empty, asks for a mint reservation of what the
	// pod still lacks after the claim (see "Mint reservations" at
	// Store.Claim). It is opaque to the store, chosen by the caller (unique
	// per request), at most MaxTokenLength bytes.
	ReserveToken string
	// ReserveUntil is when a reservation made or replaced by this call
	// expires; required with ReserveToken, after Now.
	ReserveUntil time.Time
	// StrictUID: keys the pod holds without a recorded UID are not
	// adopted by a non-empty PodUID (the holder may be an earlier pod of
	// that name): the call fails with ErrPodUIDMismatch (see PodUID).
	StrictUID bool
	// RequireActive: only pool keys whose stored validator reading is
	// ReadyForDuties (active.go) are taken, fresh and recycled keys alike
	// (a recycled key's validator may have been exited elsewhere since it
	// was last held). Pool keys that are Activating count as keys in
	// progress, like another caller's reservation: the call reserves only
	// what they do not cover, and reports them (Claim.Activating). The
	// pod's own keys that are not ready are reported (Claim.Inactive).
	RequireActive bool
	// UIDReason is the Reason of the AuditUIDAdopted event the call records
	// when it writes PodUID on keys the pod holds without one (default
	// DefaultUIDReason).
	UIDReason string
}

// MaxTokenLength bounds a reservation token.
const MaxTokenLength = 128

// Reservation is a pod's mint reservation: one caller's promise, recorded
// in the store, to mint Count keys for the pod. See Store.Claim.
type Reservation struct {
	Token string
	Count int
	// Until is when the reservation expires unless renewed: from then on
	// other callers may take over (see Store.Claim).
	Until time.Time
}

// Claim is the outcome of a Claim or AddAssigned: the pod's whole set after the
// transaction (with sealed secrets) and how many keys it still lacks.
type Claim struct {
	Keys []Key
	// Pending are the pending-deposit keys intended for the pod (without
	// SealedSecret and Deposit), in pubkey order: they join the pod when
	// their deposits are confirmed, so they count against the shortfall.
	Pending   []Key
	Shortfall int
	// Recycled counts keys this call moved from the pool into the pod.
	Recycled int
	// Taken are the keys this call moved from the pool into the pod
	// (Recycled of them), in pubkey order.
	Taken []Pubkey
	// Available is the number of claimable pool keys the call saw; set only
	// when Shortfall > 0 (then the pool is empty, or AllOrNothing held it back).
	Available int
	// Reservation is the pod's live mint reservation after the call: the
	// caller's own (Token = ClaimParams.ReserveToken) or another caller's;
	// nil when there is none. Its Count counts against the Shortfall, like
	// Pending.
	Reservation *Reservation
	// Activating (ClaimParams.RequireActive only) is the number of
	// claimable pool keys the call did not take because their validators
	// are not active yet (store.Activating), at most what the pod still
	// lacked after the keys it took; a reservation the call made leaves
	// them out. They count in Shortfall: the caller waits for them.
	Activating int
	// Inactive (ClaimParams.RequireActive only) are the pod's assigned
	// keys whose readings are not ReadyForDuties (minted for it and not
	// active yet, or exiting since), in pubkey order.
	Inactive []Pubkey
}

// AddParams adds freshly minted keys on behalf of a pod that asked for Want keys.
type AddParams struct {
	Pod    string
	PodUID string
	Want   int
	Keys   []NewKey
	Now    time.Time
	// ReserveToken, when not empty, names the pod's mint reservation these
	// keys fulfil (see Store.Claim): the call deletes it, in the same
	// transaction, and fails with ErrReservationLost when the pod has no
	// reservation under this token any more.
	ReserveToken string
	// StrictUID as in ClaimParams.
	StrictUID bool
	// AuditReason, when not empty, has the call record the keys in the
	// audit trail in its transaction (AuditMint; see AddParams.MintEvent).
	AuditReason string
}

// ListOptions filters ListKeys. Zero values select everything.
type ListOptions struct {
	States []State // any of these states; empty = all
	Pod    string  // only keys whose Pod is this name (assigned, or pending-deposit intended for it)
	// Pods, like Pod for several pods: only keys whose Pod is one of
	// these names, still in pubkey order (one read for many small pods,
	// e.g. the JSON of /assignments). Not with Pod; no name may be empty.
	Pods        []string
	WithDeposit bool // fill Key.Deposit and Key.DepositTx
	// After, when set, starts the walk after this public key (exclusive);
	// Limit > 0 ends it after that many keys. Together they read a
	// listing page by page (ListPages).
	After *Pubkey
	Limit int
}

// ReleaseParams releases a pod's keys.
type ReleaseParams struct {
	Pod    string
	PodUID string // when non-empty, the keys must be held under this UID
	// ExactUID: release only if the pod's keys are held under exactly
	// PodUID, also when it is empty (then only keys recorded without a
	// UID): a release decided for one holder never releases another's
	// (ErrPodUIDMismatch, changing nothing).
	ExactUID bool
	Until    time.Time
	Now      time.Time
	// Reason is recorded in the audit trail (e.g. "pod phase Succeeded",
	// "operator request").
	Reason string
	// Protection, when set, is the slashing-protection history the holder
	// uploaded with its release, by key: merged into each key's stored
	// watermarks (Protection.Merge) in the same transaction. Every key must
	// be one the pod holds (assigned), else the release fails with
	// ErrInvalidArgument and changes nothing.
	Protection map[Pubkey]Protection
}

// AuditEvent is one entry of the audit trail: a decision about keys and why.
type AuditEvent struct {
	// Seq orders the trail; assigned by the store (1, 2, ...), strictly
	// increasing in commit order.
	Seq  uint64
	Time time.Time
	// Action names the decision: "release", "retire", "deposit-failed", or a
	// caller's own (e.g. "release-blocked").
	Action string
	Pod    string
	PodUID string
	// Pubkeys are the keys the decision moved (may be empty).
	Pubkeys []Pubkey
	Reason  string
	// Actor is who decided (see WithActor and ActorFrom): "server" for the
	// server itself; empty only in events loaded from older backups.
	Actor string
}

// Snapshot is everything of a store besides its keys, for backups.
type Snapshot struct {
	Bindings  map[string]string
	NextIndex uint32 // next derivation index ReserveIndices would return
	Audit     []AuditEvent
}

// Store is pkmanager's persistent state. All methods are safe for concurrent
// use. Errors that callers act on are wrapped from the sentinels below.
type Store interface {
	// Claim gives a pod its keys, in one transaction. It takes the pod's
	// currently assigned keys; if it holds fewer than p.Want, it tops the pod
	// up from the pool until it holds p.Want keys or the pool is empty:
	//   - first from available keys, oldest ReleasedAt first (never-released
	//     keys after released ones; ties by CreatedAt, then by pubkey);
	//   - only when no available key is left, from cooling-down keys whose
	//     CoolingUntil <= p.Now, earliest CoolingUntil first (ties by pubkey).
	//     Expired cooling-down keys it does not take stay cooling-down until
	//     Sweep (or a later Claim) moves them.
	//
	// Keys it takes become assigned with Pod = LastPod = p.Pod and Since =
	// p.Now; pending-deposit, retired and deposit-failed keys are never
	// taken. Pending-deposit keys intended for the pod count as held: a pod
	// whose assigned plus intended pending keys reach p.Want gets its set
	// back and no key is taken. A pod that already holds >= p.Want keys gets
	// exactly its set back, even if larger.
	//
	// With p.AllOrNothing, when the pod's keys (with another caller's live
	// reservation, see below) plus the claimable pool (available keys and
	// cooling-down keys whose CoolingUntil <= p.Now) are fewer than p.Want,
	// it takes nothing and changes nothing (no UID adoption or fill-in
	// either).
	//
	// It never reports a Shortfall, or reserves keys to mint, while
	// claimable keys exist that it could take: keys that concurrent calls
	// hold (claims in progress, a sweep) are not counted out, the claim
	// waits for those calls to end, until ctx ends. Then it fails with an
	// error wrapping ctx.Err(); keys it took for the pod by then stay the
	// pod's.
	//
	// With p.RequireActive the pool is only the keys whose readings are
	// ReadyForDuties (for AllOrNothing and Available too); claimable keys
	// that are Activating are not taken but count, up to what the pod
	// lacks, as keys in progress: a reservation covers only the rest
	// (Claim.Activating, Claim.Inactive).
	//
	// Keys it takes from the pool are recorded in the audit trail in the
	// same transaction (AuditAssign; Pod and PodUID as given, the keys in
	// pubkey order, Reason AssignReason(p.Want), the actor of ctx): a
	// crash never leaves an assignment without its event. So is the pod
	// UID it writes on keys the pod held without one (an empty UID filled
	// in, see PodUID), before the assignment: UIDAdoptedEvent, with those
	// keys.
	//
	// It returns the pod's whole set in pubkey order with SealedSecret filled
	// (Deposit is not), the pending keys intended for it (Pending),
	// Shortfall = max(0, p.Want - len(Keys) - len(Pending) -
	// reserved count), Recycled = the number of keys taken by this call,
	// and, when Shortfall > 0, Available = the size of the claimable pool
	// after the call (0 unless AllOrNothing held it back).
	//
	// Mint reservations: so that duplicate requests of one pod, also on
	// different processes sharing the store, mint its shortfall once, the
	// store records who mints it. A pod has at most one reservation
	// (Reservation: token, count, expiry). It is live while p.Now < Until
	// (each call judges by its own Now), and expired otherwise.
	//   - A live reservation held under another token than p.ReserveToken
	//     counts as keys in progress, like pending keys: the claim tops the
	//     pod up only to p.Want minus its assigned, pending and reserved
	//     keys, takes no reservation of its own, and reports the
	//     reservation, so that its caller waits for the holder instead of
	//     minting.
	//   - Otherwise, with p.ReserveToken set, a pod that still lacks keys
	//     after the claim took what the pool offers gets the reservation
	//     (p.ReserveToken, Count = what it lacks, Until = p.ReserveUntil),
	//     replacing an expired one or the caller's own. Shortfall is then 0:
	//     the caller mints Count keys and adds them with AddPending or
	//     AddAssigned under the token, which deletes the reservation. A
	//     claim with p.ReserveToken that leaves the pod lacking nothing
	//     deletes an expired reservation or the caller's own.
	//   - An expired reservation holds nothing back and is not reported; a
	//     claim that takes keys or fills in a UID also deletes it. As long
	//     as no call has deleted or replaced it, its holder may still renew
	//     (RenewReservation), fulfil or release it: expiry only lets another
	//     caller take over (the holder crashed, or failed to renew).
	// Claim.Reservation is the pod's live reservation after the call (the
	// caller's new one included); its Count is the reserved count in
	// Shortfall.
	//
	// Pod UIDs (the rules are PodUID's, in podrules.go): when the pod's keys
	// are recorded under a non-empty PodUID other than a non-empty p.PodUID,
	// or (p.StrictUID) without a UID while p.PodUID is not empty, it fails
	// with ErrPodUIDMismatch and changes nothing. Otherwise a pod holding no
	// keys adopts p.PodUID, a recorded empty UID is filled in with a
	// non-empty p.PodUID (also when no key is taken), and keys it takes carry
	// the pod's UID; an empty p.PodUID never clears a recorded one. In
	// these rules "the pod's keys" are its assigned
	// keys, the pending-deposit keys intended for it, and its reservation
	// while live or held under the call's token (p.ReserveToken): they
	// always share one UID, and a fill-in rewrites all of them.
	//
	// p.Want 0 takes nothing and only applies the UID rules (a pod that
	// holds keys recorded without a UID adopts a non-empty p.PodUID): the
	// pod watcher records the UID of a holder it identified so.
	//
	// p.Pod must be non-empty and p.Want >= 0 (0 without ReserveToken or
	// AllOrNothing); p.ReserveToken at most MaxTokenLength bytes, with a
	// valid p.ReserveUntil after p.Now and without AllOrNothing
	// (ErrInvalidArgument).
	Claim(ctx context.Context, p ClaimParams) (Claim, error)

	// AddAssigned inserts minted keys in one transaction: the first
	// max(0, p.Want - held) of p.Keys, in the order given, are assigned to
	// the pod (as Claim assigns them); the rest go to the pool as available.
	// held counts the pod's assigned keys, the pending keys intended for it
	// and, without p.ReserveToken, its live reservation (as in Claim). With
	// p.ReserveToken the call fulfils the pod's reservation: it must be held
	// under that token (live or expired, as long as no call deleted or
	// replaced it), else the call fails with ErrReservationLost, and it is
	// deleted. It never takes keys from the pool (Recycled and Available
	// are 0). All new keys get CreatedAt = Since = p.Now. Returns the pod's
	// whole set, Pending, Reservation (another caller's live one, only
	// without p.ReserveToken) and Shortfall like Claim.
	// Fails, changing nothing, with ErrKeyExists if any pubkey is already
	// stored (in any state), with ErrPodUIDMismatch like Claim (and adopts
	// or fills in the pod UID like Claim, the token being p.ReserveToken),
	// and with ErrInvalidArgument when p.Pod is empty, p.Want < 1, p.Keys is
	// empty, holds a pubkey twice or an invalid NewKey, or p.ReserveToken is
	// longer than MaxTokenLength.
	AddAssigned(ctx context.Context, p AddParams) (Claim, error)

	// AddPending inserts minted keys as pending-deposit, in one transaction,
	// before their deposits are sent: the first max(0, p.Want - held) of
	// p.Keys (held as in AddAssigned), in the order given, are intended for
	// p.Pod (Pod = p.Pod, PodUID = the pod's UID, LastPod empty); the rest,
	// and all keys when p.Pod is empty, are spares with no pod (available
	// once deposited). CreatedAt = Since = p.Now. It adopts or fills in the
	// pod UID like Claim, and fulfils the pod's reservation with
	// p.ReserveToken like AddAssigned. Fails, changing nothing, like
	// AddAssigned (ErrKeyExists, ErrPodUIDMismatch, ErrReservationLost,
	// ErrInvalidArgument), except that p.Pod may be empty (then p.PodUID
	// and p.ReserveToken must be empty and p.Want is ignored).
	AddPending(ctx context.Context, p AddParams) error

	// RenewReservation sets the expiry of the pod's mint reservation held
	// under token to until (for a holder whose minting takes longer than
	// it reserved for). It fails with ErrReservationLost when the pod has
	// no reservation under token (fulfilled, released, deleted by Release,
	// or replaced after it expired). An empty pod or token, a token longer
	// than MaxTokenLength or an invalid until fail with
	// ErrInvalidArgument.
	RenewReservation(ctx context.Context, pod, token string, until time.Time) error

	// ReleaseReservation deletes the pod's mint reservation held under
	// token, for a holder that will not mint after all (minting failed, its
	// request ended): another caller may then reserve at once instead of
	// waiting for the expiry. Errors as RenewReservation.
	ReleaseReservation(ctx context.Context, pod, token string) error

	// SetDepositTx records the signed deposit transaction of a pending-deposit
	// key (replacing an earlier record, e.g. a re-signed transaction with the
	// same nonce), with RecordedAt = now and Block = 0 (tx.RecordedAt and
	// tx.Block are ignored; Raw is copied). ErrNotFound for an unknown key;
	// ErrWrongState when the key is not pending-deposit; an empty Raw is
	// ErrInvalidArgument.
	SetDepositTx(ctx context.Context, pubkey Pubkey, tx DepositTx, now time.Time) error

	// ConfirmDeposit ends a pending-deposit key's wait once its deposit is on
	// chain: DepositTx.Block = block (a DepositTx record is created when none
	// exists, for deposits found on chain without one: Nonce 0, zero Hash,
	// no Raw, RecordedAt = now), Since = now; the key becomes assigned to its
	// intended pod (LastPod = Pod, PodUID kept) or, without one, available.
	// It returns the key's new record with Deposit and DepositTx (without
	// SealedSecret). ErrNotFound; ErrWrongState when not pending-deposit;
	// block must be >= 1, as Block 0 means unconfirmed (ErrInvalidArgument).
	ConfirmDeposit(ctx context.Context, pubkey Pubkey, block uint64, now time.Time) (Key, error)

	// FailDeposit moves a pending-deposit key to deposit-failed:
	// RetiredReason = reason, LastPod = the intended pod (kept when it has
	// none), Pod and PodUID cleared, Since = now, DepositTx kept; and appends
	// an audit event "deposit-failed" (Time = now, Pod and PodUID = the
	// intended pod's, Pubkeys = the key, the reason, the actor of ctx).
	// ErrNotFound; ErrWrongState when not pending-deposit; an empty reason is
	// ErrInvalidArgument.
	FailDeposit(ctx context.Context, pubkey Pubkey, reason string, now time.Time) error

	// AddKeys inserts keys in state (StateAvailable or StatePendingDeposit), all
	// or none, with CreatedAt = Since = now. A key already stored fails the
	// whole call with ErrKeyExists. Another state, a pubkey given twice or an
	// invalid NewKey fail with ErrInvalidArgument. No keys is a no-op.
	AddKeys(ctx context.Context, keys []NewKey, state State, now time.Time) error

	// Release moves every key assigned to the pod to cooling-down, in one
	// transaction: CoolingUntil = p.Until, ReleasedAt = Since = p.Now,
	// LastPod = pod, Pod and PodUID cleared. Pending-deposit keys intended
	// for the pod become spares (Pod and PodUID cleared, LastPod = pod;
	// state and Since unchanged). It appends an audit event "release" (Time =
	// p.Now, Pod = p.Pod, PodUID = the UID the keys were held under, else
	// p.PodUID; Pubkeys = every key that left the pod, assigned and pending,
	// in pubkey order; p.Reason; the actor of ctx), also when nothing moved,
	// and returns how many keys went to cooling-down. A pod holding nothing
	// is not an error: it returns 0. It deletes the pod's mint reservation,
	// live or not: a holder that adds keys under its token afterwards gets
	// ErrReservationLost.
	// When p.PodUID is non-empty and the pod's keys (as in Claim, with its
	// reservation while live) are recorded under another non-empty UID, or
	// (p.ExactUID) under any other UID than p.PodUID, it fails with
	// ErrPodUIDMismatch and changes nothing. p.Pod must be
	// non-empty and p.Until must not be before p.Now (ErrInvalidArgument).
	Release(ctx context.Context, p ReleaseParams) (int, error)

	// Retire takes a key out of circulation in any state (also from a pod,
	// whose set then shrinks): RetiredReason = reason, Since = now, Pod,
	// PodUID and CoolingUntil cleared; LastPod and ReleasedAt are kept.
	// ErrNotFound if the pubkey is unknown; retiring a retired key changes
	// nothing (the first reason stays). A change appends an audit event
	// "retire" (Time = now, Pod and PodUID = the pod the key left, if any,
	// Pubkeys = the key, the reason, the actor of ctx).
	Retire(ctx context.Context, pubkey Pubkey, reason string, now time.Time) error

	// AppendAudit appends a caller's decision to the audit trail (Seq is
	// assigned, e.Seq ignored; Actor defaults to the actor of ctx; Time is
	// kept to the microsecond like every time; the rest, Pubkeys order
	// included, as given). Action must be non-empty and Time valid
	// (ErrInvalidArgument).
	AppendAudit(ctx context.Context, e AuditEvent) error

	// ListAudit returns up to limit audit events with Seq > after, oldest
	// first. limit must be >= 1 (ErrInvalidArgument).
	ListAudit(ctx context.Context, after uint64, limit int) ([]AuditEvent, error)

	// Sweep turns every cooling-down key whose CoolingUntil <= now into an
	// available key (Since = now, CoolingUntil cleared; ReleasedAt and
	// LastPod kept) and returns how many it moved.
	Sweep(ctx context.Context, now time.Time) (int, error)

	// GetKey returns one key with SealedSecret, Deposit and DepositTx filled,
	// or ErrNotFound.
	GetKey(ctx context.Context, pubkey Pubkey) (Key, error)

	// ListKeys calls fn for every key matching opts, in pubkey order.
	// SealedSecret is never filled; Deposit and DepositTx only with
	// opts.WithDeposit.
	// Returning an error from fn stops the walk and ListKeys returns it. fn
	// must not call other Store methods, and must not wait for anything
	// slow (a network client): the walk may hold a read transaction or a
	// connection meanwhile, and with bbolt a long read transaction stops
	// every write that grows the file. Use ListPages for that. An undefined
	// state in opts.States fails with ErrInvalidArgument.
	ListKeys(ctx context.Context, opts ListOptions, fn func(Key) error) error

	// Counts returns the number of keys in each state (every state present).
	Counts(ctx context.Context) (map[State]int, error)

	// PodSizes returns every pod that has keys under its name (Key.Pod:
	// assigned to it, or pending-deposit intended for it) with how many,
	// from one consistent read: the pods ListOptions.Pod lists. Pods
	// holding nothing are absent. It reads no key records, so a listing in
	// pod order (the JSON of /assignments) can start at once and read
	// each pod's keys in its own short read (ListPages).
	PodSizes(ctx context.Context) (map[string]int, error)

	// ReserveIndices atomically reserves count consecutive derivation indices
	// and returns the first; a new store starts at 0. Reserved indices are
	// never handed out again, even when the keys derived from them are never
	// added. count must be >= 1 (ErrInvalidArgument); a reservation that would
	// go past index 2^32-1 fails and reserves nothing.
	ReserveIndices(ctx context.Context, count int) (uint32, error)

	// Bind records value under name the first time it is called for name;
	// later calls with the same value succeed, with another value they fail
	// with ErrBindingMismatch. The server binds e.g. the KEK's fingerprint so a
	// store is never opened with the wrong key. name must be non-empty
	// (ErrInvalidArgument).
	Bind(ctx context.Context, name, value string) error

	// Dump calls fn for every key, in pubkey order, with every field filled
	// (SealedSecret, Deposit, DepositTx), and returns the rest of the store,
	// all from one consistent snapshot. For backups. Snapshot.Bindings is
	// never nil; Audit is the whole trail, oldest first. Returning an error
	// from fn stops the dump and Dump returns it; fn must not call other
	// Store methods. A store whose every derivation index is reserved
	// cannot be dumped (NextIndex cannot say 2^32): Dump fails.
	Dump(ctx context.Context, fn func(Key) error) (Snapshot, error)

	// Load fills an empty store (no keys, no bindings, no audit events,
	// next index 0; mint reservations do not count, are not part of a Dump
	// and are deleted) with a Dump's keys and snapshot, all or nothing, keeping
	// every field as given (states, pods, UIDs, times, audit Seq). A store
	// that is not empty fails with ErrNotEmpty; keys that break the store's
	// invariants (e.g. an assigned key without a pod, pods with different
	// UIDs, a duplicate pubkey; every rule ValidateLoad checks) fail with
	// ErrInvalidArgument, whether the store is empty or not. Both fail
	// changing nothing.
	Load(ctx context.Context, snap Snapshot, keys []Key) error

	// Quarantine takes keys that were seen signing although they should
	// not be (released keys, keys about to be handed out) out of
	// circulation: each of pubkeys that is available, cooling-down or
	// assigned becomes still-signing (RetiredReason = reason, Since = now,
	// Pod, PodUID and CoolingUntil cleared; LastPod and ReleasedAt kept),
	// in one transaction, with an audit event "still-signing" per pod the
	// keys left (and one for keys that had none): Pubkeys in pubkey order,
	// the reason, the actor of ctx. Keys in other states, and unknown
	// ones, are left alone. It returns how many keys it moved. An empty
	// reason is ErrInvalidArgument.
	Quarantine(ctx context.Context, pubkeys []Pubkey, reason string, now time.Time) (int, error)

	// CoolDown sets the CoolingUntil of each of pubkeys that is
	// cooling-down or still-signing to until (a still-signing key becomes
	// cooling-down again: RetiredReason cleared, Since = now, with an
	// audit event "quiet" listing those keys), in one transaction; keys
	// in other states are left alone. It returns how many keys it
	// changed. until must be valid (ErrInvalidArgument).
	CoolDown(ctx context.Context, pubkeys []Pubkey, until, now time.Time) (int, error)

	// Protections returns the stored slashing-protection watermarks of
	// each of pubkeys that has some.
	Protections(ctx context.Context, pubkeys []Pubkey) (map[Pubkey]Protection, error)

	// RecoverDeposit returns a deposit-failed key whose deposit was found
	// on chain (paid by hand, or by the server after all) to the pool: it
	// becomes available (Since = now, RetiredReason cleared; LastPod and
	// ReleasedAt kept), its DepositTx.Block = block (a record is created
	// when none exists, as ConfirmDeposit does), and an audit event
	// "deposit-recovered" is appended (Time = now, Pubkeys = the key,
	// reason, the actor of ctx). It returns the key's new record with
	// Deposit and DepositTx (without SealedSecret). ErrNotFound;
	// ErrWrongState when the key is not deposit-failed; block 0 or an
	// empty reason is ErrInvalidArgument.
	RecoverDeposit(ctx context.Context, pubkey Pubkey, block uint64, reason string, now time.Time) (Key, error)

	// Bindings returns every binding (see Bind) by name; never nil.
	Bindings(ctx context.Context) (map[string]string, error)

	// The deposit index (depositindex.go).
	DepositIndex

	// The chain's word about keys (lifecycle.go).
	Lifecycle

	// Ping checks that the store is usable (for readiness).
	Ping(ctx context.Context) error

	// Close releases the store. Other methods must not be called afterwards.
	Close() error
}

// Clock is implemented by a store whose backend keeps the time every replica
// must judge by (PostgreSQL: the database's clock). Callers that share the
// store pass its Now as the times of their calls (ClaimParams.Now and
// ReserveUntil, ReleaseParams.Now and Until, Sweep's now, ...), so that
// cooling-down and reservation expiry mean the same on every replica.
type Clock interface {
	Now() time.Time
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
	ErrWrongState        = errors.New("key is not in the state this operation needs")
	ErrNotEmpty          = errors.New("store is not empty")
	// ErrReservationLost: the pod has no mint reservation under the token
	// given (it was fulfilled, released, deleted by Release, or replaced
	// after it expired). Keys minted for it must not be added under it.
	ErrReservationLost = errors.New("mint reservation lost")
)

type actorKey struct{}

// WithActor returns a context whose store calls record actor (an
// authenticated caller, e.g. "user:alice" or "pod-watcher") in the audit trail.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorServer is the actor of decisions made without one in the context:
// the server's own (or, with auth off, an unauthenticated caller's).
const ActorServer = "server"

// ActorFrom returns the actor recorded in ctx by WithActor, or ActorServer.
// It is the one place an audit event's actor comes from: the auth gate puts
// the token subject in the context, components their names.
func ActorFrom(ctx context.Context) string {
	if a, _ := ctx.Value(actorKey{}).(string); a != "" {
		return a
	}
	return ActorServer
}
