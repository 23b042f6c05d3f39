// Package leader decides, with a coordination.k8s.io Lease, which replica of
// pkmanager runs the loops that must run once: the pod watcher's releases and
// the deposit sender.
//
// IsLeader is deliberately stricter than client-go's view: it is true only
// while the last successful renewal of the lease started less than
// RenewDeadline ago. Another replica can take the lease only LeaseDuration
// after it last saw it change, and RenewDeadline < LeaseDuration, so a replica
// that stops renewing (partition, API outage, pause) stops calling itself
// leader before anyone else can start. Callers ask IsLeader right before each
// step (each release, each deposit), not once per loop.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults (those of kube-controller-manager).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Config configures an Elector. Client, Namespace, Name and Identity are
// required.
type Config struct {
	Client    kubernetes.Interface
	Namespace string // of the Lease
	Name      string // of the Lease
	Identity  string // unique per replica, e.g. the pod name
	// LeaseDuration > RenewDeadline > RetryPeriod (defaults 15 s, 10 s, 2 s).
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// Registerer receives pkmanager_leader; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Elector campaigns for the lease until its context ends.
type Elector struct {
	cfg   Config
	log   *slog.Logger
	lock  *timedLock
	gauge prometheus.Gauge

	mu      sync.Mutex
	leading bool // between OnStartedLeading and OnStoppedLeading
}

// New checks cfg.
func New(cfg Config) (*Elector, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Name == "" || cfg.Identity == "" {
		return nil, errors.New("leader: client, lease namespace, lease name and identity are required")
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if !(cfg.LeaseDuration > cfg.RenewDeadline && cfg.RenewDeadline > cfg.RetryPeriod && cfg.RetryPeriod > 0) {
		return nil, fmt.Errorf("leader: need lease duration (%s) > renew deadline (%s) > retry period (%s) > 0",
			cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Elector{
		cfg: cfg,
		log: cfg.Logger.With(slog.String("component", "leader-election"), slog.String("lease", cfg.Namespace+"/"+cfg.Name)),
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkmanager_leader",
			Help: "1 while this replica holds the leader lease (runs releases and deposits), else 0.",
		}),
	}
	e.lock = &timedLock{
		Interface: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
			Client:     cfg.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
		},
		now: cfg.Now,
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(e.gauge); err != nil {
			return nil, fmt.Errorf("leader: register metrics: %w", err)
		}
	}
	return e, nil
}

// Identity is this replica's identity in the lease.
func (e *Elector) Identity() string { return e.cfg.Identity }

// IsLeader reports whether this replica may run the leader's loops now.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	leading := e.leading
	e.mu.Unlock()
	if !leading {
		return false
	}
	last := e.lock.lastRenewal()
	return !last.IsZero() && e.cfg.Now().Sub(last) < e.cfg.RenewDeadline
}

// Campaign competes for the lease, holds it while it can, and competes again
// after losing it, until ctx ends. On ctx's end the lease is given up (after
// this replica stopped calling itself leader) so another replica takes over
// at once.
func (e *Elector) Campaign(ctx context.Context) {
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            e.lock,
			Name:            e.cfg.Name,
			LeaseDuration:   e.cfg.LeaseDuration,
			RenewDeadline:   e.cfg.RenewDeadline,
			RetryPeriod:     e.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					e.setLeading(true)
					e.log.Info("became leader: this replica now runs releases and deposits", slog.String("identity", e.cfg.Identity))
				},
				OnStoppedLeading: func() {
					if e.setLeading(false) {
						e.log.Warn("lost leadership: releases and deposits stopped on this replica", slog.String("identity", e.cfg.Identity))
					}
				},
				OnNewLeader: func(id string) {
					if id != e.cfg.Identity {
						e.log.Info("leader is another replica", slog.String("leader", id))
					}
				},
			},
		})
		if err != nil {
			e.log.Error("leader election config", slog.Any("error", err))
			return
		}
		le.Run(ctx)
		if ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(e.cfg.RetryPeriod):
			}
		}
	}
}

// Run calls fn whenever this replica is leader, until ctx ends (the shape of
// ownership.Runner, so loops written for it run under the Lease too). fn's
// context is canceled as soon as IsLeader turns false, which is before
// another replica can take the lease; fn must then return promptly. When fn
// returns on its own, Run waits for the next leadership check and calls it
// again. Campaign must run for Run to ever call fn.
func (e *Elector) Run(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	const poll = 100 * time.Millisecond
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for !e.IsLeader() {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- fn(fctx) }()
		var err error
	watch:
		for {
			select {
			case err = <-done:
				break watch
			case <-t.C:
				if !e.IsLeader() {
					e.log.Warn("leadership lost: stopping owned work", slog.String("role", name))
					cancel()
					err = <-done
					break watch
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.log.Warn("owned work stopped", slog.String("role", name), slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(e.cfg.RetryPeriod):
		}
	}
}

func (e *Elector) setLeading(v bool) (changed bool) {
	e.mu.Lock()
	changed = e.leading != v
	e.leading = v
	e.mu.Unlock()
	if !v {
		e.lock.forget()
	}
	e.gauge.Set(map[bool]float64{true: 1, false: 0}[v])
	return changed
}

// timedLock records when the last successful write of this replica's lease
// record started; a write that gives the lease up (or to someone else)
// forgets it before it is sent.
type timedLock struct {
	resourcelock.Interface
	now func() time.Time

	mu   sync.Mutex
	last time.Time
}

func (l *timedLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(ctx, r, l.Interface.Create)
}

func (l *timedLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(ctx, r, l.Interface.Update)
}

func (l *timedLock) write(ctx context.Context, r resourcelock.LeaderElectionRecord,
	fn func(context.Context, resourcelock.LeaderElectionRecord) error) error {
	mine := r.HolderIdentity == l.Identity()
	if !mine {
		l.forget() // giving the lease up: stop being leader first
	}
	start := l.now()
	if err := fn(ctx, r); err != nil {
		return err
	}
	if mine {
		l.mu.Lock()
		l.last = start
		l.mu.Unlock()
	}
	return nil
}

func (l *timedLock) lastRenewal() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *timedLock) forget() {
	l.mu.Lock()
	l.last = time.Time{}
	l.mu.Unlock()
}
