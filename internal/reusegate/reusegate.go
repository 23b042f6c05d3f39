// Package reusegate lets a released key be reused only on the chain's word:
// when a beacon node is configured, a released key is held (its
// cooling-down end is HoldUntil) until the beacon node has reported it not
// live in every full epoch since its release, at least QuietEpochs of them,
// and the reuse delay has passed. A key seen live after its release is
// quarantined (still-signing) and comes back only after QuietEpochs
// consecutive quiet epochs. Right before a recycled key is handed out, Vet
// asks once more for the current and the previous epoch (a doppelganger
// check on the server's side).
//
// Beacon nodes answer liveness for the current and the previous epoch only,
// so the gate asks once per epoch, at the start of the next one, for every
// key it watches in one batched call; it counts quiet epochs in memory. An
// epoch it could not ask about (the node did not answer, the server was
// down) breaks the count: the keys wait for more epochs. Nothing is ever
// cleared without an answer.
package reusegate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/store"
)

// HoldUntil is the cooling-down end of a released key that waits for the
// gate: it is never reached, the gate sets the real end once the chain has
// shown the key quiet.
var HoldUntil = time.Date(9999, time.January, 1, 0, 0, 0, 0, time.UTC)

// Held reports whether a cooling-down end is the gate's hold.
func Held(until time.Time) bool { return !until.Before(HoldUntil) }

// DefaultQuietEpochs is how many full epochs a released key must have been
// seen quiet before it is reused.
const DefaultQuietEpochs = 2

// ErrUnavailable: the beacon node did not answer, so nothing can be
// cleared or handed out on its word.
var ErrUnavailable = errors.New("the beacon node did not answer: reuse waits")

// Store is what the gate reads and changes.
type Store interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	Quarantine(ctx context.Context, pubkeys []store.Pubkey, reason string, now time.Time) (int, error)
	CoolDown(ctx context.Context, pubkeys []store.Pubkey, until, now time.Time) (int, error)
}

// Beacon is what the gate asks a beacon node (*beacon.Node).
type Beacon interface {
	Chain() beacon.Chain
	Known(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]beacon.Validator, error)
	Liveness(ctx context.Context, epoch uint64, indices []uint64) (map[uint64]bool, error)
}

// Config configures a Gate. Store and Beacon are required.
type Config struct {
	Store       Store
	Beacon      Beacon
	ReuseDelay  time.Duration
	QuietEpochs int // 0 means DefaultQuietEpochs
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
	Now         func() time.Time
}

// Gate watches released and quarantined keys. Its methods are safe for
// concurrent use; Run must run at most once at a time (on the replica that
// owns the role).
type Gate struct {
	cfg Config
	m   *metrics

	mu      sync.Mutex
	quiet   map[store.Pubkey]int    // consecutive quiet full epochs
	counted map[store.Pubkey]uint64 // the last epoch counted
	lastErr error
	errAt   time.Time
}

type metrics struct {
	up, watched, held   prometheus.Gauge
	unobservable        prometheus.Gauge
	checks              *prometheus.CounterVec
	stillSigning        prometheus.Counter
	cleared, vetRefused prometheus.Counter
}

