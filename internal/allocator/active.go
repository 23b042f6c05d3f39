package allocator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Active keys only (Config.RequireActive, serve --require-active): a pod
// gets its keys once the beacon node reports every one of them active.
// The store decides which pool keys a claim may take and which of the
// pod's keys are not ready (store.ClaimParams.RequireActive, one rule for
// every backend); the allocator waits, bounded by the request's ctx, while
// the pod's keys or the pool keys that would cover it are still
// activating, claiming again each ActivationPoll (the statuses it waits
// for are read from the beacon node once per epoch). Its wait sits beside
// the wait for deposits: keys minted for the pod wait for their deposits
// first, then for their activation.

// DefaultActivationPoll is how often a request waiting for activation
// claims again: statuses change once per epoch (the lifecycle watcher's
// refresh), so not more often.
const DefaultActivationPoll = 5 * time.Second

// claimActive is claim, and with Config.RequireActive it waits while the
// claim leaves the pod waiting for activation only (no reservation of its
// own to mint, no pending deposits): the pod holds keys that are not
// active yet, or activating pool keys would cover what it lacks. Then it
// claims again until they are active, or ctx ends (the error says what
// the request waited for). The claim it returns is as claim's.
func (a *Allocator) claimActive(ctx context.Context, pod, podUID string, n int, token string) (store.Claim, int, error) {
	recycled := 0
	var waitStart time.Time
	report, _ := ctx.Value(waitReporterKey{}).(func(*ActivationWait))
	if report != nil {
		defer func() {
			if !waitStart.IsZero() {
				report(nil)
			}
		}()
	}
	// The wait ends a little before the request's deadline, so that the
	// caller gets this answer rather than only its own deadline.
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok && a.cfg.RequireActive {
		margin := min(max(time.Until(dl)/10, 200*time.Millisecond), 2*time.Second)
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}
	for {
		c, r, err := a.claim(ctx, pod, podUID, n, token)
		recycled += r
		if err != nil || !a.cfg.RequireActive {
			return c, recycled, err
		}
		ownRes := c.Reservation != nil && c.Reservation.Token == token && token != ""
		if ownRes || len(c.Pending) > 0 {
			return c, recycled, nil // mint, or wait for deposits, first
		}
		w := activationWait{pod: pod, want: n, active: len(c.Keys) - len(c.Inactive), inactive: len(c.Inactive),
			activating: c.Activating, lack: c.Shortfall, available: c.Available}
		if !w.waits() {
			if c.Shortfall > 0 && c.Activating > 0 {
				// Even once they are active the pool cannot cover the pod.
				return c, recycled, fmt.Errorf("%w: %s", ErrPoolExhausted, w)
			}
			return c, recycled, nil
		}
		if waitStart.IsZero() {
			waitStart = a.cfg.Now()
			a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "waiting for activation: "+w.String(),
				slog.String("pod", pod), slog.Int("requested", n), slog.Int("active", w.active),
				slog.Int("inactive", w.inactive), slog.Int("activating_pool_keys", w.activating))
		}
		if report != nil {
			report(w.public(waitStart))
		}
		poll := a.cfg.ActivationPoll
		if poll <= 0 {
			poll = DefaultActivationPoll
		}
		t := time.NewTimer(poll)
		select {
		case <-wctx.Done():
			t.Stop()
			err := ctx.Err()
			if err == nil {
				err = context.DeadlineExceeded // the margin before the deadline
			}
			return store.Claim{}, recycled, fmt.Errorf("wait for activation (--require-active), %s, for %s; the pod keeps the keys it holds, ask again to keep waiting: %w",
				w, a.cfg.Now().Sub(waitStart).Round(time.Second), err)
		case <-t.C:
		}
	}
}

// activationWait is what a request waits for under RequireActive.
type activationWait struct {
	pod string
	// want keys; active of the pod's are active, inactive not yet; lack
	// is what the pod still lacks, activating the pool keys that may
	// cover it once active, available the active pool keys an all or
	// nothing claim held back.
	want, active, inactive, lack, activating, available int
}

// waits reports whether the request waits: the pod holds keys that are
// not active yet, or what it lacks is covered once activating pool keys
// are active.
func (w activationWait) waits() bool {
	return w.inactive > 0 || (w.lack > 0 && w.activating > 0 && w.available+w.activating >= w.lack)
}

// String: "pod p holds 1 of 4 keys active (1 waits for activation); 2 more
// come from the pool's 2 keys waiting for activation".
func (w activationWait) String() string {
	s := fmt.Sprintf("pod %s holds %d of %d keys active", w.pod, w.active, w.want)
	if w.inactive > 0 {
		s += fmt.Sprintf(" (%d waiting for activation)", w.inactive)
	}
	if w.lack > 0 {
		s += fmt.Sprintf("; it lacks %d: the pool has %d active keys, and %d that would cover it wait for activation (the beacon node does not show them active_ongoing yet)",
			w.lack, w.available, w.activating)
	}
	return s
}

// ActivationWait is what a request waiting for activation (RequireActive)
// waits for, as its last claim saw it: want keys, of the pod's Active are
// active and Inactive not yet; the pod Lacks keys, which Activating pool
// keys would cover once active (at most what it lacks), beside Available
// active pool keys an all or nothing claim held back. Message is the
// server's wording of it, Since when the wait began.
type ActivationWait struct {
	Want, Active, Inactive, Lack, Activating, Available int
	Since                                               time.Time
	Message                                             string
}

func (w activationWait) public(since time.Time) *ActivationWait {
	return &ActivationWait{Want: w.want, Active: w.active, Inactive: w.inactive, Lack: w.lack, Activating: w.activating,
		Available: w.available, Since: since, Message: w.String()}
}

type waitReporterKey struct{}

// WithWaitReporter returns ctx with report, which a Request made with it
// calls each time it claims and goes on waiting for activation, and with
// nil once it stops waiting (for a request's progress: the transports
// show it to the pod's client).
func WithWaitReporter(ctx context.Context, report func(*ActivationWait)) context.Context {
	return context.WithValue(ctx, waitReporterKey{}, report)
}
