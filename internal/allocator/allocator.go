// Package allocator holds the rules of pkmanager: which keys a pod gets when it
// asks, when released keys may be reused, and how new keys are added.
//
// Request(pod, n) returns, in this order of preference: the keys the pod
// already holds, keys recycled from the pool (longest-released first), and
// newly minted keys for the shortfall only. Every allocation is committed to the
// store before it is returned. Requests for one pod are serialized (duplicates
// and retries get one set); requests for different pods only meet inside short
// store transactions, never behind another pod's minting.
package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Defaults.
const (
	// DefaultReuseDelay is how long released keys cool down before reuse:
	// two epochs (2 x 32 slots x 12 s), so a key's last attestations from a
	// dying pod are old enough before another pod signs with it.
	DefaultReuseDelay = 768 * time.Second
	// DefaultMaxKeysPerRequest bounds n in one request.
	DefaultMaxKeysPerRequest = 1024
)

// Errors callers map to API statuses. Returned errors wrap them.
var (
	// ErrInvalidRequest: bad input; nothing was changed.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrPoolExhausted: the pool cannot satisfy the request and minting is
	// off; nothing was assigned.
	ErrPoolExhausted = errors.New("pool exhausted")
	// ErrPodUIDMismatch: the pod name's keys are held by another pod UID.
	ErrPodUIDMismatch = store.ErrPodUIDMismatch
)

