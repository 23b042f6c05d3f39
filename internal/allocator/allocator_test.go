package allocator_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// The allocator's rules are tested against the real bbolt store. The minter
// is a test double that makes well-formed records fast (minting itself is
// proven in package mint and in the integration test).

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fakeMinter struct {
	kek   *seal.KEK
	calls atomic.Int64
	keys  atomic.Int64
	// gate, when set, is called before minting (to block or fail).
	gate func(ctx context.Context, n int) error
}

func (m *fakeMinter) Mint(ctx context.Context, n int) ([]store.NewKey, error) {
	m.calls.Add(1)
	if m.gate != nil {
		if err := m.gate(ctx, n); err != nil {
			return nil, err
		}
	}
	out := make([]store.NewKey, n)
	for i := range out {
		var pub store.Pubkey
		if _, err := rand.Read(pub[:]); err != nil {
			return nil, err
		}
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		sealed, err := m.kek.Seal(secret, pub[:])
		if err != nil {
			return nil, err
		}
		out[i] = store.NewKey{Pubkey: pub, SealedSecret: sealed, Origin: store.OriginRandom}
	}
	m.keys.Add(int64(n))
	return out, nil
}

type env struct {
	st     store.Store
	kek    *seal.KEK
	minter *fakeMinter
	clock  *clock
	alloc  *allocator.Allocator
}

func newEnv(t *testing.T, mod func(*allocator.Config)) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "pk.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, err := seal.ParseKEK(strings.Repeat("11", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, kek: kek, minter: &fakeMinter{kek: kek}, clock: &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	cfg := allocator.Config{Store: st, Opener: kek, Minter: e.minter, ReuseDelay: 10 * time.Minute, Now: e.clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	e.alloc, err = allocator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) request(t *testing.T, pod string, n int) allocator.Result {
	t.Helper()
	r, err := e.alloc.Request(context.Background(), pod, "", n)
	if err != nil {
		t.Fatalf("Request(%s, %d): %v", pod, n, err)
	}
	return r
}

