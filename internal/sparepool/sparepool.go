// Package sparepool keeps a pool of minted, deposited keys that no pod
// holds ready, so that requests take them at once instead of waiting for
// deposits (serve --spare-pool N).
//
// Its depth is the available keys plus the spares (pending-deposit keys
// intended for no pod) whose deposits are under way; whenever it is below
// the target, the pool mints the difference through the allocator
// (Allocator.MintSpares: funds check, mint, store as pending-deposit, then
// the depositor sends), at most Batch keys a round. Nothing is minted
// while the funder cannot pay the deposits at the fee cap, while the
// deposit sender is blocked, or after deposits minted here failed: the
// pool says so once (a WARN log, pkmanager_spare_pool_blocked 1) and looks
// again only at its next round, so it never spins on the chain.
//
// The server runs one pool, on the replica that owns the spare-pool role.
package sparepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Defaults.
const (
	// DefaultInterval is how often the pool looks at its depth.
	DefaultInterval = 2 * time.Second
	// DefaultBatch bounds the keys one round mints.
	DefaultBatch = 64
)

// Store is what the pool reads.
type Store interface {
	Counts(ctx context.Context) (map[store.State]int, error)
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
}

// Readings are the store's validator readings (store.Lifecycle).
type Readings interface {
	Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error)
}

// Refiller mints spare keys and has their deposits made
// (*allocator.Allocator).
type Refiller interface {
	MintSpares(ctx context.Context, n int) (int, error)
}

// Sender is the deposit sender's state (*depositor.Depositor).
type Sender interface {
	// Blocked returns why this process's sender cannot send now, or nil.
	Blocked() error
	// Changed returns a channel closed at the next settlement of a deposit.
	Changed() <-chan struct{}
}

