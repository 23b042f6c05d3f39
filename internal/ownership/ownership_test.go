package ownership_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/ownership"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

var quiet = slog.New(slog.DiscardHandler)

// fast are short timings for tests: a lost owner stops within Lease, a new
// one starts TakeoverDelay after taking the lock.
func fast() ownership.PostgresOptions {
	return ownership.PostgresOptions{
		Logger:          quiet,
		AcquireInterval: 20 * time.Millisecond,
		PingInterval:    20 * time.Millisecond,
		Lease:           150 * time.Millisecond,
		TakeoverDelay:   300 * time.Millisecond,
		RetryDelay:      50 * time.Millisecond,
	}
}

func namespace() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}

// replica is one runner with its own connections; its connections' backend
// PIDs are recorded so a test can terminate them.
type replica struct {
	runner *ownership.Postgres
	mu     sync.Mutex
	pids   []uint32
}

func newReplica(t *testing.T, ns string, o ownership.PostgresOptions) *replica {
	base := pgtest.BaseURL(t)
	r := &replica{}
	r.runner = ownership.NewPostgres(func(ctx context.Context) (*pgx.Conn, error) {
		c, err := pgx.Connect(ctx, base)
		if err == nil {
			r.mu.Lock()
			r.pids = append(r.pids, c.PgConn().PID())
			r.mu.Unlock()
		}
		return c, err
	}, ns, o)
	return r
}

// tracker records how many replicas run the role at once.
type tracker struct {
	active, maxActive atomic.Int32
	starts            atomic.Int32
	running           sync.Map // replica index -> true while running
}

func (tr *tracker) fn(i int) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		n := tr.active.Add(1)
		for {
			m := tr.maxActive.Load()
			if n <= m || tr.maxActive.CompareAndSwap(m, n) {
				break
			}
		}
		tr.starts.Add(1)
		tr.running.Store(i, true)
		<-ctx.Done()
		// Stopping takes a moment, well within TakeoverDelay - Lease.
		time.Sleep(30 * time.Millisecond)
		tr.running.Delete(i)
		tr.active.Add(-1)
		return nil
	}
}

