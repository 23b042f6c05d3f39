// Package lifecycle follows every key's validator on the beacon chain and
// exits validators.
//
// The Watcher reads the status, balance, activation and exit epochs of every
// key that may still circulate once per epoch, in a few batched calls
// (beacon.Node.Validators: POST /eth/v1/beacon/states/head/validators,
// 10,000 keys a call), and hands them to the store (RecordValidators), whose
// one rule (store.ChainRule) retires slashed, exited and withdrawable keys
// with the chain's reason and flags keys a pod holds that turn slashed or
// exiting. Those are logged at ERROR and counted
// (pkmanager_assigned_validators_exiting_total), for an alert. A key the
// node does not know is counted as "unknown": its deposit may simply not be
// processed yet (follow distance, deposit queue), which never means it was
// not made.
//
// Exit signs voluntary exits with the keys (package exits), marks the keys
// exiting in the store first (so they are never handed out again), and
// submits them to the beacon node or hands them back for offline
// submission.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/attestantio/go-eth2-client/spec/phase0"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/exits"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Store is what the watcher reads and changes.
type Store interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	GetKey(ctx context.Context, pubkey store.Pubkey) (store.Key, error)
	RecordValidators(ctx context.Context, readings []store.ValidatorReading, now time.Time) ([]store.ChainChange, error)
	Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error)
	Exit(ctx context.Context, p store.ExitParams) ([]store.Key, error)
}

// Beacon is what the watcher asks a beacon node (*beacon.Node).
type Beacon interface {
	Chain() beacon.Chain
	Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]beacon.Validator, error)
	SubmitVoluntaryExit(ctx context.Context, e *phase0.SignedVoluntaryExit) error
}

// Opener decrypts sealed secrets (a *seal.KEK).
type Opener interface {
	Open(sealed, pubkey []byte) ([]byte, error)
}

// Config configures a Watcher. Store and Beacon are required; Opener for
// Exit.
type Config struct {
	Store      Store
	Beacon     Beacon
	Opener     Opener
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Watched are the states whose keys the watcher reads: every key that may
// still circulate, and pending-deposit ones (shown once the chain has them).
var Watched = []store.State{store.StatePendingDeposit, store.StateAvailable, store.StateAssigned,
	store.StateCoolingDown, store.StateStillSigning, store.StateExiting}

// StatusUnknown labels keys the beacon node does not know (yet).
const StatusUnknown = "unknown"

// recordBatch bounds one store transaction of readings.
const recordBatch = 10000

// Actor is the audit actor of the watcher's retirements.
const Actor = "beacon-node"

// Watcher follows the keys' validators. Its methods are safe for concurrent
// use; Run must run at most once at a time (on the replica that owns the
// role).
type Watcher struct {
	cfg Config
	m   metrics

	mu   sync.Mutex
	last Report
}

type metrics struct {
	validators               *prometheus.GaugeVec
	retired, assignedExiting *prometheus.CounterVec
	refreshes                *prometheus.CounterVec
	refreshSeconds           prometheus.Gauge
	activation               prometheus.Histogram // activation.go
}

// New checks cfg and returns a Watcher.
func New(cfg Config) (*Watcher, error) {
	if cfg.Store == nil || cfg.Beacon == nil {
		return nil, errors.New("lifecycle: store and beacon node are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watcher{cfg: cfg, m: metrics{
		validators: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkmanager_validators",
			Help: "Keys by the beacon node's validator status at the last refresh (retired and deposit-failed keys are not read; unknown: the node has no validator for the key yet, which does not mean its deposit was not made)."}, []string{"status"}),
		retired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pkmanager_keys_retired_by_chain_total",
			Help: "Keys retired because the beacon node showed their validator slashed, exited or withdrawable, by status."}, []string{"status"}),
		assignedExiting: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pkmanager_assigned_validators_exiting_total",
			Help: "Keys a pod held when the beacon node showed their validator slashed or exiting without this server exiting it, by status."}, []string{"status"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pkmanager_validator_refreshes_total",
			Help: "Validator status refreshes, by result (ok, error)."}, []string{"result"}),
		refreshSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkmanager_validator_refresh_seconds",
			Help: "Duration of the last validator status refresh."}),
		activation: newActivationHistogram(),
	}}
	for _, st := range append(slices.Clone(store.ValidatorStatuses), StatusUnknown) {
		w.m.validators.WithLabelValues(st)
	}
	for _, r := range []string{"ok", "error"} {
		w.m.refreshes.WithLabelValues(r)
	}
	// The counters of chain changes from 0 for every status, so that
	// /metrics has the series the alerts use before the first change, and
	// increase() counts the first one.
	for _, st := range store.ValidatorStatuses {
		w.m.retired.WithLabelValues(st)
		w.m.assignedExiting.WithLabelValues(st)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.m.validators, w.m.retired, w.m.assignedExiting, w.m.refreshes, w.m.refreshSeconds, w.m.activation} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

