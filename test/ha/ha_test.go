package ha

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// Workload of TestReplicasUnderKills.
const (
	replicas   = 3
	pods       = 300
	epochs     = 3 // pod incarnations: request (with duplicates), release, again
	maxWant    = 3
	activePods = 40 // pods working at once
	opTimeout  = 3 * time.Minute
)

// replica is one server process slot with fixed addresses; the killer
// replaces its process.
type replica struct {
	i          int
	grpc, http string
	dataDir    string
	conn       *grpc.ClientConn
	mu         sync.Mutex
	proc       *process
}

// epoch is one incarnation of a pod: its answers and its release.
type epoch struct {
	pod, uid     string
	want         int
	answers      [][]string // sorted hex pubkeys, one per successful request
	first        time.Time  // when the first answer arrived
	releaseStart time.Time  // zero: not released
}

// Three server processes on one PostgreSQL database and one dev chain serve
// 300 pods (every request sent 2-3 times at once to different replicas,
// releases in between) while a killer SIGKILLs a random replica every few
// seconds and restarts it; clients retry on other replicas. Then the
// database, the chain and every answer are checked.
func TestReplicasUnderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("long test")
	}
	storeURL := pgtest.NewSchema(t)
	ctx := t.Context()

	chainCtx, cancel := context.WithTimeout(ctx, time.Minute)
	chain, err := devchain.Start(chainCtx, devchain.Config{BlockTime: 250 * time.Millisecond, RPCAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	cancel()
	if err != nil {
		t.Fatalf("dev chain: %v", err)
	}
	t.Cleanup(func() { chain.Close() })
	dir := t.TempDir()
	funderFile := filepath.Join(dir, "funder.hex")
	if err := os.WriteFile(funderFile, []byte(devchain.DevKeyHex), 0o600); err != nil {
		t.Fatal(err)
	}
	serveArgs := []string{"--store", storeURL, "--deposits", "chain", "--eth1-rpc", chain.RPCEndpoint(),
		"--deposit-contract", chain.DepositContract().Hex(), "--funder-key-file", funderFile,
		"--confirmations", "1", "--dev-rpc-addr", "none"}

	reps := make([]*replica, replicas)
	for i := range reps {
		r := &replica{i: i, grpc: freeAddr(t), http: freeAddr(t), dataDir: filepath.Join(dir, fmt.Sprintf("r%d", i))}
		p, err := serve(t, r.dataDir, r.grpc, r.http, nil, serveArgs...)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		r.proc = p
		if r.conn, err = grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Fatal(err)
		}
		reps[i] = r
	}
	// stopAll stops every replica (SIGTERM) once; a replica's exit error
	// fails the test.
	stopAll := func() {
		for _, r := range reps {
			r.mu.Lock()
			if r.proc != nil {
				if err := r.proc.stop(20 * time.Second); err != nil {
					t.Errorf("replica %d: %v\n%s", r.i, err, tail(r.proc.stderr.String(), 2000))
				}
				r.proc = nil
			}
			r.mu.Unlock()
		}
	}
	t.Cleanup(func() {
		for _, r := range reps {
			r.conn.Close()
		}
		stopAll()
	})

	// The killer.
	var kills, restarts atomic.Int32
	stopKiller := make(chan struct{})
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(time.Duration(1500+rand.IntN(1500)) * time.Millisecond):
			}
			r := reps[rand.IntN(replicas)]
			r.mu.Lock()
			r.proc.kill()
			kills.Add(1)
			time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
			for attempt := 0; ; attempt++ {
				p, err := serve(t, r.dataDir, r.grpc, r.http, nil, serveArgs...)
				if err == nil {
					r.proc = p
					restarts.Add(1)
					break
				}
				if attempt == 5 {
					t.Errorf("replica %d does not restart: %v", r.i, err)
					r.proc = nil
					r.mu.Unlock()
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
			r.mu.Unlock()
		}
	}()

	// The pods.
	var (
		mu       sync.Mutex
		all      []*epoch
		requests atomic.Int32
		releases atomic.Int32
		retries  atomic.Int32
	)
	sem := make(chan struct{}, activePods)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pod := fmt.Sprintf("ha-pod-%03d", p)
			for e := range epochs {
				// A pod UID as the API server writes it: pod p, epoch e.
				ep := &epoch{pod: pod, uid: fmt.Sprintf("%08x-0000-4000-8000-%012x", p, e), want: 1 + rand.IntN(maxWant)}
				dups := 2 + rand.IntN(2)
				base := rand.IntN(replicas)
				answers := make([][]string, dups)
				times := make([]time.Time, dups)
				var dwg sync.WaitGroup
				for d := range dups {
					dwg.Go(func() {
						var keys []string
						err := call(ctx, reps, base+d, &retries, func(ctx context.Context, c pb.KeyServiceClient) error {
							r, err := c.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, PodUid: ep.uid, Count: uint32(ep.want)})
							if err != nil {
								return err
							}
							keys = keys[:0]
							for _, k := range r.GetKeys() {
								keys = append(keys, hex.EncodeToString(k.GetPubkey()))
							}
							return nil
						})
						requests.Add(1)
						if err != nil {
							t.Errorf("RequestKeys(%s, %d): %v", pod, ep.want, err)
							return
						}
						slices.Sort(keys)
						answers[d], times[d] = keys, time.Now()
					})
				}
				dwg.Wait()
				for d := range dups {
					if answers[d] != nil {
						ep.answers = append(ep.answers, answers[d])
						if ep.first.IsZero() || times[d].Before(ep.first) {
							ep.first = times[d]
						}
					}
				}
				if e < epochs-1 || rand.IntN(2) == 0 {
					ep.releaseStart = time.Now()
					err := call(ctx, reps, rand.IntN(replicas), &retries, func(ctx context.Context, c pb.KeyServiceClient) error {
						_, err := c.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: pod, PodUid: ep.uid})
						return err
					})
					releases.Add(1)
					if err != nil {
						t.Errorf("ReleaseKeys(%s): %v", pod, err)
					}
				}
				mu.Lock()
				all = append(all, ep)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stopKiller)
	<-killerDone
	elapsed := time.Since(start)
	t.Logf("%d requests, %d releases over %d pods in %s (%d retries); %d replicas killed with SIGKILL and %d restarted",
		requests.Load(), releases.Load(), pods, elapsed.Round(time.Millisecond), retries.Load(), kills.Load(), restarts.Load())
	if requests.Load() < 2000 {
		t.Errorf("only %d requests; the test promises at least 2000", requests.Load())
	}
	if kills.Load() < 3 {
		t.Errorf("only %d kills during the run; want several", kills.Load())
	}
	if t.Failed() {
		return
	}
	// The check reads the store several times (a full listing, then one
	// per state): running replicas would move cooling-down keys to
	// available between those reads (their sweeps).
	stopAll()
	checkInvariants(t, storeURL, chain, all)
}

