// Package ownership runs work that must have exactly one owner among the
// server replicas: the chain nonce manager and deposit sender, the pod
// watcher's releases, the sweeper.
//
// A Runner runs a role's function only while this process owns the role, and
// cancels the function's context before ownership can pass to another
// replica. Two implementations:
//
//   - Single, for the embedded bbolt store: the store's file lock already
//     proves that this process is the only server, so it always owns.
//   - Postgres, for replicas sharing a PostgreSQL database: a session
//     advisory lock per role, held on a dedicated connection (see Postgres).
//
// Why an advisory lock and not a Kubernetes Lease: the database is the one
// thing every replica already depends on for every request, so ownership
// needs no further API access or RBAC, works outside Kubernetes (tests, VMs),
// and fails exactly when the replica could not do the work anyway. PostgreSQL
// frees the lock the moment the owner's session ends (process killed,
// connection closed); a Lease has to expire first.
//
// Use:
//
//	go runner.Run(ctx, "depositor", func(ctx context.Context) error {
//		return depositor.Run(ctx) // must return soon after ctx is canceled
//	})
package ownership

import (
	"context"
	"log/slog"
	"time"
)

// Runner runs work that must have one owner among the replicas.
type Runner interface {
	// Run calls fn whenever this process owns the role name, until ctx
	// ends. fn's context is canceled when ownership is lost, before
	// another replica can start the role; fn must then return promptly.
	// When fn returns on its own (nil or an error) before ctx ends, Run
	// gives the role up and competes for it again after a pause. Run
	// returns nil once ctx is done and fn has returned.
	Run(ctx context.Context, name string, fn func(ctx context.Context) error) error
}

// DefaultRetryDelay is the pause after fn returned on its own or a
// connection failed.
const DefaultRetryDelay = 2 * time.Second

// Single is the Runner of a process that is the only server (a bbolt store,
// whose file lock admits one process): it always owns every role.
type Single struct {
	Logger     *slog.Logger  // nil: slog.Default()
	RetryDelay time.Duration // 0: DefaultRetryDelay
}

// Run calls fn until ctx ends, again after RetryDelay whenever it returns.
func (s Single) Run(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	delay := s.RetryDelay
	if delay <= 0 {
		delay = DefaultRetryDelay
	}
	for ctx.Err() == nil {
		err := fn(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("owned work stopped; restarting", slog.String("role", name), slog.Any("error", err), slog.Duration("after", delay))
		if !sleep(ctx, delay) {
			return nil
		}
	}
	return nil
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
