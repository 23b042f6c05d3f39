// Package allocator holds the rules of pkmanager: which keys a pod gets when it
// asks, when released keys may be reused, and how new keys are added.
//
// Request(pod, n) returns, in this order of preference: the keys the pod
// already holds, keys recycled from the pool (longest-released first), and
// newly minted keys for the shortfall only. Every allocation is committed to the
// store before it is returned. Requests for one pod are serialized within a
// process (duplicates and retries get one set); across processes sharing a
// store (replicas on PostgreSQL), duplicates meet in the store, whose mint
// reservations let exactly one of them mint the pod's shortfall while the
// others wait for its keys. Requests for different pods only meet inside
// short store transactions, never behind another pod's minting. No lock is
// held across processes.
package allocator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/pkmanager/pkmanager/internal/reusegate"
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
	// DefaultReservationLease is how long a mint reservation lasts unless
	// its holder renews it (every third of the lease while it mints): the
	// longest that duplicates of a pod wait for a holder that died before
	// another request takes over. Replica clocks must agree to well within
	// it.
	DefaultReservationLease = 10 * time.Second
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
	// ErrChainUnavailable: the beacon node could not be asked whether
	// recycled keys still sign; nothing was handed out.
	ErrChainUnavailable = errors.New("chain evidence unavailable")
)

// Store is what the allocator needs from the persistent store.
type Store interface {
	Claim(ctx context.Context, p store.ClaimParams) (store.Claim, error)
	AddAssigned(ctx context.Context, p store.AddParams) (store.Claim, error)
	RenewReservation(ctx context.Context, pod, token string, until time.Time) error
	ReleaseReservation(ctx context.Context, pod, token string) error
	Release(ctx context.Context, p store.ReleaseParams) (int, error)
	Retire(ctx context.Context, pubkey store.Pubkey, reason string, now time.Time) error
	Sweep(ctx context.Context, now time.Time) (int, error)
	AppendAudit(ctx context.Context, e store.AuditEvent) error
	Quarantine(ctx context.Context, pubkeys []store.Pubkey, reason string, now time.Time) (int, error)
	CoolDown(ctx context.Context, pubkeys []store.Pubkey, until, now time.Time) (int, error)
}

// Gate is the reuse gate (*reusegate.Gate): released keys are held until
// the beacon node has shown them quiet, and recycled keys are vetted right
// before they are handed out.
type Gate interface {
	// Vet returns the keys of pubkeys the beacon node saw signing in the
	// current or the previous epoch; an error when it cannot tell.
	Vet(ctx context.Context, pubkeys []store.Pubkey) ([]store.Pubkey, error)
	// Quarantined counts keys the allocator quarantined after Vet.
	Quarantined(n int)
}

// Minter makes n new keys with sealed secrets and deposit data.
type Minter interface {
	Mint(ctx context.Context, n int) ([]store.NewKey, error)
}