// call runs op against replica first (mod replicas), moving to the next
// replica after any failure but a final answer, until opTimeout.
func call(ctx context.Context, reps []*replica, first int, retries *atomic.Int32, op func(context.Context, pb.KeyServiceClient) error) error {
	deadline := time.Now().Add(opTimeout)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		r := reps[(first+attempt)%len(reps)]
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		err := op(actx, pb.NewKeyServiceClient(r.conn))
		cancel()
		if err == nil {
			return nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
			return err
		}
		last = err
		retries.Add(1)
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
	}
	return fmt.Errorf("gave up after %s: %w", opTimeout, last)
}

func checkInvariants(t *testing.T, storeURL string, chain *devchain.Chain, all []*epoch) {
	ctx := t.Context()
	st, err := postgres.Open(ctx, storeURL, postgres.Options{Logger: slog.New(slog.DiscardHandler), NoMigrate: true, ApplicationName: "pkmanager-check"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// The store's own rules: one state per key, no key in two pods, one
	// UID per pod, counts agree.
	storetest.CheckInvariants(t, st)

	var keys []store.Key
	if err := st.ListKeys(ctx, store.ListOptions{WithDeposit: true}, func(k store.Key) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	byHex := map[string]store.Key{}
	podSet := map[string][]string{}
	for _, k := range keys {
		h := hex.EncodeToString(k.Pubkey[:])
		byHex[h] = k
		if k.State == store.StateAssigned {
			podSet[k.Pod] = append(podSet[k.Pod], h)
		}
		switch k.State {
		case store.StateAssigned, store.StateAvailable, store.StateCoolingDown:
		default:
			t.Errorf("key %s is %s (reason %q): every request was answered, so no key should be", k.Pubkey, k.State, k.RetiredReason)
		}
		// A key minted for a pod is assigned to it when its deposit is
		// confirmed; one never assigned was minted although no pod needed
		// it (a shortfall minted twice).
		if k.LastPod == "" {
			t.Errorf("key %s was minted but never handed to a pod", k.Pubkey)
		}
	}
	for pod := range podSet {
		slices.Sort(podSet[pod])
	}

	// Every answer of one pod incarnation is the same set; the last
	// incarnation's set is what the store holds (nothing, once released).
	last := map[string]*epoch{}
	handed := map[string][]*epoch{}
	answers := 0
	for _, ep := range all {
		last[ep.pod] = ep // appended in order per pod
		if len(ep.answers) == 0 {
			t.Errorf("pod %s (%s) got no answer", ep.pod, ep.uid)
			continue
		}
		answers += len(ep.answers)
		for i, a := range ep.answers {
			if !slices.Equal(a, ep.answers[0]) {
				t.Errorf("pod %s (%s): answer %d %v differs from answer 0 %v", ep.pod, ep.uid, i, a, ep.answers[0])
			}
		}
		if len(ep.answers[0]) != ep.want {
			t.Errorf("pod %s (%s) got %d keys, asked for %d", ep.pod, ep.uid, len(ep.answers[0]), ep.want)
		}
		for _, h := range ep.answers[0] {
			if _, ok := byHex[h]; !ok {
				t.Errorf("key %s handed to %s is not in the store: lost", h, ep.pod)
			}
			handed[h] = append(handed[h], ep)
		}
	}
	for pod, ep := range last {
		got := podSet[pod]
		if !ep.releaseStart.IsZero() {
			if len(got) != 0 {
				t.Errorf("pod %s was released but the store gives it %v", pod, got)
			}
			continue
		}
		if len(ep.answers) > 0 && !slices.Equal(got, ep.answers[0]) {
			t.Errorf("pod %s: answered %v, the store holds %v", pod, ep.answers[0], got)
		}
	}
	// No key in two pods at once: two incarnations that got the same key
	// must not both have held it at one moment (held from the first answer
	// until the release started).
	overlaps := 0
	for h, eps := range handed {
		for i := range eps {
			for j := i + 1; j < len(eps); j++ {
				a, b := eps[i], eps[j]
				from := maxTime(a.first, b.first)
				to := minTime(releaseOrForever(a), releaseOrForever(b))
				if from.Before(to) {
					overlaps++
					t.Errorf("key %s held by %s (%s) and %s (%s) at once (%s)", h, a.pod, a.uid, b.pod, b.uid, from.Format(time.StampMicro))
				}
			}
		}
	}

	// No deposit sent twice, every key deposited once, as minted.
	want := map[store.Pubkey]*store.DepositData{}
	for _, k := range keys {
		if k.Deposit == nil {
			t.Errorf("key %s has no deposit data", k.Pubkey)
			continue
		}
		want[k.Pubkey] = k.Deposit
	}
	deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), want, uint64(len(want)))
	t.Logf("checked: %d keys in the store, %d answers over %d pod incarnations all consistent, %d keys handed out, 0 held twice (%d overlaps), %d deposits each on chain once",
		len(keys), answers, len(all), len(handed), overlaps, len(want))
}

func releaseOrForever(e *epoch) time.Time {
	if e.releaseStart.IsZero() {
		return time.Unix(1<<40, 0)
	}
	return e.releaseStart
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
