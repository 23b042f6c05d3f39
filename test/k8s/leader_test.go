package k8s_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/kube/leader"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// replicaSet is one bbolt store and allocator shared by in-process
// "replicas" (in production the replicas share PostgreSQL), each with its
// own Kubernetes client, watcher and, optionally, elector.
type replicaSet struct {
	st    store.Store
	alloc *allocator.Allocator
}

func newReplicaSet(t *testing.T) *replicaSet {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "pk.db"), bolt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, err := seal.ParseKEK(strings.Repeat("5a", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	fork, _ := deposit.ParseForkVersion("0x10000038")
	m, err := mint.New(mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
		Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}, Sealer: kek})
	if err != nil {
		t.Fatal(err)
	}
	a, err := allocator.New(allocator.Config{Store: st, Opener: kek, Minter: m})
	if err != nil {
		t.Fatal(err)
	}
	return &replicaSet{st: st, alloc: a}
}

func (r *replicaSet) request(t *testing.T, ctx context.Context, pod, uid string) []store.Pubkey {
	t.Helper()
	res, err := r.alloc.Request(ctx, pod, uid, 1)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]store.Pubkey, len(res.Keys))
	for i, k := range res.Keys {
		out[i] = k.Pubkey
	}
	return out
}

// partition makes a client configuration whose requests fail while cut is set.
type partition struct{ cut atomic.Bool }

type cutTransport struct {
	p    *partition
	next http.RoundTripper
}

func (c cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.p.cut.Load() {
		return nil, errors.New("network partition (test)")
	}
	return c.next.RoundTrip(r)
}

func (p *partition) config(base *rest.Config) *rest.Config {
	cfg := rest.CopyConfig(base)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return cutTransport{p: p, next: rt} }
	return cfg
}

type toggleLeader struct{ on atomic.Bool }

func (l *toggleLeader) IsLeader() bool { return l.on.Load() }

// recorder is a Releaser that records who released and checks, at the
// moment of each release, that its replica is leader and no other is.
type recorder struct {
	name   string
	next   watcher.Releaser
	self   interface{ IsLeader() bool }
	others []interface{ IsLeader() bool }
	log    *releaseLog
}

type releaseLog struct {
	mu         sync.Mutex
	by         map[string]string // pod -> replica
	violations []string
}

func (r recorder) AdoptUID(ctx context.Context, pod, uid, reason string) error {
	return r.next.AdoptUID(ctx, pod, uid, reason)
}

func (r recorder) ReleaseHolder(ctx context.Context, pod, uid, reason string) (allocator.ReleaseResult, error) {
	r.log.mu.Lock()
	if !r.self.IsLeader() {
		r.log.violations = append(r.log.violations, r.name+" released "+pod+" while not leader")
	}
	for _, o := range r.others {
		if o.IsLeader() {
			r.log.violations = append(r.log.violations, r.name+" released "+pod+" while another replica was leader")
		}
	}
	r.log.by[pod] = r.name
	r.log.mu.Unlock()
	return r.next.ReleaseHolder(ctx, pod, uid, reason)
}

func (l *releaseLog) releasedBy(pod string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.by[pod]
}