func (tr *tracker) owner() int {
	owner := -1
	tr.running.Range(func(k, _ any) bool { owner = k.(int); return false })
	return owner
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Three replicas compete for one role: exactly one runs it at any time, and
// when the owner stops (its ctx ends) or its session is killed, another takes
// over, never overlapping.
func TestPostgresOneOwner(t *testing.T) {
	ns := namespace()
	var tr tracker
	reps := make([]*replica, 3)
	cancels := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	for i := range reps {
		reps[i] = newReplica(t, ns, fast())
		ctx, cancel := context.WithCancel(t.Context())
		cancels[i] = cancel
		wg.Go(func() {
			if err := reps[i].runner.Run(ctx, "depositor", tr.fn(i)); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	waitFor(t, 5*time.Second, "a first owner", func() bool { return tr.owner() >= 0 })
	time.Sleep(300 * time.Millisecond)
	if tr.starts.Load() != 1 {
		t.Fatalf("%d starts with nobody leaving, want 1", tr.starts.Load())
	}

	// The owner shuts down: another takes over.
	first := tr.owner()
	cancels[first]()
	waitFor(t, 5*time.Second, "a second owner", func() bool { o := tr.owner(); return o >= 0 && o != first })

	// The owner's session is killed behind its back (as when PostgreSQL
	// drops it): it stops, and another takes over.
	second := tr.owner()
	admin := pgtest.Connect(t, pgtest.BaseURL(t))
	reps[second].mu.Lock()
	pids := append([]uint32(nil), reps[second].pids...)
	reps[second].mu.Unlock()
	for _, pid := range pids {
		if _, err := admin.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, int(pid)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "an owner after the session was killed", func() bool {
		o := tr.owner()
		return o >= 0 && tr.starts.Load() >= 3
	})
	if m := tr.maxActive.Load(); m != 1 {
		t.Errorf("up to %d replicas ran the role at once, want 1", m)
	}
	// The killed replica competes again and may win later; meanwhile still
	// one at a time.
	time.Sleep(500 * time.Millisecond)
	if m := tr.maxActive.Load(); m != 1 {
		t.Errorf("up to %d replicas ran the role at once, want 1", m)
	}
}

// An owner whose session stops answering (a partition: nothing arrives, the
// connection stays open) cancels its work within the lease, before a new
// owner may start; one whose connection is cut stops at once.
func TestPostgresLeaseExpires(t *testing.T) {
	t.Run("partition", func(t *testing.T) { testOwnerLosesDatabase(t, (*pgtest.Proxy).Freeze) })
	t.Run("cut", func(t *testing.T) { testOwnerLosesDatabase(t, (*pgtest.Proxy).Cut) })
}

func testOwnerLosesDatabase(t *testing.T, lose func(*pgtest.Proxy)) {
	base := pgtest.BaseURL(t)
	proxy, via := pgtest.NewProxy(t, base)
	ns := namespace()
	o := fast()
	var (
		mu      sync.Mutex
		events  []string
		stopped time.Time
	)
	record := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	cut := ownership.NewPostgres(func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, via) }, ns, o)
	other := ownership.NewPostgres(func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, base) }, ns, o)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	started := make(chan struct{})
	wg.Go(func() {
		cut.Run(ctx, "watcher", func(ctx context.Context) error {
			record("cut-start")
			close(started)
			<-ctx.Done()
			stopped = time.Now()
			record("cut-stop")
			return nil
		})
	})
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("first owner did not start")
	}
	wg.Go(func() {
		other.Run(ctx, "watcher", func(ctx context.Context) error {
			record("other-start")
			<-ctx.Done()
			return nil
		})
	})
	lost := time.Now()
	lose(proxy)
	waitFor(t, 10*time.Second, "the other replica to take over", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	if len(events) < 3 || events[0] != "cut-start" || events[1] != "cut-stop" || events[2] != "other-start" {
		t.Errorf("events %v, want cut-start, cut-stop, other-start", events)
	}
	if d := stopped.Sub(lost); d > o.Lease+o.PingInterval+100*time.Millisecond {
		t.Errorf("the owner stopped %s after losing the database; the lease is %s", d, o.Lease)
	}
}

// Single always owns, and restarts fn when it returns early.
func TestSingle(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var calls atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- ownership.Single{Logger: quiet, RetryDelay: time.Millisecond}.Run(ctx, "sweeper", func(ctx context.Context) error {
			if calls.Add(1) < 3 {
				return errors.New("transient")
			}
			<-ctx.Done()
			return nil
		})
	}()
	waitFor(t, 5*time.Second, "three calls", func() bool { return calls.Load() == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// Gates of three replicas: exactly one says it owns the role; when it stops,
// another does.
func TestGate(t *testing.T) {
	ns := namespace()
	ctxs := make([]context.CancelFunc, 3)
	gates := make([]*ownership.Gate, 3)
	for i := range gates {
		ctx, cancel := context.WithCancel(t.Context())
		ctxs[i] = cancel
		gates[i] = ownership.NewGate(ctx, newReplica(t, ns, fast()).runner, "pod-watcher")
	}
	leaders := func() (n, who int) {
		for i, g := range gates {
			if g.IsLeader() {
				n, who = n+1, i
			}
		}
		return
	}
	waitFor(t, 5*time.Second, "one leader", func() bool { n, _ := leaders(); return n == 1 })
	_, first := leaders()
	ctxs[first]()
	<-gates[first].Done()
	if gates[first].IsLeader() {
		t.Fatal("a stopped gate still says it leads")
	}
	waitFor(t, 5*time.Second, "another leader", func() bool { n, who := leaders(); return n == 1 && who != first })
	for _, c := range ctxs {
		c()
	}
	for _, g := range gates {
		<-g.Done()
	}
}
