package ownership

import (
	"context"
	"sync/atomic"
)

// Gate turns a role into a flag for loops that check "do I own it?" before
// each action (the shape of the pod watcher's Leader: IsLeader). It runs the
// role through a Runner: IsLeader is true from the moment the Runner starts
// the role here until the moment it cancels it (before another replica can
// start it).
type Gate struct {
	owner atomic.Bool
	done  chan struct{}
}

// NewGate competes for role with r until ctx ends.
func NewGate(ctx context.Context, r Runner, role string) *Gate {
	g := &Gate{done: make(chan struct{})}
	go func() {
		defer close(g.done)
		_ = r.Run(ctx, role, func(ctx context.Context) error {
			g.owner.Store(true)
			<-ctx.Done()
			g.owner.Store(false)
			return nil
		})
	}()
	return g
}

// IsLeader reports whether this replica owns the role now.
func (g *Gate) IsLeader() bool { return g.owner.Load() }

// Done is closed once the gate has stopped competing (its ctx ended).
func (g *Gate) Done() <-chan struct{} { return g.done }