// Opener decrypts sealed secrets (a *seal.KEK).
type Opener interface {
	Open(sealed, pubkey []byte) ([]byte, error)
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
	// ReservationLease is the lifetime of a mint reservation; 0 means
	// DefaultReservationLease, else at least 10 ms.
	ReservationLease time.Duration
	// Gate, when set, makes reuse wait for the chain: released keys are held
	// (their cooling-down end is reusegate.HoldUntil, the gate clears them)
	// and recycled keys are vetted before they are handed out.
	Gate Gate
	// StrictUID: a request with a pod UID never adopts keys its pod name
	// holds without a recorded UID (store.ClaimParams.StrictUID): they may
	// be an earlier pod's, and the pod watcher decides. Servers set it while
	// the watcher or token authentication is on.
	StrictUID bool
	// RequireActive: only keys the beacon node reports active are handed
	// out (store.ClaimParams.RequireActive); requests wait for activation,
	// bounded by their ctx (active.go). The store's validator readings
	// must be kept current (the lifecycle watcher).
	RequireActive bool
	// ActivationPoll is how often a request waiting for activation claims
	// again; 0 means DefaultActivationPoll.
	ActivationPoll time.Duration

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
	if cfg.ReservationLease == 0 {
		cfg.ReservationLease = DefaultReservationLease
	}
	if cfg.ReservationLease < minReservationLease {
		return nil, fmt.Errorf("allocator: reservation lease %s is shorter than %s", cfg.ReservationLease, minReservationLease)
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
	// ReleasedAt is when a pod last released the key (store.Key.
	// ReleasedAt); zero if it never had a holder before. Its
	// slashing-protection history starts there (package slashing).
	ReleasedAt time.Time
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

// ValidatePodUID checks that uid is empty (none given) or a Kubernetes pod
// UID as the API server writes it (metadata.uid, the downward API's value):
// an RFC 4122 UUID in its canonical text form, 36 characters, lower-case
// hex digits in groups of 8-4-4-4-12. No version is required (clusters of
// older Kubernetes versions wrote version-1 UUIDs). Every call that takes a
// pod UID checks it here, before anything changes, whatever API it came
// through.
func ValidatePodUID(uid string) error {
	if uid == "" {
		return nil
	}
	ok := len(uid) == 36
	for i := 0; ok && i < len(uid); i++ {
		c := uid[i]
		switch i {
		case 8, 13, 18, 23:
			ok = c == '-'
		default:
			ok = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
		}
	}
	if !ok {
		return fmt.Errorf("%w: pod UID %q (%d bytes) is not a Kubernetes pod UID: want the pod's metadata.uid, a lower-case UUID like 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, or none",
			ErrInvalidRequest, truncate(uid, 40), len(uid))
	}
	return nil
}

// validatePod checks a pod name and UID (see ValidatePodName and
// ValidatePodUID).
func validatePod(pod, uid string) error {
	if err := ValidatePodName(pod); err != nil {
		return err
	}
	return ValidatePodUID(uid)
}

// Request returns the pod's keys, at least n of them (n = 0 means 1).
func (a *Allocator) Request(ctx context.Context, pod, podUID string, n int) (Result, error) {
	if err := validatePod(pod, podUID); err != nil {
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
	// Duplicates of this request on other replicas are not locked out: they
	// meet in the store, where a claim reserves the pod's shortfall for the
	// one request that mints it (see claim).
	token := ""
	if a.cfg.Minter != nil {
		token = rand.Text()
	}
	if a.cfg.Depositor != nil && a.cfg.Minter != nil {
		return a.requestOnChain(ctx, pod, podUID, n, token)
	}
	recycled, minted := 0, 0
	for round := 0; ; round++ {
		claim, r, err := a.claimActive(ctx, pod, podUID, n, token)
		if err != nil {
			return Result{}, err
		}
		recycled += r
		res := claim.Reservation // nil, or this request's own
		if res == nil {
			if claim.Shortfall > 0 { // only without a minter: with one, the claim reserves the shortfall
				held := ""
				if h := n - claim.Shortfall; h > 0 {
					held = fmt.Sprintf(" (pod %s holds %d)", pod, h)
				}
				return Result{}, fmt.Errorf("%w: %d available, %d requested%s", ErrPoolExhausted, claim.Available, n, held)
			}
			return a.answer(ctx, pod, n, claim.Keys, recycled, minted, false)
		}
		if round == maxRounds {
			a.releaseReservation(ctx, pod, token)
			return Result{}, fmt.Errorf("pod %s: its mint reservation was lost %d times; try again", pod, round)
		}
		newKeys, err := a.mintReserved(ctx, pod, token, res.Count, nil)
		if err != nil {
			return Result{}, err
		}
		claim, err = a.cfg.Store.AddAssigned(ctx, store.AddParams{
			Pod: pod, PodUID: podUID, Want: n, Keys: newKeys, Now: a.cfg.Now(), ReserveToken: token, StrictUID: a.cfg.StrictUID,
			AuditReason: fmt.Sprintf("minted for a request of %d keys; assigned (deposit data exported, not sent)", n),
		})
		if errors.Is(err, store.ErrReservationLost) {
			a.reservationLost(ctx, pod, len(newKeys))
			continue
		}
		if err != nil {
			a.releaseReservation(ctx, pod, token)
			return Result{}, fmt.Errorf("store %d minted keys for pod %s: %w", len(newKeys), pod, err)
		}
		minted += len(newKeys)
		a.cfg.Observer.KeysMinted(len(newKeys))
		return a.answer(ctx, pod, n, claim.Keys, recycled, minted, false)
	}
}

// maxRounds bounds claim -> mint -> add rounds of one request: a round
// repeats only when the request lost its mint reservation before it stored
// the keys (the pod was released meanwhile, or the reservation expired and
// another request took over), or when keys it waited for went elsewhere.
const maxRounds = 3

// Polling of a pod whose shortfall another request mints.
const (
	reservationPollMin = 5 * time.Millisecond
	reservationPollMax = 200 * time.Millisecond
	// minReservationLease keeps the renewal period (a third of the lease)
	// sensible.
	minReservationLease = 10 * time.Millisecond
	// releaseTimeout bounds the release of a reservation on the way out of
	// a failed request (whose ctx may be done).
	releaseTimeout = 5 * time.Second
)

// claim claims the pod's keys, with token (when the allocator mints)
// reserving whatever the pool does not cover (see store.Store.Claim). While
// another request, in this process or another replica, holds a live
// reservation of the pod, it waits (polling the store with backoff, until
// ctx ends) and claims again: that request mints the keys, this one must
// not. The claim it returns has no reservation or this request's own. It
// also returns how many keys its claims took from the pool.
func (a *Allocator) claim(ctx context.Context, pod, podUID string, n int, token string) (store.Claim, int, error) {
	recycled := 0
	wait := reservationPollMin
	waitingFor := ""
	for {
		now := a.cfg.Now()
		p := store.ClaimParams{Pod: pod, PodUID: podUID, Want: n, Now: now, AllOrNothing: a.cfg.Minter == nil, StrictUID: a.cfg.StrictUID,
			RequireActive: a.cfg.RequireActive}
		if token != "" {
			p.ReserveToken, p.ReserveUntil = token, now.Add(a.cfg.ReservationLease)
		}
		c, err := a.cfg.Store.Claim(ctx, p)
		if err != nil {
			return store.Claim{}, recycled, err // the store's errors name the claim and the pod
		}
		if a.cfg.Gate != nil && len(c.Taken) > 0 {
			again, err := a.vet(ctx, pod, c.Taken)
			if err != nil {
				return store.Claim{}, recycled, err
			}
			if again > 0 {
				// again of the taken keys were live and left the pod: the
				// rest stay, and the pod claims again for the shortfall.
				if kept := c.Recycled - again; kept > 0 {
					a.cfg.Observer.KeysRecycled(kept)
					recycled += kept
				}
				continue
			}
		}
		if c.Recycled > 0 {
			a.cfg.Observer.KeysRecycled(c.Recycled)
			recycled += c.Recycled
		}
		r := c.Reservation
		if r == nil || r.Token == token {
			return c, recycled, nil
		}
		if r.Token != waitingFor {
			waitingFor = r.Token
			a.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "another request mints the pod's keys; waiting for them",
				slog.String("pod", pod), slog.Int("reserved", r.Count), slog.Time("reserved_until", r.Until))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return store.Claim{}, recycled, fmt.Errorf("wait for the %d keys another request mints for pod %s: %w", r.Count, pod, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, reservationPollMax)
	}
}

// vet is the check right before recycled keys are handed out: taken keys the
// beacon node saw signing in the current or the previous epoch are
// quarantined (they leave the pod); again is how many, and the pod must be
// claimed again. When the node cannot tell, the request fails and nothing is
// handed out, or minted, on a guess: the taken keys leave the pod and go back
// to the pool at once (quarantined and cooled down again, both in the audit
// trail), so that a beacon outage neither hands them out nor drains the pool.
func (a *Allocator) vet(ctx context.Context, pod string, taken []store.Pubkey) (again int, err error) {
	live, verr := a.cfg.Gate.Vet(ctx, taken)
	reason := "the beacon node saw the key signing in the current or the previous epoch when it was about to be handed out to pod " + pod +
		": some validator client still runs it"
	if verr != nil {
		live = taken
		reason = "not handed out to pod " + pod + ": the beacon node could not be asked whether the key still signs; back to the pool"
	}
	if len(live) == 0 {
		return 0, nil
	}
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	qctx = store.WithActor(qctx, "reuse-gate")
	now := a.cfg.Now()
	n, qerr := a.cfg.Store.Quarantine(qctx, live, reason, now)
	if qerr != nil {
		return 0, fmt.Errorf("take %d keys that must not be handed out from pod %s: %w", len(live), pod, qerr)
	}
	if verr != nil {
		if _, err := a.cfg.Store.CoolDown(qctx, live, now, now); err != nil {
			// They stay still-signing: the gate returns them once the
			// beacon node shows them quiet.
			a.cfg.Logger.WarnContext(ctx, "keys not handed out stay still-signing until the reuse gate clears them", slog.Any("error", err))
		}
		a.cfg.Logger.WarnContext(ctx, "recycled keys not handed out: the beacon node did not answer",
			slog.String("pod", pod), slog.Int("keys", n), slog.Any("error", verr))
		return 0, fmt.Errorf("%w: %w", ErrChainUnavailable, verr)
	}
	a.cfg.Gate.Quarantined(n)
	for _, pk := range live {
		a.cfg.Logger.ErrorContext(ctx, "recycled key is still signing: quarantined (still-signing) instead of handed out",
			slog.String("pod", pod), slog.String("pubkey", pk.String()))
	}
	return max(n, 1), nil
}

// mintReserved mints count keys for the pod under its mint reservation held
// under token, renewing the reservation while it works. check, when not
// nil, runs first (the funds check of on-chain deposits); its error is
// returned as it is. On failure the reservation is released, so that a
// duplicate request need not wait for its expiry.
func (a *Allocator) mintReserved(ctx context.Context, pod, token string, count int, check func(context.Context) error) ([]store.NewKey, error) {
	stop := a.renewReservation(ctx, pod, token)
	keys, err := func() ([]store.NewKey, error) {
		if check != nil {
			if err := check(ctx); err != nil {
				return nil, err
			}
		}
		keys, err := a.cfg.Minter.Mint(ctx, count)
		if err != nil {
			return nil, fmt.Errorf("mint %d keys for pod %s: %w", count, pod, err)
		}
		return keys, nil
	}()
	stop()
	if err != nil {
		a.releaseReservation(ctx, pod, token)
		return nil, err
	}
	return keys, nil
}

// renewReservation keeps the pod's reservation held under token alive,
// renewing it every third of the lease, until the returned stop is called.
func (a *Allocator) renewReservation(ctx context.Context, pod, token string) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(a.cfg.ReservationLease / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			err := a.cfg.Store.RenewReservation(rctx, pod, token, a.cfg.Now().Add(a.cfg.ReservationLease))
			switch {
			case err == nil:
			case rctx.Err() != nil:
				return
			case errors.Is(err, store.ErrReservationLost):
				// The pod was released, or the reservation expired and
				// another request took over: storing the keys will fail.
				a.cfg.Logger.WarnContext(ctx, "mint reservation lost while minting", slog.String("pod", pod))
				return
			default:
				a.cfg.Logger.WarnContext(ctx, "renew mint reservation", slog.String("pod", pod), slog.Any("error", err))
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// releaseReservation gives up the pod's reservation held under token (best
// effort, also when ctx is done: the reservation expires anyway).
func (a *Allocator) releaseReservation(ctx context.Context, pod, token string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := a.cfg.Store.ReleaseReservation(rctx, pod, token); err != nil && !errors.Is(err, store.ErrReservationLost) {
		a.cfg.Logger.WarnContext(ctx, "release mint reservation (it expires by itself)", slog.String("pod", pod), slog.Any("error", err))
	}
}

// reservationLost logs minted keys dropped because the request lost its
// reservation before storing them (they were never stored, so never
// deposited); the request claims again.
func (a *Allocator) reservationLost(ctx context.Context, pod string, n int) {
	a.cfg.Logger.WarnContext(ctx, "mint reservation lost before the minted keys were stored; they are dropped and the pod is claimed again",
		slog.String("pod", pod), slog.Int("dropped", n))
}

// answer opens the pod's keys and logs the request.
func (a *Allocator) answer(ctx context.Context, pod string, n int, held []store.Key, recycled, minted int, onChain bool) (Result, error) {
	keys, err := a.open(held)
	if err != nil {
		return Result{}, err
	}
	attrs := []slog.Attr{slog.String("pod", pod), slog.Int("requested", n), slog.Int("held", len(keys)),
		slog.Int("recycled", recycled), slog.Int("minted", minted)}
	if onChain {
		attrs = append(attrs, slog.Bool("deposited_on_chain", true))
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "keys requested", attrs...)
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
			ReleasedAt: k.ReleasedAt,
		}
	}
	return out, nil
}

// ReleaseResult says what a Release did.
type ReleaseResult struct {
	Released     int
	CoolingUntil time.Time // zero when nothing was released
	// Gated: the keys are reused only once a beacon node has shown them
	// quiet (the reuse gate), CoolingUntil at the earliest.
	Gated bool
}

// Message says what the release did, for the pod's caller (every
// transport answers it).
func (r ReleaseResult) Message(pod string) string {
	if r.Released == 0 {
		return fmt.Sprintf("pod %s held no keys; nothing released", pod)
	}
	keys := "keys"
	if r.Released == 1 {
		keys = "key"
	}
	until := r.CoolingUntil.UTC().Format(time.RFC3339)
	if r.Gated {
		return fmt.Sprintf("released %d %s of pod %s; reusable once the beacon node has seen them quiet, from %s at the earliest", r.Released, keys, pod, until)
	}
	return fmt.Sprintf("released %d %s of pod %s; reusable from %s", r.Released, keys, pod, until)
}

// Release returns all keys of the pod to the pool after the reuse delay, on a
// caller's request. A pod holding nothing is not an error (Released is 0). A
// non-empty podUID must match the UID the keys are held under.
func (a *Allocator) Release(ctx context.Context, pod, podUID string) (ReleaseResult, error) {
	return a.ReleaseWithProtection(ctx, pod, podUID, nil)
}

// ReleaseWithProtection is Release with the slashing-protection watermarks
// the pod's validator client uploaded (package slashing): they are merged
// into the keys' stored watermarks in the release's own transaction
// (store.ReleaseParams.Protection), and a key the pod does not hold
// refuses the whole release (store.ErrInvalidArgument), changing nothing.
func (a *Allocator) ReleaseWithProtection(ctx context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (ReleaseResult, error) {
	return a.release(ctx, pod, podUID, false, "release requested through the API", prot)
}

// ReleaseWithReason is Release with the reason recorded in the audit trail.
func (a *Allocator) ReleaseWithReason(ctx context.Context, pod, podUID, reason string) (ReleaseResult, error) {
	return a.release(ctx, pod, podUID, false, reason, nil)
}

// ReleaseHolder releases the pod's keys only if they are still held under
// exactly podUID (also when it is empty: keys recorded without a UID), for
// a release decided about one holder (the pod watcher): a successor that
// holds the name by then keeps its keys (ErrPodUIDMismatch).
func (a *Allocator) ReleaseHolder(ctx context.Context, pod, podUID, reason string) (ReleaseResult, error) {
	return a.release(ctx, pod, podUID, true, reason, nil)
}

func (a *Allocator) release(ctx context.Context, pod, podUID string, exact bool, reason string, prot map[store.Pubkey]store.Protection) (ReleaseResult, error) {
	if err := validatePod(pod, podUID); err != nil {
		return ReleaseResult{}, err
	}
	unlock, err := a.local.Lock(ctx, pod)
	if err != nil {
		return ReleaseResult{}, fmt.Errorf("wait for pod %s: %w", pod, err)
	}
	defer unlock()
	// No lock across replicas: the release is one store transaction on the
	// pod. A request of the pod on another replica either claimed before it
	// (its keys are released with the rest, as if it had finished first) or
	// after it (a new incarnation starts from nothing). One that is minting
	// loses its reservation, which Release deletes, and stores nothing; keys
	// it stored before are released too (pending ones become spares: the
	// pod is gone).
	now := a.cfg.Now()
	until := now.Add(a.cfg.ReuseDelay)
	storeUntil := until
	if a.cfg.Gate != nil {
		storeUntil = reusegate.HoldUntil // the gate sets the end once the chain shows the keys quiet
	}
	n, err := a.cfg.Store.Release(ctx, store.ReleaseParams{
		Pod: pod, PodUID: podUID, ExactUID: exact, Until: storeUntil, Now: now, Reason: reason, Protection: prot,
	})
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
	return ReleaseResult{Released: n, CoolingUntil: until, Gated: a.cfg.Gate != nil}, nil
}

// AdoptUID records uid as the pod UID of the pod's keys when they were
// recorded without one (a claim of 0 keys: nothing is taken), for the pod
// watcher once it has identified their holder; the store records it in the
// audit trail in the same transaction (store.AuditUIDAdopted, with reason),
// and nothing when the keys carry the UID already. Keys recorded under
// another UID fail with ErrPodUIDMismatch.
func (a *Allocator) AdoptUID(ctx context.Context, pod, uid, reason string) error {
	if err := validatePod(pod, uid); err != nil {
		return err
	}
	if uid == "" {
		return fmt.Errorf("%w: no pod UID to record for pod %s", ErrInvalidRequest, pod)
	}
	unlock, err := a.local.Lock(ctx, pod)
	if err != nil {
		return fmt.Errorf("wait for pod %s: %w", pod, err)
	}
	defer unlock()
	if _, err := a.cfg.Store.Claim(ctx, store.ClaimParams{Pod: pod, PodUID: uid, Want: 0, Now: a.cfg.Now(), UIDReason: reason}); err != nil {
		return fmt.Errorf("record pod UID %s for pod %s: %w", uid, pod, err)
	}
	return nil
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