func (e *env) counts(t *testing.T) map[store.State]int {
	t.Helper()
	c, err := e.st.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pubkeys(r allocator.Result) map[store.Pubkey]bool {
	m := make(map[store.Pubkey]bool, len(r.Keys))
	for _, k := range r.Keys {
		m[k.Pubkey] = true
	}
	return m
}

func sameSet(a, b allocator.Result) bool {
	if len(a.Keys) != len(b.Keys) {
		return false
	}
	pa := pubkeys(a)
	for _, k := range b.Keys {
		if !pa[k.Pubkey] {
			return false
		}
	}
	return true
}

func TestRequestMintsThenReturnsSameSet(t *testing.T) {
	e := newEnv(t, nil)
	first := e.request(t, "validator-0", 4)
	if len(first.Keys) != 4 || first.Minted != 4 || first.Recycled != 0 {
		t.Fatalf("first: %d keys, minted %d, recycled %d", len(first.Keys), first.Minted, first.Recycled)
	}
	for _, k := range first.Keys {
		if len(k.Secret) != 32 {
			t.Fatalf("secret of %d bytes", len(k.Secret))
		}
	}
	again := e.request(t, "validator-0", 4)
	if !sameSet(first, again) || again.Minted != 0 || again.Recycled != 0 {
		t.Fatalf("repeat request changed the set or minted (minted %d)", again.Minted)
	}
	for i := range again.Keys {
		for j := range first.Keys {
			if again.Keys[i].Pubkey == first.Keys[j].Pubkey && !bytes.Equal(again.Keys[i].Secret, first.Keys[j].Secret) {
				t.Fatal("same pubkey, different secret")
			}
		}
	}
	other := e.request(t, "validator-1", 4)
	for pk := range pubkeys(other) {
		if pubkeys(first)[pk] {
			t.Fatal("two pods share a key")
		}
	}
	if c := e.counts(t); c[store.StateAssigned] != 8 {
		t.Fatalf("counts %v", c)
	}
}

func TestPodHoldingMoreGetsExactlyItsSet(t *testing.T) {
	e := newEnv(t, nil)
	first := e.request(t, "validator-0", 4)
	fewer := e.request(t, "validator-0", 2)
	if !sameSet(first, fewer) {
		t.Fatalf("asking for fewer returned %d keys, want the pod's 4", len(fewer.Keys))
	}
}

func TestTopUp(t *testing.T) {
	e := newEnv(t, nil)
	first := e.request(t, "validator-0", 2)
	more := e.request(t, "validator-0", 5)
	if len(more.Keys) != 5 || more.Minted != 3 {
		t.Fatalf("top-up: %d keys, minted %d", len(more.Keys), more.Minted)
	}
	for pk := range pubkeys(first) {
		if !pubkeys(more)[pk] {
			t.Fatal("top-up dropped a key the pod held")
		}
	}
}

func TestZeroMeansOne(t *testing.T) {
	e := newEnv(t, nil)
	if r := e.request(t, "validator-0", 0); len(r.Keys) != 1 {
		t.Fatalf("n=0 gave %d keys", len(r.Keys))
	}
}

func TestReleaseThenRecycleAfterDelay(t *testing.T) {
	e := newEnv(t, nil)
	a := e.request(t, "validator-a", 3)
	rel, err := e.alloc.Release(context.Background(), "validator-a", "")
	if err != nil || rel.Released != 3 || !rel.CoolingUntil.Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("release: %+v %v", rel, err)
	}
	// During the reuse delay the keys are not handed out: new keys are minted.
	b := e.request(t, "validator-b", 3)
	if b.Recycled != 0 || b.Minted != 3 {
		t.Fatalf("during cooling-down: recycled %d minted %d", b.Recycled, b.Minted)
	}
	for pk := range pubkeys(b) {
		if pubkeys(a)[pk] {
			t.Fatal("a cooling-down key was handed out")
		}
	}
	e.clock.Advance(10 * time.Minute)
	c := e.request(t, "validator-c", 4)
	if c.Recycled != 3 || c.Minted != 1 {
		t.Fatalf("after the delay: recycled %d minted %d", c.Recycled, c.Minted)
	}
	for pk := range pubkeys(a) {
		if !pubkeys(c)[pk] {
			t.Fatal("released key not recycled")
		}
	}
}

func TestZeroReuseDelay(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	a := e.request(t, "validator-a", 2)
	if _, err := e.alloc.Release(context.Background(), "validator-a", ""); err != nil {
		t.Fatal(err)
	}
	b := e.request(t, "validator-b", 2)
	if b.Recycled != 2 || b.Minted != 0 || !sameSet(a, b) {
		t.Fatalf("zero delay: recycled %d minted %d", b.Recycled, b.Minted)
	}
}