// Config configures a Pool. Target, Store and Refiller are required.
type Config struct {
	Target   int
	Store    Store
	Refiller Refiller
	Sender   Sender // optional
	// Readings, when set (serve --require-active), leaves out of the
	// depth the available keys that will never be handed out: neither
	// active nor activating (store.ReadyForDuties, store.Activating; e.g.
	// a validator exited elsewhere). Keys still activating count: they are
	// the spares that activate ahead of requests.
	Readings   Readings
	Interval   time.Duration // 0 means DefaultInterval
	Batch      int           // 0 means DefaultBatch
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Pool keeps Target spare keys ready. Run it in one goroutine.
type Pool struct {
	cfg     Config
	target  prometheus.Gauge
	blocked prometheus.Gauge
	active  prometheus.Gauge
	refills prometheus.Counter
	minted  prometheus.Counter

	// failedAtStart is the deposit-failed count when the pool first
	// looked; more means deposits failed since (-1: not read yet).
	failedAtStart int
	why           string // why the pool is blocked; "" when it is not
}

// New checks cfg and returns a Pool, registering its metrics.
func New(cfg Config) (*Pool, error) {
	if cfg.Target < 1 || cfg.Store == nil || cfg.Refiller == nil {
		return nil, errors.New("sparepool: a target of at least 1, a store and a refiller are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		cfg: cfg,
		target: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_spare_pool_target",
			Help: "Spare keys (available, or deposits under way) the pool keeps ready (--spare-pool)."}),
		blocked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_spare_pool_blocked",
			Help: "1 while the spare pool cannot refill (the funder cannot pay, the deposit sender is blocked, or deposits failed), else 0."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_spare_pool_active",
			Help: "1 on the replica that refills the spare pool (the owner of the spare-pool role), else 0."}),
		refills: prometheus.NewCounter(prometheus.CounterOpts{Name: "pkmanager_spare_pool_refills_total",
			Help: "Rounds in which the spare pool minted keys."}),
		minted: prometheus.NewCounter(prometheus.CounterOpts{Name: "pkmanager_spare_pool_keys_minted_total",
			Help: "Keys the spare pool minted (their deposits sent by the depositor)."}),
		failedAtStart: -1,
	}
	p.target.Set(float64(cfg.Target))
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.target, p.blocked, p.active, p.refills, p.minted} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("sparepool: register metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Depth is the pool's depth: available keys plus spares whose deposits are
// under way.
func (p *Pool) Depth(ctx context.Context) (int, error) {
	depth, _, err := p.depth(ctx)
	return depth, err
}

// depth reads the pool's depth and the store's counts. A spare whose
// deposit settles meanwhile moves from the spares to the available keys,
// so the spares are read first: such a key is then counted twice (the
// pool mints too little for a round, which the next makes up), never
// missed (the pool would mint again what is already paid for).
func (p *Pool) depth(ctx context.Context) (int, map[store.State]int, error) {
	pending, err := p.pendingSpares(ctx)
	if err != nil {
		return 0, nil, err
	}
	counts, err := p.cfg.Store.Counts(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("count keys: %w", err)
	}
	avail, err := p.available(ctx, counts)
	if err != nil {
		return 0, nil, err
	}
	return avail + pending, counts, nil
}

// available counts the available keys of the depth: all of them, or with
// Readings those that are active or may still activate.
func (p *Pool) available(ctx context.Context, counts map[store.State]int) (int, error) {
	if p.cfg.Readings == nil {
		return counts[store.StateAvailable], nil
	}
	var pks []store.Pubkey
	err := p.cfg.Store.ListKeys(ctx, store.ListOptions{States: []store.State{store.StateAvailable}}, func(k store.Key) error {
		pks = append(pks, k.Pubkey)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list available keys: %w", err)
	}
	vs, err := p.cfg.Readings.Validators(ctx, pks)
	if err != nil {
		return 0, fmt.Errorf("read validator statuses: %w", err)
	}
	n := 0
	for _, pk := range pks {
		var r *store.ValidatorStatus
		if v, ok := vs[pk]; ok {
			r = &v
		}
		if store.ReadyForDuties(r) || store.Activating(r) {
			n++
		}
	}
	return n, nil
}

func (p *Pool) pendingSpares(ctx context.Context) (int, error) {
	n := 0
	err := p.cfg.Store.ListKeys(ctx, store.ListOptions{States: []store.State{store.StatePendingDeposit}}, func(k store.Key) error {
		if k.Pod == "" {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list pending deposits: %w", err)
	}
	return n, nil
}

// Refill is one round: it mints the pool's shortfall (at most Batch keys)
// unless the pool is blocked. It returns how many keys it minted.
func (p *Pool) Refill(ctx context.Context) (int, error) {
	depth, counts, err := p.depth(ctx)
	if err != nil {
		return 0, err
	}
	failed := counts[store.StateDepositFailed]
	if p.failedAtStart < 0 || failed < p.failedAtStart {
		p.failedAtStart = failed // an operator dealt with failed keys: look again
	}
	if failed > p.failedAtStart {
		p.block(ctx, fmt.Sprintf("%d deposits failed since the pool started (keys in state deposit-failed); it mints no more until they are recovered or retired",
			failed-p.failedAtStart), nil)
		return 0, nil
	}
	if p.cfg.Sender != nil {
		if err := p.cfg.Sender.Blocked(); err != nil {
			p.block(ctx, "the deposit sender cannot send", err)
			return 0, nil
		}
	}
	short := min(p.cfg.Target-depth, p.cfg.Batch)
	if short <= 0 {
		p.unblock(ctx)
		return 0, nil
	}
	n, err := p.cfg.Refiller.MintSpares(ctx, short)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		p.block(ctx, "keys cannot be minted and deposited now", err)
		return 0, nil
	}
	p.unblock(ctx)
	p.refills.Inc()
	p.minted.Add(float64(n))
	p.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "spare pool refilled", slog.Int("minted", n),
		slog.Int("depth", depth+n), slog.Int("target", p.cfg.Target))
	return n, nil
}

func (p *Pool) block(ctx context.Context, why string, err error) {
	p.blocked.Set(1)
	if why == p.why {
		return // said once
	}
	p.why = why
	attrs := []slog.Attr{slog.Int("target", p.cfg.Target)}
	if err != nil {
		attrs = append(attrs, slog.Any("error", err))
	}
	p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "spare pool not refilled: "+why+"; requests mint and wait for deposits meanwhile", attrs...)
}

func (p *Pool) unblock(ctx context.Context) {
	p.blocked.Set(0)
	if p.why != "" {
		p.why = ""
		p.cfg.Logger.InfoContext(ctx, "spare pool refills again", slog.Int("target", p.cfg.Target))
	}
}

// Run refills the pool every Interval, and after each settled deposit,
// until ctx ends.
func (p *Pool) Run(ctx context.Context) {
	p.active.Set(1)
	defer p.active.Set(0)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		var changed <-chan struct{}
		if p.cfg.Sender != nil {
			changed = p.cfg.Sender.Changed()
		}
		if _, err := p.Refill(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.WarnContext(ctx, "spare pool", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}