// Report is what one refresh saw and did.
type Report struct {
	At       time.Time
	Epoch    uint64
	Keys     int            // keys read
	ByStatus map[string]int // by validator status, StatusUnknown for none
	Changes  []store.ChainChange
	Calls    int64 // beacon API calls (when the Beacon counts them)
	// Duration is the whole refresh; Beacon and Record its parts asking
	// the node and writing the store.
	Duration, Beacon, Record time.Duration
}

// Last returns the last successful refresh's report.
func (w *Watcher) Last() Report {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Refresh reads every watched key's validator once and records the
// readings.
func (w *Watcher) Refresh(ctx context.Context) (Report, error) {
	start := time.Now()
	rep, err := w.refresh(ctx)
	rep.Duration = time.Since(start)
	if err != nil {
		w.m.refreshes.WithLabelValues("error").Inc()
		return rep, err
	}
	w.m.refreshes.WithLabelValues("ok").Inc()
	w.m.refreshSeconds.Set(rep.Duration.Seconds())
	w.mu.Lock()
	w.last = rep
	w.mu.Unlock()
	return rep, nil
}

type caller interface{ Calls() int64 }

func (w *Watcher) refresh(ctx context.Context) (Report, error) {
	now := w.cfg.Now()
	rep := Report{At: now, Epoch: w.cfg.Beacon.Chain().Epoch(now), ByStatus: map[string]int{}}
	var pks []store.Pubkey
	err := store.ListPages(ctx, w.cfg.Store, store.ListOptions{States: Watched}, store.DefaultPage, func(page []store.Key) error {
		for _, k := range page {
			pks = append(pks, k.Pubkey)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("list keys: %w", err)
	}
	rep.Keys = len(pks)
	c, counts := w.cfg.Beacon.(caller)
	var calls0 int64
	if counts {
		calls0 = c.Calls()
	}
	t0 := time.Now()
	vs, err := w.cfg.Beacon.Validators(ctx, pks)
	if err != nil {
		return rep, err
	}
	rep.Beacon = time.Since(t0)
	if counts {
		rep.Calls = c.Calls() - calls0
	}
	readings := make([]store.ValidatorReading, 0, len(vs))
	for _, pk := range pks {
		v, ok := vs[pk]
		if !ok {
			rep.ByStatus[StatusUnknown]++
			continue
		}
		rep.ByStatus[v.Status.String()]++
		readings = append(readings, store.ValidatorReading{Pubkey: pk, Status: store.ValidatorStatus{
			Index: v.Index, Status: v.Status.String(), Balance: v.Balance, ActivationEpoch: v.ActivationEpoch,
			ExitEpoch: v.ExitEpoch, Slashed: v.Slashed, Epoch: rep.Epoch, At: now,
		}})
	}
	w.observeActivations(ctx, w.cfg.Beacon.Chain(), rep.Epoch, readings)
	actx := store.WithActor(ctx, Actor)
	t0 = time.Now()
	for start := 0; start < len(readings); start += recordBatch {
		changes, err := w.cfg.Store.RecordValidators(actx, readings[start:min(start+recordBatch, len(readings))], now)
		if err != nil {
			return rep, fmt.Errorf("record validator statuses: %w", err)
		}
		rep.Changes = append(rep.Changes, changes...)
	}
	rep.Record = time.Since(t0)
	w.m.validators.Reset()
	for _, st := range append(slices.Clone(store.ValidatorStatuses), StatusUnknown) {
		w.m.validators.WithLabelValues(st).Set(float64(rep.ByStatus[st]))
	}
	for st, n := range rep.ByStatus {
		w.m.validators.WithLabelValues(st).Set(float64(n))
	}
	for _, c := range rep.Changes {
		w.report(c)
	}
	return rep, nil
}

// report logs and counts one change.
func (w *Watcher) report(c store.ChainChange) {
	attrs := []any{slog.String("pubkey", c.Pubkey.String()), slog.Uint64("validator_index", c.Status.Index),
		slog.String("status", c.Status.Status), slog.Bool("slashed", c.Status.Slashed), slog.String("state", string(c.State))}
	if c.Pod != "" {
		attrs = append(attrs, slog.String("pod", c.Pod))
	}
	if c.Decision.Alert {
		w.m.assignedExiting.WithLabelValues(c.Status.Status).Inc()
		w.cfg.Logger.Error("a key a pod holds turned slashed or exiting on the beacon chain, and this server did not exit it: "+
			"its validator client may be running it in two places, or someone else holds its secret", attrs...)
	}
	if c.Decision.Retire {
		w.m.retired.WithLabelValues(c.Status.Status).Inc()
		w.cfg.Logger.Warn("key retired: "+c.Decision.Reason, attrs...)
	}
}

// Run refreshes once per epoch, a slot after the epoch began, until ctx
// ends. A failed refresh is tried again a slot later.
func (w *Watcher) Run(ctx context.Context) {
	chain := w.cfg.Beacon.Chain()
	for {
		wait := chain.SecondsPerSlot
		if rep, err := w.Refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.cfg.Logger.Warn("validator status refresh failed; trying again in a slot", slog.Any("error", err))
		} else {
			w.cfg.Logger.Debug("validator statuses refreshed", slog.Uint64("epoch", rep.Epoch), slog.Int("keys", rep.Keys),
				slog.Int("changes", len(rep.Changes)), slog.Duration("took", rep.Duration))
			now := w.cfg.Now()
			wait = chain.EpochStart(chain.Epoch(now) + 1).Add(chain.SecondsPerSlot).Sub(now)
		}
		t := time.NewTimer(max(wait, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// ExitRequest asks for voluntary exits.
type ExitRequest struct {
	// Pubkeys to exit; or, with Count, the Count unassigned (available)
	// keys idle longest whose validators are active.
	Pubkeys []store.Pubkey
	Count   int
	// Force exits keys pods hold (they leave the pods).
	Force bool
	// Submit sends the exits to the beacon node; otherwise they are only
	// signed and returned (for offline submission).
	Submit bool
	// Reason is recorded in the audit trail.
	Reason string
}

// Signed is one signed voluntary exit.
type Signed struct {
	Pubkey    store.Pubkey
	Exit      *phase0.SignedVoluntaryExit
	Submitted bool
}

// ErrNotExitable: a key's validator cannot exit now (not on chain yet, not
// active, already exiting); nothing was changed. It is a wrong state.
var ErrNotExitable = fmt.Errorf("validator cannot exit: %w", store.ErrWrongState)

// ErrNoBeacon: exits need a beacon node (--beacon-url), for the validator
// index, the chain's parameters and the submission.
var ErrNoBeacon = errors.New("voluntary exits need a beacon node of the network (--beacon-url)")

// Exit signs (and submits) voluntary exits; see ExitRequest. Every key is
// checked before anything changes: its validator must be active on chain,
// and store.ExitRule must allow it (a key a pod holds only with Force).
// The keys are marked exiting before they are signed, so a failed
// submission leaves them out of circulation; asking again submits again.
func (w *Watcher) Exit(ctx context.Context, req ExitRequest) ([]Signed, error) {
	if w.cfg.Opener == nil {
		return nil, errors.New("lifecycle: no key-encryption key to sign exits with")
	}
	chain := w.cfg.Beacon.Chain()
	pks := req.Pubkeys
	if req.Count > 0 {
		if len(pks) > 0 {
			return nil, fmt.Errorf("give public keys or a count, not both: %w", store.ErrInvalidArgument)
		}
		var err error
		if pks, err = w.pickIdle(ctx, req.Count); err != nil {
			return nil, err
		}
	}
	if len(pks) == 0 {
		return nil, fmt.Errorf("no keys to exit: %w", store.ErrInvalidArgument)
	}
	vs, err := w.cfg.Beacon.Validators(ctx, pks)
	if err != nil {
		return nil, err
	}
	for _, pk := range pks {
		v, ok := vs[pk]
		switch {
		case !ok:
			return nil, fmt.Errorf("key %s is not a validator in the beacon node's head state (its deposit may not be processed yet): "+
				"it cannot exit yet: %w", pk, ErrNotExitable)
		case v.Status.String() != store.StatusActiveOngoing:
			return nil, fmt.Errorf("validator %d (key %s) is %s: only an active validator that is not exiting can exit: %w",
				v.Index, pk, v.Status.String(), ErrNotExitable)
		}
	}
	reason := req.Reason
	if reason == "" {
		reason = "voluntary exit"
	}
	if req.Submit {
		reason += " (submitted to the beacon node)"
	} else {
		reason += " (signed for offline submission)"
	}
	if _, err := w.cfg.Store.Exit(ctx, store.ExitParams{Pubkeys: pks, Force: req.Force, Reason: reason, Now: w.cfg.Now()}); err != nil {
		return nil, err
	}
	epoch := chain.Epoch(w.cfg.Now())
	out := make([]Signed, 0, len(pks))
	for _, pk := range pks {
		e, err := w.sign(ctx, pk, chain, epoch, vs[pk].Index)
		if err != nil {
			return out, fmt.Errorf("key %s is marked exiting, but its exit could not be signed: %w", pk, err)
		}
		out = append(out, Signed{Pubkey: pk, Exit: e})
	}
	if !req.Submit {
		return out, nil
	}
	var errs []error
	for i := range out {
		if err := w.cfg.Beacon.SubmitVoluntaryExit(ctx, out[i].Exit); err != nil {
			errs = append(errs, fmt.Errorf("validator %d (key %s): %w", vs[out[i].Pubkey].Index, out[i].Pubkey, err))
			continue
		}
		out[i].Submitted = true
		w.cfg.Logger.Info("voluntary exit submitted", slog.String("pubkey", out[i].Pubkey.String()),
			slog.Uint64("validator_index", vs[out[i].Pubkey].Index), slog.Uint64("epoch", epoch))
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("the keys are marked exiting (never handed out), but the beacon node refused some exits; ask again to resubmit: %w", errors.Join(errs...))
	}
	return out, nil
}

func (w *Watcher) sign(ctx context.Context, pk store.Pubkey, chain beacon.Chain, epoch, index uint64) (*phase0.SignedVoluntaryExit, error) {
	k, err := w.cfg.Store.GetKey(ctx, pk)
	if err != nil {
		return nil, err
	}
	raw, err := w.cfg.Opener.Open(k.SealedSecret, pk[:])
	if err != nil {
		return nil, fmt.Errorf("open the sealed secret: %w", err)
	}
	sk, err := keys.SecretKeyFromBytes(raw)
	clear(raw)
	if err != nil {
		return nil, err
	}
	defer sk.Zero()
	if sk.PublicKey() != pk {
		return nil, errors.New("the stored secret does not belong to the public key")
	}
	return exits.Sign(sk, chain, epoch, index)
}

// pickIdle returns n available keys, longest idle first (earliest Since),
// whose validators are active.
func (w *Watcher) pickIdle(ctx context.Context, n int) ([]store.Pubkey, error) {
	var avail []store.Key
	err := store.ListPages(ctx, w.cfg.Store, store.ListOptions{States: []store.State{store.StateAvailable}}, store.DefaultPage, func(page []store.Key) error {
		avail = append(avail, page...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list available keys: %w", err)
	}
	slices.SortStableFunc(avail, func(a, b store.Key) int { return a.Since.Compare(b.Since) })
	all := make([]store.Pubkey, len(avail))
	for i := range avail {
		all[i] = avail[i].Pubkey
	}
	vs, err := w.cfg.Beacon.Validators(ctx, all)
	if err != nil {
		return nil, err
	}
	var out []store.Pubkey
	for _, pk := range all {
		if v, ok := vs[pk]; ok && v.Status.String() == store.StatusActiveOngoing && len(out) < n {
			out = append(out, pk)
		}
	}
	if len(out) < n {
		return nil, fmt.Errorf("%d unassigned keys are active validators that can exit (of %d available), fewer than the %d asked for: %w",
			len(out), len(avail), n, ErrNotExitable)
	}
	return out, nil
}