func TestRecycleLongestReleasedFirst(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	old := e.request(t, "old", 1)
	mid := e.request(t, "mid", 1)
	if _, err := e.alloc.Release(context.Background(), "mid", ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	if _, err := e.alloc.Release(context.Background(), "old", ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	got := e.request(t, "new", 1)
	if got.Keys[0].Pubkey != mid.Keys[0].Pubkey {
		t.Fatal("did not recycle the longest-released key first")
	}
	got2 := e.request(t, "newer", 1)
	if got2.Keys[0].Pubkey != old.Keys[0].Pubkey {
		t.Fatal("second recycle took the wrong key")
	}
}

func TestReleaseUnknownPodIsNoop(t *testing.T) {
	e := newEnv(t, nil)
	e.request(t, "validator-0", 1)
	rel, err := e.alloc.Release(context.Background(), "nobody", "")
	if err != nil || rel.Released != 0 || !rel.CoolingUntil.IsZero() {
		t.Fatalf("release of unknown pod: %+v %v", rel, err)
	}
	if c := e.counts(t); c[store.StateAssigned] != 1 || c[store.StateCoolingDown] != 0 {
		t.Fatalf("counts changed: %v", c)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.MaxKeysPerRequest = 16 })
	e.request(t, "validator-0", 2)
	before := e.counts(t)
	bad := []struct {
		pod string
		n   int
	}{
		{"", 1},
		{"Validator-0", 1}, // upper case
		{"validator_0", 1}, // underscore
		{"-validator", 1},  // leading dash
		{"validator-", 1},  // trailing dash
		{strings.Repeat("a", 254), 1},
		{"validator-0", 17}, // above the maximum
		{"validator-0", -1},
		{"validator-new", 17},
		{"bad pod", 1},
	}
	for _, c := range bad {
		_, err := e.alloc.Request(context.Background(), c.pod, "", c.n)
		if !errors.Is(err, allocator.ErrInvalidRequest) {
			t.Errorf("Request(%q, %d): err = %v, want ErrInvalidRequest", c.pod, c.n, err)
		}
	}
	if _, err := e.alloc.Release(context.Background(), "Bad_Pod", ""); !errors.Is(err, allocator.ErrInvalidRequest) {
		t.Errorf("Release of invalid name: %v", err)
	}
	if calls := e.minter.calls.Load(); calls != 1 {
		t.Errorf("minter called %d times, want 1 (only the valid request)", calls)
	}
	after := e.counts(t)
	for _, s := range store.States {
		if before[s] != after[s] {
			t.Fatalf("bad input changed the store: %v -> %v", before, after)
		}
	}
	// The longest valid name is accepted.
	e.request(t, strings.Repeat("a", 253), 1)
}

func TestPoolExhaustedWithoutMinterAssignsNothing(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.Minter = nil; c.ReuseDelay = 0 })
	// Fill the pool with 3 available keys.
	keys, err := e.minter.Mint(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddKeys(context.Background(), keys, store.StateAvailable, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	_, err = e.alloc.Request(context.Background(), "validator-0", "", 5)
	if !errors.Is(err, allocator.ErrPoolExhausted) || !strings.Contains(err.Error(), "3 available, 5 requested") {
		t.Fatalf("err = %v, want pool exhausted: 3 available, 5 requested", err)
	}
	if c := e.counts(t); c[store.StateAvailable] != 3 || c[store.StateAssigned] != 0 {
		t.Fatalf("a failed request assigned keys: %v", c)
	}
	r := e.request(t, "validator-0", 3)
	if r.Recycled != 3 {
		t.Fatalf("recycled %d", r.Recycled)
	}
}

func TestMintFailureLosesNothing(t *testing.T) {
	e := newEnv(t, nil)
	held := e.request(t, "validator-0", 1)
	e.minter.gate = func(context.Context, int) error { return errors.New("entropy source broken") }
	if _, err := e.alloc.Request(context.Background(), "validator-0", "", 3); err == nil {
		t.Fatal("request succeeded although minting failed")
	}
	e.minter.gate = nil
	again := e.request(t, "validator-0", 1)
	if !sameSet(held, again) {
		t.Fatal("failed top-up changed the pod's keys")
	}
	if c := e.counts(t); c[store.StateAssigned] != 1 {
		t.Fatalf("counts %v", c)
	}
}

// One pod's slow minting must not stall another pod's recycle-path request:
// no global lock is held across minting.
func TestMintingDoesNotBlockOtherPods(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	e.request(t, "donor", 1)
	if _, err := e.alloc.Release(context.Background(), "donor", ""); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	unblock := make(chan struct{})
	e.minter.gate = func(ctx context.Context, n int) error {
		close(entered)
		select {
		case <-unblock:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	slowDone := make(chan error, 1)
	go func() {
		// Wants 2: recycles the donor's key, then mints 1 and blocks.
		_, err := e.alloc.Request(context.Background(), "slow", "", 2)
		slowDone <- err
	}()
	<-entered
	e.minter.gate = nil // later mints do not block... but there is no pool left:
	// release another pod so the fast pod can recycle.
	e.request(t, "donor2", 1)
	if _, err := e.alloc.Release(context.Background(), "donor2", ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fast, err := e.alloc.Request(ctx, "fast", "", 1)
	if err != nil {
		t.Fatalf("recycle request stalled behind another pod's minting: %v", err)
	}
	if fast.Recycled != 1 {
		t.Fatalf("fast request recycled %d", fast.Recycled)
	}
	close(unblock)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
}

// A duplicate request for a pod waits for the first and gets the same set;
// a waiting request gives up when its context ends.
func TestDuplicateWaitsAndCancellation(t *testing.T) {
	e := newEnv(t, nil)
	entered := make(chan struct{})
	unblock := make(chan struct{})
	var once sync.Once
	e.minter.gate = func(ctx context.Context, n int) error {
		once.Do(func() { close(entered) })
		<-unblock
		return nil
	}
	results := make(chan allocator.Result, 2)
	go func() { results <- e.request(t, "validator-0", 3) }()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.alloc.Request(ctx, "validator-0", "", 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting duplicate: err = %v, want deadline exceeded", err)
	}
	go func() { results <- e.request(t, "validator-0", 3) }()
	close(unblock)
	a, b := <-results, <-results
	if !sameSet(a, b) || len(a.Keys) != 3 {
		t.Fatal("duplicate requests got different sets")
	}
	if e.minter.calls.Load() != 1 {
		t.Fatalf("minter called %d times for one pod's duplicates", e.minter.calls.Load())
	}
}

func TestUIDMismatch(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.alloc.Request(context.Background(), "validator-0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", 2); err != nil {
		t.Fatal(err)
	}
	_, err := e.alloc.Request(context.Background(), "validator-0", "1f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", 2)
	if !errors.Is(err, allocator.ErrPodUIDMismatch) {
		t.Fatalf("err = %v, want ErrPodUIDMismatch", err)
	}
	if _, err := e.alloc.Release(context.Background(), "validator-0", "1f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"); !errors.Is(err, allocator.ErrPodUIDMismatch) {
		t.Fatalf("release with other UID: %v", err)
	}
	if c := e.counts(t); c[store.StateAssigned] != 2 {
		t.Fatalf("counts %v", c)
	}
}

func TestRetire(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	r := e.request(t, "validator-0", 2)
	if err := e.alloc.Retire(context.Background(), r.Keys[0].Pubkey, "  "); !errors.Is(err, allocator.ErrInvalidRequest) {
		t.Fatalf("retire without reason: %v", err)
	}
	if err := e.alloc.Retire(context.Background(), r.Keys[0].Pubkey, "slashed"); err != nil {
		t.Fatal(err)
	}
	if err := e.alloc.Retire(context.Background(), store.Pubkey{1}, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retire unknown: %v", err)
	}
	if _, err := e.alloc.Release(context.Background(), "validator-0", ""); err != nil {
		t.Fatal(err)
	}
	got := e.request(t, "validator-1", 2)
	for _, k := range got.Keys {
		if k.Pubkey == r.Keys[0].Pubkey {
			t.Fatal("a retired key was handed out")
		}
	}
}

// 200 concurrent requests over 50 pods, 4 duplicates each: duplicates get one
// set, different pods never share a key, and each pod mints once.
func TestConcurrentRequestsNeverShareKeys(t *testing.T) {
	e := newEnv(t, nil)
	const pods, dups = 50, 4
	type answer struct {
		pod  int
		keys map[store.Pubkey]bool
	}
	answers := make(chan answer, pods*dups)
	var wg sync.WaitGroup
	for i := range pods * dups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := i % pods
			r, err := e.alloc.Request(context.Background(), fmt.Sprintf("validator-%d", pod), "", 1+pod%3)
			if err != nil {
				t.Error(err)
				return
			}
			answers <- answer{pod, pubkeys(r)}
		}()
	}
	wg.Wait()
	close(answers)
	byPod := map[int]map[store.Pubkey]bool{}
	owner := map[store.Pubkey]int{}
	for a := range answers {
		if prev, ok := byPod[a.pod]; ok {
			if len(prev) != len(a.keys) {
				t.Fatalf("pod %d: duplicate requests got %d and %d keys", a.pod, len(prev), len(a.keys))
			}
			for pk := range a.keys {
				if !prev[pk] {
					t.Fatalf("pod %d: duplicate requests got different keys", a.pod)
				}
			}
			continue
		}
		byPod[a.pod] = a.keys
		for pk := range a.keys {
			if o, ok := owner[pk]; ok {
				t.Fatalf("key %s handed to pods %d and %d", pk, o, a.pod)
			}
			owner[pk] = a.pod
		}
	}
	if len(byPod) != pods {
		t.Fatalf("%d pods answered", len(byPod))
	}
	if calls := e.minter.calls.Load(); calls != pods {
		t.Fatalf("minter called %d times, want once per pod (%d)", calls, pods)
	}
	storetest.CheckInvariants(t, e.st)
}

// Requests interleaved with releases and a zero reuse delay, so keys move
// between pods while requests run: the store's invariants hold afterwards and
// each pod's stored set is exactly what a request returns.
func TestConcurrentRequestsAndReleases(t *testing.T) {
	e := newEnv(t, func(c *allocator.Config) { c.ReuseDelay = 0 })
	const ops, pods = 300, 40
	var wg sync.WaitGroup
	for i := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := fmt.Sprintf("validator-%d", i%pods)
			if i%5 == 0 {
				if _, err := e.alloc.Release(context.Background(), pod, ""); err != nil {
					t.Error(err)
				}
				return
			}
			if _, err := e.alloc.Request(context.Background(), pod, "", 1+i%3); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	storetest.CheckInvariants(t, e.st)
	for i := range pods {
		pod := fmt.Sprintf("validator-%d", i)
		held := map[store.Pubkey]bool{}
		if err := e.st.ListKeys(context.Background(), store.ListOptions{Pod: pod, States: []store.State{store.StateAssigned}}, func(k store.Key) error {
			held[k.Pubkey] = true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(held) == 0 {
			continue
		}
		r := e.request(t, pod, 1)
		if len(r.Keys) != len(held) {
			t.Fatalf("pod %s: store holds %d keys, request returned %d", pod, len(held), len(r.Keys))
		}
		for _, k := range r.Keys {
			if !held[k.Pubkey] {
				t.Fatalf("pod %s: request returned a key the store does not assign to it", pod)
			}
		}
	}
}

// TestPodUIDValidated: a pod UID must be a Kubernetes UID (the API server's
// lower-case RFC 4122 UUID) or empty; anything else (here 100 KB) is an
// invalid request for every call that takes one, answered before anything
// changes, and its message does not echo the whole value.
func TestPodUIDValidated(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	const good = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	for _, bad := range []string{
		strings.Repeat("u", 100<<10), "uid-1", strings.ToUpper(good), good + "0", good[:35],
		"0f1e2d3c_4b5a-6978-8796-a5b4c3d2e1f0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg", "0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0-",
	} {
		_, err := e.alloc.Request(ctx, "validator-0", bad, 1)
		if !errors.Is(err, allocator.ErrInvalidRequest) || !strings.Contains(err.Error(), "pod UID") || len(err.Error()) > 400 {
			t.Errorf("Request with UID %.40q: %.400v, want an invalid request naming the pod UID", bad, err)
		}
		if _, err := e.alloc.Release(ctx, "validator-0", bad); !errors.Is(err, allocator.ErrInvalidRequest) {
			t.Errorf("Release with UID %.40q: %v", bad, err)
		}
		if _, err := e.alloc.ReleaseHolder(ctx, "validator-0", bad, "test"); !errors.Is(err, allocator.ErrInvalidRequest) {
			t.Errorf("ReleaseHolder with UID %.40q: %v", bad, err)
		}
		if err := e.alloc.AdoptUID(ctx, "validator-0", bad, "test"); !errors.Is(err, allocator.ErrInvalidRequest) {
			t.Errorf("AdoptUID with UID %.40q: %v", bad, err)
		}
	}
	total := 0
	for _, n := range e.counts(t) {
		total += n
	}
	if e.minter.calls.Load() != 0 || total != 0 {
		t.Fatalf("invalid UIDs changed something: %d mints, counts %v", e.minter.calls.Load(), e.counts(t))
	}
	if _, err := e.alloc.Request(ctx, "validator-0", good, 1); err != nil {
		t.Fatalf("Request with a Kubernetes UID: %v", err)
	}
}