// Store is what the allocator needs from the persistent store.
type Store interface {
	Claim(ctx context.Context, p store.ClaimParams) (store.Claim, error)
	AddAssigned(ctx context.Context, p store.AddParams) (store.Claim, error)
	Release(ctx context.Context, p store.ReleaseParams) (int, error)
	Retire(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error
	Sweep(ctx context.Context, now time.Time) (int, error)
}

// Minter makes n new keys with sealed secrets and deposit data.
type Minter interface {
	Mint(ctx context.Context, n int) ([]store.NewKey, error)
}

// Opener decrypts sealed secrets (a *seal.KEK).
type Opener interface {
	Open(sealed, pubkey []byte) ([]byte, error)
}

// PodLocker serializes the work of one pod across processes (replicas on one
// PostgreSQL). Within a process the allocator always serializes a pod's
// requests itself.
type PodLocker interface {
	Lock(ctx context.Context, pod string) (unlock func(), err error)
}

// Observer receives allocation events, e.g. for metrics. Methods must be cheap.
type Observer interface {
	KeysRecycled(n int)
	KeysMinted(n int)
	KeysReleased(n int)
}

// Config configures an Allocator. Store and Opener are required.
type Config struct {
	Store  Store
	Opener Opener
	// Minter makes keys for a shortfall. Nil means the server never mints: a
	// request the pool cannot satisfy fails with ErrPoolExhausted.
	Minter            Minter
	ReuseDelay        time.Duration // 0 is allowed: released keys are reusable at once
	MaxKeysPerRequest int           // 0 means DefaultMaxKeysPerRequest
	// Locker is the cross-replica pod lock, held for a whole request or
	// release so that duplicate requests of one pod on different replicas
	// mint its shortfall once (the store's transactions alone already keep a
	// key in one pod). Nil: one process, in-process locks suffice.
	Locker PodLocker

	Observer Observer // optional
	Now      func() time.Time
	Logger   *slog.Logger
	// Depositor, with a Minter, makes deposits on chain: minted keys are
	// recorded as pending-deposit and handed out once their deposits are
	// confirmed (deposits.go). Nil: minted keys are assigned at once and
	// their deposit data is exported for an operator. The Store must then
	// also be a PendingStore.
	Depositor Depositor
}

// Allocator applies the allocation rules. It is safe for concurrent use.
type Allocator struct {
	cfg   Config
	local *localLocks // a pod's requests and releases within this process
}

// New checks cfg and returns an Allocator.
func New(cfg Config) (*Allocator, error) {
	if cfg.Store == nil || cfg.Opener == nil {
		return nil, errors.New("allocator: store and opener are required")
	}
	if cfg.ReuseDelay < 0 {
		return nil, fmt.Errorf("allocator: negative reuse delay %s", cfg.ReuseDelay)
	}
	if cfg.MaxKeysPerRequest == 0 {
		cfg.MaxKeysPerRequest = DefaultMaxKeysPerRequest
	}
	if cfg.MaxKeysPerRequest < 1 {
		return nil, fmt.Errorf("allocator: max keys per request must be at least 1, got %d", cfg.MaxKeysPerRequest)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Depositor != nil {
		if cfg.Minter == nil {
			return nil, errors.New("allocator: a depositor needs a minter")
		}
		if _, ok := cfg.Store.(PendingStore); !ok {
			return nil, errors.New("allocator: on-chain deposits need a store that holds pending deposits")
		}
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Allocator{cfg: cfg, local: newLocalLocks()}, nil
}

// ReuseDelay returns the configured cooling-down period.
func (a *Allocator) ReuseDelay() time.Duration { return a.cfg.ReuseDelay }

// Key is a key handed to a pod, with its plaintext secret.
type Key struct {
	Pubkey             store.Pubkey
	Secret             []byte // 32-byte big-endian BLS secret key
	Origin             store.Origin
	DerivationIndex    uint32
	HasDerivationIndex bool
}

// Result is the answer to a Request: the pod's whole set.
type Result struct {
	Keys     []Key
	Recycled int // keys this request took from the pool
	Minted   int // keys this request minted
}

// ValidatePodName checks that pod is a Kubernetes pod name (DNS-1123 subdomain).
func ValidatePodName(pod string) error {
	if pod == "" {
		return fmt.Errorf("%w: pod name is empty", ErrInvalidRequest)
	}
	if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
		return fmt.Errorf("%w: pod name %q is not a valid Kubernetes name: %s", ErrInvalidRequest, truncate(pod, 80), strings.Join(errs, "; "))
	}
	return nil
}

// Request returns the pod's keys, at least n of them (n = 0 means 1).
func (a *Allocator) Request(ctx context.Context, pod, podUID string, n int) (Result, error) {
	if err := ValidatePodName(pod); err != nil {
		return Result{}, err
	}
	if n == 0 {
		n = 1
	}
	if n < 0 || n > a.cfg.MaxKeysPerRequest {
		return Result{}, fmt.Errorf("%w: %d keys requested, allowed 1 to %d", ErrInvalidRequest, n, a.cfg.MaxKeysPerRequest)
	}
	unlock, err := a.local.Lock(ctx, pod)
	if err != nil {
		return Result{}, fmt.Errorf("wait for pod %s: %w", pod, err)
	}
	defer unlock()
	// The cross-replica lock is held from the first look at the pod to the
	// answer. Taking it only once a shortfall shows up is not enough: another
	// replica could then fill the pod from the pool while this one mints, and
	// the minted keys (deposited, 32 ETH each) would be spares nobody asked for.
	if a.cfg.Locker != nil {
		sharedUnlock, err := a.cfg.Locker.Lock(ctx, pod)
		if err != nil {
			return Result{}, fmt.Errorf("wait for pod %s: %w", pod, err)
		}
		defer sharedUnlock()
	}

	claim, err := a.cfg.Store.Claim(ctx, store.ClaimParams{
		Pod: pod, PodUID: podUID, Want: n, Now: a.cfg.Now(), AllOrNothing: a.cfg.Minter == nil,
	})
	if err != nil {
		return Result{}, fmt.Errorf("claim keys for pod %s: %w", pod, err)
	}
	recycled := claim.Recycled
	if recycled > 0 {
		a.cfg.Observer.KeysRecycled(recycled)
	}
	if a.cfg.Depositor != nil && a.cfg.Minter != nil && (claim.Shortfall > 0 || len(claim.Pending) > 0) {
		return a.requestOnChain(ctx, pod, podUID, n, claim)
	}
	minted := 0
	if claim.Shortfall > 0 {
		if a.cfg.Minter == nil {
			held := ""
			if h := n - claim.Shortfall; h > 0 {
				held = fmt.Sprintf(" (pod %s holds %d)", pod, h)
			}
			return Result{}, fmt.Errorf("%w: %d available, %d requested%s", ErrPoolExhausted, claim.Available, n, held)
		}
		newKeys, err := a.cfg.Minter.Mint(ctx, claim.Shortfall)
		if err != nil {
			return Result{}, fmt.Errorf("mint %d keys for pod %s: %w", claim.Shortfall, pod, err)
		}
		claim, err = a.cfg.Store.AddAssigned(ctx, store.AddParams{
			Pod: pod, PodUID: podUID, Want: n, Keys: newKeys, Now: a.cfg.Now(),
		})
		if err != nil {
			return Result{}, fmt.Errorf("store %d minted keys for pod %s: %w", len(newKeys), pod, err)
		}
		minted = len(newKeys)
		a.cfg.Observer.KeysMinted(minted)
	}
	keys, err := a.open(claim.Keys)
	if err != nil {
		return Result{}, err
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "keys requested",
		slog.String("pod", pod), slog.Int("requested", n), slog.Int("held", len(keys)),
		slog.Int("recycled", recycled), slog.Int("minted", minted))
	return Result{Keys: keys, Recycled: recycled, Minted: minted}, nil
}

func (a *Allocator) open(held []store.Key) ([]Key, error) {
	out := make([]Key, len(held))
	for i, k := range held {
		secret, err := a.cfg.Opener.Open(k.SealedSecret, k.Pubkey[:])
		if err != nil {
			return nil, fmt.Errorf("open secret of key %s: %w", k.Pubkey, err)
		}
		out[i] = Key{
			Pubkey: k.Pubkey, Secret: secret, Origin: k.Origin,
			DerivationIndex: k.DerivationIndex, HasDerivationIndex: k.HasDerivationIndex,
		}
	}
	return out, nil
}

// ReleaseResult says what a Release did.
type ReleaseResult struct {
	Released     int
	CoolingUntil time.Time // zero when nothing was released
}

// Release returns all keys of the pod to the pool after the reuse delay, on a
// caller's request. A pod holding nothing is not an error (Released is 0). A
// non-empty podUID must match the UID the keys are held under.
func (a *Allocator) Release(ctx context.Context, pod, podUID string) (ReleaseResult, error) {
	return a.ReleaseWithReason(ctx, pod, podUID, "release requested through the API")
}

// ReleaseWithReason is Release with the reason recorded in the audit trail.
func (a *Allocator) ReleaseWithReason(ctx context.Context, pod, podUID, reason string) (ReleaseResult, error) {
	if err := ValidatePodName(pod); err != nil {
		return ReleaseResult{}, err
	}
	unlock, err := a.local.Lock(ctx, pod)
	if err != nil {
		return ReleaseResult{}, fmt.Errorf("wait for pod %s: %w", pod, err)
	}
	defer unlock()
	if a.cfg.Locker != nil {
		sharedUnlock, err := a.cfg.Locker.Lock(ctx, pod)
		if err != nil {
			return ReleaseResult{}, fmt.Errorf("wait for pod %s: %w", pod, err)
		}
		defer sharedUnlock()
	}
	now := a.cfg.Now()
	until := now.Add(a.cfg.ReuseDelay)
	n, err := a.cfg.Store.Release(ctx, store.ReleaseParams{Pod: pod, PodUID: podUID, Until: until, Now: now, Reason: reason})
	if err != nil {
		return ReleaseResult{}, fmt.Errorf("release pod %s: %w", pod, err)
	}
	if n == 0 {
		a.cfg.Logger.InfoContext(ctx, "release of a pod that holds no keys", slog.String("pod", pod))
		return ReleaseResult{}, nil
	}
	a.cfg.Observer.KeysReleased(n)
	a.cfg.Logger.InfoContext(ctx, "keys released", slog.String("pod", pod), slog.Int("keys", n),
		slog.Time("reusable_from", until))
	return ReleaseResult{Released: n, CoolingUntil: until}, nil
}

// Retire takes a key out of circulation for good.
func (a *Allocator) Retire(ctx context.Context, pubkey store.Pubkey, reason string) error {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return fmt.Errorf("%w: a reason is required to retire a key", ErrInvalidRequest)
	}
	if len(reason) > 512 {
		return fmt.Errorf("%w: reason longer than 512 bytes", ErrInvalidRequest)
	}
	if err := a.cfg.Store.Retire(ctx, pubkey, reason, a.cfg.Now()); err != nil {
		return fmt.Errorf("retire key %s: %w", pubkey, err)
	}
	a.cfg.Logger.InfoContext(ctx, "key retired", slog.String("pubkey", pubkey.String()), slog.String("reason", reason))
	return nil
}

// RunSweeper moves cooled-down keys to available every interval until ctx ends,
// so states and metrics stay current between requests.
func (a *Allocator) RunSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := a.cfg.Store.Sweep(ctx, a.cfg.Now())
			if err != nil {
				if ctx.Err() == nil {
					a.cfg.Logger.WarnContext(ctx, "sweep cooled-down keys", slog.Any("error", err))
				}
				continue
			}
			if n > 0 {
				a.cfg.Logger.InfoContext(ctx, "cooled-down keys available again", slog.Int("keys", n))
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

type nopObserver struct{}

func (nopObserver) KeysRecycled(int) {}
func (nopObserver) KeysMinted(int)   {}
func (nopObserver) KeysReleased(int) {}