// New checks cfg and returns a Gate.
func New(cfg Config) (*Gate, error) {
	if cfg.Store == nil || cfg.Beacon == nil {
		return nil, errors.New("reuse gate: store and beacon node are required")
	}
	if cfg.QuietEpochs <= 0 {
		cfg.QuietEpochs = DefaultQuietEpochs
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Gate{cfg: cfg, quiet: map[store.Pubkey]int{}, counted: map[store.Pubkey]uint64{}, m: &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_beacon_up",
			Help: "1 when the beacon node answered the reuse gate's last question, else 0 (released keys are then not reused)."}),
		watched: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_reuse_gate_watched_keys",
			Help: "Released and still-signing keys the reuse gate asked the beacon node about in its last check."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_reuse_gate_held_keys",
			Help: "Released keys held until the beacon node has shown them quiet long enough."}),
		unobservable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_reuse_gate_unobservable_keys",
			Help: "Held and still-signing keys that are not active validators yet (deposit not processed, or pending activation): liveness cannot show them quiet, so they stay held."}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pkmanager_reuse_gate_checks_total",
			Help: "Epochs the reuse gate checked, by result (ok, error)."}, []string{"result"}),
		stillSigning: prometheus.NewCounter(prometheus.CounterOpts{Name: "pkmanager_still_signing_total",
			Help: "Keys seen signing after their release (or about to be handed out) and quarantined as still-signing."}),
		cleared: prometheus.NewCounter(prometheus.CounterOpts{Name: "pkmanager_reuse_gate_cleared_total",
			Help: "Keys the chain showed quiet long enough: released keys cleared for reuse, still-signing keys back to cooling-down."}),
		vetRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "pkmanager_reuse_gate_handout_refused_total",
			Help: "Recycled keys not handed out because the check right before found them live or could not ask."}),
	}}
	// Every result from 0, so that /metrics has the series before the
	// first check and rate() and increase() count the first one.
	for _, r := range []string{"ok", "error"} {
		g.m.checks.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{g.m.up, g.m.watched, g.m.held, g.m.unobservable, g.m.checks, g.m.stillSigning, g.m.cleared, g.m.vetRefused} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("reuse gate: register metrics: %w", err)
			}
		}
	}
	return g, nil
}

// QuietEpochs returns the configured number of quiet epochs.
func (g *Gate) QuietEpochs() int { return g.cfg.QuietEpochs }

// Ready is nil while the beacon node answers; otherwise why reuse waits.
func (g *Gate) Ready() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lastErr == nil {
		return nil
	}
	return fmt.Errorf("%w (since %s): %w", ErrUnavailable, g.errAt.UTC().Format(time.RFC3339), g.lastErr)
}

func (g *Gate) setErr(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		if g.lastErr != nil {
			g.cfg.Logger.Info("reuse gate: the beacon node answers again")
		}
		g.lastErr = nil
		g.m.up.Set(1)
		return
	}
	if g.lastErr == nil {
		g.errAt = g.cfg.Now()
		g.cfg.Logger.Warn("reuse gate: the beacon node does not answer; released keys are not reused meanwhile", slog.Any("error", err))
	}
	g.lastErr = err
	g.m.up.Set(0)
}