func startWatcher(t *testing.T, c *cluster, cfg *rest.Config, st store.Store, rel watcher.Releaser, ld watcher.Leader) *watcher.Watcher {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := watcher.New(watcher.Config{Client: cs, Namespace: c.ns, Selector: selector, Store: st, Releaser: rel,
		Leader: ld, Resync: watcherResync, APITimeout: 2 * time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 30*time.Second, "watcher synced", func() (bool, string) {
		err := w.Ready()
		return err == nil, fmt.Sprint(err)
	})
	return w
}

func testLogger() *slog.Logger {
	if os.Getenv("PKM_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestWatcherAPIServerDown: while the API server is unreachable nothing is
// released, even a pod the cache already saw go; readiness reports the
// outage; releases resume when the API returns.
func TestWatcherAPIServerDown(t *testing.T) {
	c := newCluster(t, "apidown")
	ctx := c.ctx
	rs := newReplicaSet(t)
	ready := c.node("ready", true)
	p := c.pod("p", ready, nil)
	keep := c.pod("keep", ready, nil)
	pKeys := rs.request(t, ctx, "p", string(p.UID))
	keepKeys := rs.request(t, ctx, "keep", string(keep.UID))

	ld := &toggleLeader{}
	w := startWatcher(t, c, c.pkm, rs.st, rs.alloc, ld)
	// The cache sees p go while this replica may not release.
	c.forceDelete("p")
	waitFor(t, 10*time.Second, "cache saw p deleted", func() (bool, string) {
		_, ok := w.PodUID("p")
		return !ok, "still cached"
	})
	quiet()
	held(t, ctx, rs.st, "p", string(p.UID), pKeys)

	env.StopAPIServer()
	restarted := false
	defer func() {
		if !restarted {
			if err := env.StartAPIServer(context.Background()); err != nil {
				t.Errorf("restart kube-apiserver: %v", err)
			}
		}
	}()
	ld.on.Store(true) // now it may release, but the API does not answer
	waitFor(t, 20*time.Second, "readiness degraded", func() (bool, string) {
		err := w.Ready()
		return err != nil && strings.Contains(err.Error(), "unreachable"), fmt.Sprint(err)
	})
	for range 3 {
		w.Reconcile(ctx)
	}
	time.Sleep(2 * time.Second)
	held(t, ctx, rs.st, "p", string(p.UID), pKeys)
	held(t, ctx, rs.st, "keep", string(keep.UID), keepKeys)
	if ev := auditFor(t, ctx, rs.st, "p", "release"); len(ev) != 0 {
		t.Fatalf("released while the API was down: %+v", ev)
	}

	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	waitReleased(t, ctx, rs.st, "p", pKeys, 60*time.Second)
	waitFor(t, 30*time.Second, "readiness back", func() (bool, string) {
		err := w.Ready()
		return err == nil, fmt.Sprint(err)
	})
	held(t, ctx, rs.st, "keep", string(keep.UID), keepKeys)
}

// TestLeaderElection: two replicas, one Lease: only the leader releases; a
// partitioned leader stops before the other takes over; a leader that shuts
// down hands over at once.
func TestLeaderElection(t *testing.T) {
	c := newCluster(t, "leader")
	ctx := c.ctx
	rs := newReplicaSet(t)
	ready := c.node("ready", true)
	uids := map[string]string{}
	keys := map[string][]store.Pubkey{}
	for _, name := range []string{"p1", "p2", "p3"} {
		p := c.pod(name, ready, nil)
		uids[name] = string(p.UID)
		keys[name] = rs.request(t, ctx, name, uids[name])
	}

	names := []string{"replica-a", "replica-b"}
	parts := []*partition{{}, {}}
	electors := make([]*leader.Elector, 2)
	stops := make([]context.CancelFunc, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		cs, err := kubernetes.NewForConfig(parts[i].config(c.pkm))
		if err != nil {
			t.Fatal(err)
		}
		electors[i], err = leader.New(leader.Config{Client: cs, Namespace: c.ns, Name: "pkmanager", Identity: names[i],
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
	}
	log := &releaseLog{by: map[string]string{}}
	for i := range 2 {
		rec := recorder{name: names[i], next: rs.alloc, self: electors[i], others: []interface{ IsLeader() bool }{electors[1-i]}, log: log}
		startWatcher(t, c, parts[i].config(c.pkm), rs.st, rec, electors[i])
		cctx, cancel := context.WithCancel(context.Background())
		stops[i] = cancel
		wg.Add(1)
		go func(e *leader.Elector) { defer wg.Done(); e.Campaign(cctx) }(electors[i])
	}
	t.Cleanup(func() {
		for _, s := range stops {
			s()
		}
		wg.Wait()
	})
	// Never two leaders at once, sampled all along.
	var both atomic.Int64
	sampleCtx, stopSample := context.WithCancel(ctx)
	defer stopSample()
	go func() {
		for sampleCtx.Err() == nil {
			if electors[0].IsLeader() && electors[1].IsLeader() {
				both.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	lead := -1
	waitFor(t, 20*time.Second, "a leader", func() (bool, string) {
		for i, e := range electors {
			if e.IsLeader() {
				lead = i
				return true, ""
			}
		}
		return false, "none"
	})
	other := 1 - lead
	c.forceDelete("p1")
	waitReleased(t, ctx, rs.st, "p1", keys["p1"], 15*time.Second)
	if by := log.releasedBy("p1"); by != names[lead] {
		t.Fatalf("p1 released by %q, want the leader %s", by, names[lead])
	}

	// Partition the leader: it stops calling itself leader within the renew
	// deadline, before the other can take the lease (lease duration).
	cut := time.Now()
	parts[lead].cut.Store(true)
	waitFor(t, 5*time.Second, "old leader steps down", func() (bool, string) {
		return !electors[lead].IsLeader(), "still leader"
	})
	stepDown := time.Since(cut)
	waitFor(t, 20*time.Second, "failover", func() (bool, string) {
		return electors[other].IsLeader(), "no new leader"
	})
	takeOver := time.Since(cut)
	t.Logf("partitioned leader stepped down after %s; the other replica led after %s", stepDown.Round(time.Millisecond), takeOver.Round(time.Millisecond))
	if stepDown > 2500*time.Millisecond || takeOver < stepDown {
		t.Fatalf("step down %s (renew deadline 2 s), take over %s", stepDown, takeOver)
	}
	c.forceDelete("p2")
	waitReleased(t, ctx, rs.st, "p2", keys["p2"], 15*time.Second)
	if by := log.releasedBy("p2"); by != names[other] {
		t.Fatalf("p2 released by %q, want the new leader %s", by, names[other])
	}

	// Heal, then stop the new leader: it gives the lease up and the first
	// replica takes over without waiting for the lease to expire.
	parts[lead].cut.Store(false)
	handover := time.Now()
	stops[other]()
	waitFor(t, 10*time.Second, "handover", func() (bool, string) {
		return electors[lead].IsLeader(), "not yet"
	})
	t.Logf("handover after a clean stop: %s", time.Since(handover).Round(time.Millisecond))
	c.forceDelete("p3")
	waitReleased(t, ctx, rs.st, "p3", keys["p3"], 15*time.Second)
	if by := log.releasedBy("p3"); by != names[lead] {
		t.Fatalf("p3 released by %q, want %s", by, names[lead])
	}
	stopSample()
	if n := both.Load(); n != 0 {
		t.Fatalf("both replicas were leader in %d samples", n)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.violations) > 0 {
		t.Fatalf("releases outside leadership: %v", log.violations)
	}
}