// Run checks every epoch once it has ended (a slot into the next), until
// ctx ends.
func (g *Gate) Run(ctx context.Context) {
	c := g.cfg.Beacon.Chain()
	g.cfg.Logger.Info("reuse gate running: released keys are reused only after the beacon node shows them quiet",
		slog.Int("quiet_epochs", g.cfg.QuietEpochs), slog.Duration("epoch", c.EpochDuration()))
	for {
		now := g.cfg.Now()
		cur := c.Epoch(now)
		next := c.EpochStart(cur + 1).Add(c.SecondsPerSlot)
		if now.Before(c.GenesisTime) {
			next = c.GenesisTime.Add(c.EpochDuration() + c.SecondsPerSlot)
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		epoch := c.Epoch(g.cfg.Now())
		if epoch == 0 {
			continue
		}
		if err := g.Check(ctx, epoch-1); err != nil && ctx.Err() == nil {
			g.cfg.Logger.Warn("reuse gate: check failed", slog.Uint64("epoch", epoch-1), slog.Any("error", err))
		}
	}
}

// watched is a key the gate asks about, and since when it counts epochs.
type watched struct {
	key   store.Key
	from  time.Time // epochs starting at or after this count
	still bool      // still-signing (else a released key held for the gate)
}

// Check asks the beacon node about epoch for every key the gate watches:
// released keys held for it and still-signing keys. Keys live in a full
// epoch after their release are quarantined; keys quiet for QuietEpochs
// consecutive full epochs are cleared (released keys: cooling-down until the
// reuse delay has passed since their release; still-signing keys: back to
// cooling-down for the reuse delay from their quarantine).
func (g *Gate) Check(ctx context.Context, epoch uint64) error {
	var list []watched
	err := g.cfg.Store.ListKeys(ctx, store.ListOptions{States: []store.State{store.StateCoolingDown, store.StateStillSigning}}, func(k store.Key) error {
		switch {
		case k.State == store.StateStillSigning:
			list = append(list, watched{key: k, from: k.Since, still: true})
		case Held(k.CoolingUntil):
			list = append(list, watched{key: k, from: k.ReleasedAt})
		}
		return nil
	})
	if err != nil {
		g.m.checks.WithLabelValues("error").Inc()
		return fmt.Errorf("list the keys to check: %w", err)
	}
	held := 0
	for _, w := range list {
		if !w.still {
			held++
		}
	}
	g.m.held.Set(float64(held))
	g.m.watched.Set(float64(len(list)))
	g.forget(list)
	if len(list) == 0 {
		g.m.checks.WithLabelValues("ok").Inc()
		return nil
	}
	live, unseen, err := g.liveness(ctx, epoch, list)
	if err != nil {
		g.setErr(err)
		g.m.checks.WithLabelValues("error").Inc()
		return err
	}
	g.setErr(nil)
	c := g.cfg.Beacon.Chain()
	start := c.EpochStart(epoch)
	now := g.cfg.Now()
	var (
		quarantine []store.Pubkey
		reasons    = map[store.Pubkey]string{}
		clear      = map[time.Time][]store.Pubkey{}
	)
	g.m.unobservable.Set(float64(len(unseen)))
	if len(unseen) > 0 {
		g.cfg.Logger.Info("reuse gate: keys are not active validators yet, so the beacon node cannot show them quiet; they stay held until it can",
			slog.Int("keys", len(unseen)), slog.Uint64("epoch", epoch))
	}
	g.mu.Lock()
	for _, w := range list {
		pk := w.key.Pubkey
		if start.Before(w.from) {
			continue // not a full epoch since the release (or quarantine)
		}
		if unseen[pk] {
			continue // no duties in epoch: its count waits (and restarts)
		}
		if live[pk] {
			g.quiet[pk] = 0
			g.counted[pk] = epoch
			if !w.still {
				quarantine = append(quarantine, pk)
				reasons[pk] = fmt.Sprintf("the beacon node saw the key signing in epoch %d, after its release at %s (from pod %s): some validator client still runs it",
					epoch, w.key.ReleasedAt.UTC().Format(time.RFC3339), w.key.LastPod)
			}
			continue
		}
		if last, ok := g.counted[pk]; ok {
			if last == epoch {
				continue // counted already
			}
			if last+1 != epoch {
				g.quiet[pk] = 0 // an epoch was missed: count again
			}
		}
		g.counted[pk] = epoch
		g.quiet[pk]++
		if g.quiet[pk] < g.cfg.QuietEpochs {
			continue
		}
		until := w.from.Add(g.cfg.ReuseDelay)
		if until.Before(now) {
			until = now
		}
		until = until.Truncate(time.Microsecond)
		clear[until] = append(clear[until], pk)
	}
	g.mu.Unlock()

	var errs []error
	for _, pk := range quarantine {
		n, err := g.cfg.Store.Quarantine(store.WithActor(ctx, Actor), []store.Pubkey{pk}, reasons[pk], now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n > 0 {
			g.m.stillSigning.Inc()
			g.cfg.Logger.Error("released key is still signing: quarantined (still-signing), never handed out until it is quiet again",
				slog.String("pubkey", pk.String()), slog.Uint64("epoch", epoch), slog.String("reason", reasons[pk]))
		}
	}
	for until, pks := range clear {
		n, err := g.cfg.Store.CoolDown(store.WithActor(ctx, Actor), pks, until, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		g.m.cleared.Add(float64(n))
		g.mu.Lock()
		for _, pk := range pks {
			delete(g.quiet, pk)
			delete(g.counted, pk)
		}
		g.mu.Unlock()
		g.cfg.Logger.Info("keys quiet on chain long enough: cleared for reuse", slog.Int("keys", n), slog.Uint64("epoch", epoch),
			slog.Time("reusable_from", until))
	}
	if len(errs) > 0 {
		g.m.checks.WithLabelValues("error").Inc()
		return errors.Join(errs...)
	}
	g.m.checks.WithLabelValues("ok").Inc()
	return nil
}

// Actor is the audit trail's actor of the gate's decisions.
const Actor = "reuse-gate"

// forget drops the counts of keys no longer watched.
func (g *Gate) forget(list []watched) {
	keep := make(map[store.Pubkey]bool, len(list))
	for _, w := range list {
		keep[w.key.Pubkey] = true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for pk := range g.quiet {
		if !keep[pk] {
			delete(g.quiet, pk)
			delete(g.counted, pk)
		}
	}
}

// liveness asks about epoch for the watched keys, in one batch.
func (g *Gate) liveness(ctx context.Context, epoch uint64, list []watched) (live, unseen map[store.Pubkey]bool, err error) {
	pks := make([]store.Pubkey, len(list))
	for i, w := range list {
		pks[i] = w.key.Pubkey
	}
	return g.live(ctx, []uint64{epoch}, pks)
}

// live reports which of pubkeys the beacon node saw signing in any of
// epochs, and which it cannot see in any of them (unseen): keys that are
// not validators yet or not active yet have no duties, so their liveness
// says nothing about whether some validator client runs them. A validator
// that has exited cannot sign any more: it is seen, and quiet.
func (g *Gate) live(ctx context.Context, epochs []uint64, pks []store.Pubkey) (live, unseen map[store.Pubkey]bool, err error) {
	vs, err := g.cfg.Beacon.Known(ctx, pks)
	if err != nil {
		return nil, nil, err
	}
	live = make(map[store.Pubkey]bool, len(pks))
	unseen = make(map[store.Pubkey]bool)
	for _, pk := range pks {
		v, ok := vs[pk]
		if !ok || !slices.ContainsFunc(epochs, func(e uint64) bool { return v.ActivationEpoch <= e }) {
			unseen[pk] = true
		}
	}
	for _, e := range epochs {
		byIndex := make(map[uint64]store.Pubkey, len(vs))
		indices := make([]uint64, 0, len(vs))
		for pk, v := range vs {
			if v.ActiveAt(e) {
				byIndex[v.Index] = pk
				indices = append(indices, v.Index)
			}
		}
		if len(indices) == 0 {
			continue
		}
		slices.Sort(indices)
		l, err := g.cfg.Beacon.Liveness(ctx, e, indices)
		if err != nil {
			return nil, nil, err
		}
		for i, isLive := range l {
			if isLive {
				live[byIndex[i]] = true
			}
		}
	}
	return live, unseen, nil
}

// Vet is the check right before recycled keys are handed out: it returns
// those of pubkeys the beacon node saw signing in the current or the
// previous epoch. When the node does not answer it fails with an error
// wrapping ErrUnavailable: the keys must not be handed out.
func (g *Gate) Vet(ctx context.Context, pubkeys []store.Pubkey) ([]store.Pubkey, error) {
	if len(pubkeys) == 0 {
		return nil, nil
	}
	cur := g.cfg.Beacon.Chain().Epoch(g.cfg.Now())
	epochs := []uint64{cur}
	if cur > 0 {
		epochs = append(epochs, cur-1)
	}
	live, _, err := g.live(ctx, epochs, pubkeys)
	if err != nil {
		g.setErr(err)
		g.m.vetRefused.Add(float64(len(pubkeys)))
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	g.setErr(nil)
	var out []store.Pubkey
	for _, pk := range pubkeys {
		if live[pk] {
			out = append(out, pk)
		}
	}
	g.m.vetRefused.Add(float64(len(out)))
	return out, nil
}

// Quarantined counts a key the allocator quarantined after Vet.
func (g *Gate) Quarantined(n int) { g.m.stillSigning.Add(float64(n)) }
