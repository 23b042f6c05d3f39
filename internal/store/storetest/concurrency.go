package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

var concurrencyTests = []testCase{
	{name: "Concurrent/ClaimsForDistinctPods", fn: testConcurrentClaims},
	{name: "Concurrent/DuplicateClaims", fn: testConcurrentDuplicateClaims},
	{name: "Concurrent/DuplicateAddAssigned", fn: testConcurrentDuplicateAddAssigned},
	{name: "Concurrent/ReleaseAndClaim", fn: testConcurrentChurn},
	{name: "Concurrent/DemandEqualsPool", fn: testConcurrentDemandEqualsPool},
	{name: "Concurrent/RetireAndClaim", fn: testConcurrentRetire},
	{name: "Concurrent/ReserveIndices", fn: testConcurrentReserveIndices},
	{name: "Concurrent/PendingConfirmClaimRelease", fn: testConcurrentPending},
}

// errList collects errors from goroutines, which must not call t.Fatal.
type errList struct {
	mu   sync.Mutex
	errs []error
}

func (e *errList) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

// report fails t with the first errors collected.
func (e *errList) report(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, err := range e.errs {
		if i == 20 {
			t.Errorf("... and %d more errors", len(e.errs)-i)
			break
		}
		t.Error(err)
	}
}

// run starts n goroutines running fn(g) and waits for them.
func run(n int, fn func(g int)) {
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() { fn(g) })
	}
	wg.Wait()
}

// 32 goroutines claim for distinct pods from a pool too small for all of
// them: no key may reach two pods, and the shortfalls must add up.
func testConcurrentClaims(t *testing.T, s store.Store) {
	const (
		pool       = 150
		goroutines = 32
		perG       = 12
	)
	addKeys(t, s, store.StateAvailable, at(0), rng(1, pool)...)
	type result struct {
		pod  string
		want int
		c    store.Claim
	}
	results := make([][]result, goroutines)
	var errs errList
	run(goroutines, func(g int) {
		for i := range perG {
			p := store.ClaimParams{Pod: fmt.Sprintf("pod-%d-%d", g, i), PodUID: fmt.Sprintf("uid-%d-%d", g, i), Want: 1 + (g+i)%3, Now: at(1)}
			c, err := s.Claim(t.Context(), p)
			if err != nil {
				errs.add(fmt.Errorf("Claim(%s): %w", p.Pod, err))
				continue
			}
			results[g] = append(results[g], result{p.Pod, p.Want, c})
		}
	})
	errs.report(t)
	owner := make(map[store.Pubkey]string)
	wanted, held := 0, 0
	for _, rs := range results {
		for _, r := range rs {
			wanted += r.want
			held += len(r.c.Keys)
			if len(r.c.Keys)+r.c.Shortfall != r.want || r.c.Recycled != len(r.c.Keys) {
				t.Errorf("%s: %d keys, shortfall %d, recycled %d; want %d keys in all, all recycled", r.pod, len(r.c.Keys), r.c.Shortfall, r.c.Recycled, r.want)
			}
			for _, k := range r.c.Keys {
				if prev, dup := owner[k.Pubkey]; dup {
					t.Errorf("key %s handed to both %s and %s", name(k.Pubkey), prev, r.pod)
				}
				owner[k.Pubkey] = r.pod
				if k.Pod != r.pod || k.State != store.StateAssigned {
					t.Errorf("key %s in the claim of %s: pod %q, state %s", name(k.Pubkey), r.pod, k.Pod, k.State)
				}
			}
			if got := pubkeysOf(list(t, s, store.ListOptions{Pod: r.pod})); !slices.Equal(got, pubkeysOf(r.c.Keys)) {
				t.Errorf("ListKeys(%s) = %s, its claim returned %s", r.pod, names(got), names(pubkeysOf(r.c.Keys)))
			}
		}
	}
	if wanted <= pool {
		t.Fatalf("test setup: %d keys wanted from a pool of %d; the pool must run out", wanted, pool)
	}
	if held != pool {
		t.Errorf("pods hold %d keys, want the whole pool of %d", held, pool)
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: pool})
}

// Concurrent identical Claims for one pod all see one and the same set.
func testConcurrentDuplicateClaims(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), rng(1, 10)...)
	const n = 16
	results := make([]store.Claim, n)
	errs := make([]error, n)
	run(n, func(g int) {
		results[g], errs[g] = s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A", Want: 3, Now: at(1)})
	})
	recycled := 0
	for g := range n {
		if errs[g] != nil {
			t.Fatalf("Claim %d: %v", g, errs[g])
		}
		recycled += results[g].Recycled
		if !reflect.DeepEqual(results[g].Keys, results[0].Keys) || results[g].Shortfall != 0 {
			t.Errorf("Claim %d returned %s, Claim 0 returned %s", g, names(pubkeysOf(results[g].Keys)), names(pubkeysOf(results[0].Keys)))
		}
	}
	if recycled != 3 || len(results[0].Keys) != 3 {
		t.Errorf("%d keys recycled in all, set of %d; want 3 and 3", recycled, len(results[0].Keys))
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 3, store.StateAvailable: 7})
}

// Concurrent AddAssigned calls for one pod assign what it lacks exactly once.
func testConcurrentDuplicateAddAssigned(t *testing.T, s store.Store) {
	const n = 8
	results := make([]store.Claim, n)
	errs := make([]error, n)
	run(n, func(g int) {
		results[g], errs[g] = s.AddAssigned(t.Context(), store.AddParams{
			Pod: "pod-a", PodUID: "A", Want: 2, Keys: nks(10+2*g, 11+2*g), Now: at(1),
		})
	})
	for g := range n {
		if errs[g] != nil {
			t.Fatalf("AddAssigned %d: %v", g, errs[g])
		}
		if len(results[g].Keys) != 2 || results[g].Shortfall != 0 {
			t.Errorf("AddAssigned %d: set %s, shortfall %d; want 2 keys", g, names(pubkeysOf(results[g].Keys)), results[g].Shortfall)
		}
	}
	final := pubkeysOf(list(t, s, store.ListOptions{Pod: "pod-a"}))
	if len(final) != 2 {
		t.Fatalf("pod-a holds %s, want 2 keys", names(final))
	}
	// Every call returns either the set it made or the one it found.
	for g := range n {
		if got := pubkeysOf(results[g].Keys); !slices.Equal(got, final) {
			t.Errorf("AddAssigned %d returned %s, pod-a holds %s", g, names(got), names(final))
		}
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 2, store.StateAvailable: 2*n - 2})
}

// Pods repeatedly claim and release (with a zero delay) while a sweeper
// runs: no key is ever held by two pods, and since the pool fits all pods,
// every claim is filled.
func testConcurrentChurn(t *testing.T, s store.Store) {
	const (
		goroutines = 12
		want       = 2
		rounds     = 20
	)
	addKeys(t, s, store.StateAvailable, at(0), rng(1, goroutines*want)...)
	var (
		mu    sync.Mutex
		owner = make(map[store.Pubkey]string)
	)
	var errs errList
	stop := make(chan struct{})
	var sweeper sync.WaitGroup
	sweeper.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Sweep(t.Context(), at(1)); err != nil {
				errs.add(fmt.Errorf("Sweep: %w", err))
				return
			}
		}
	})
	run(goroutines, func(g int) {
		pod := fmt.Sprintf("churn-%d", g)
		for r := range rounds {
			uid := fmt.Sprintf("uid-%d-%d", g, r) // each round is a new pod incarnation
			c, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: at(1)})
			if err != nil {
				errs.add(fmt.Errorf("Claim(%s): %w", pod, err))
				return
			}
			if c.Shortfall != 0 || len(c.Keys) != want {
				errs.add(fmt.Errorf("Claim(%s) round %d: %d keys, shortfall %d; the pool fits every pod", pod, r, len(c.Keys), c.Shortfall))
			}
			mu.Lock()
			for _, k := range c.Keys {
				if prev, held := owner[k.Pubkey]; held {
					errs.add(fmt.Errorf("key %s handed to %s while %s holds it", name(k.Pubkey), pod, prev))
				}
				owner[k.Pubkey] = pod
			}
			// Forget ownership before releasing: once Release starts,
			// another pod may legitimately get the keys.
			for _, k := range c.Keys {
				delete(owner, k.Pubkey)
			}
			mu.Unlock()
			n, err := s.Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: uid, Until: at(1), Now: at(1)})
			if err != nil {
				errs.add(fmt.Errorf("Release(%s): %w", pod, err))
				return
			}
			if n != len(c.Keys) {
				errs.add(fmt.Errorf("Release(%s) = %d, its claim held %d", pod, n, len(c.Keys)))
			}
		}
	})
	close(stop)
	sweeper.Wait()
	errs.report(t)
	c := counts(t, s)
	if c[store.StateAvailable]+c[store.StateCoolingDown] != goroutines*want || c[store.StateAssigned] != 0 {
		t.Errorf("counts %v: want all %d keys back in the pool", c, goroutines*want)
	}
}

// Pods whose total demand equals the pool claim at once, again and again
// (released with a zero delay, a sweeper running), plain, all or nothing,
// and with a reservation token: since the pool always covers every claim,
// none may report a shortfall or reserve keys to mint, however the claims
// interleave.
func testConcurrentDemandEqualsPool(t *testing.T, s store.Store) {
	const (
		goroutines = 15
		want       = 3
		rounds     = 10
	)
	addKeys(t, s, store.StateAvailable, at(0), rng(1, goroutines*want)...)
	var errs errList
	stop := make(chan struct{})
	var sweeper sync.WaitGroup
	sweeper.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Sweep(t.Context(), at(1)); err != nil {
				errs.add(fmt.Errorf("Sweep: %w", err))
				return
			}
		}
	})
	start := make(chan struct{})
	var workers sync.WaitGroup
	for g := range goroutines {
		workers.Go(func() {
			<-start
			pod := fmt.Sprintf("demand-%d", g)
			for r := range rounds {
				uid := fmt.Sprintf("uid-%d-%d", g, r)
				p := store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: at(1)}
				switch g % 3 {
				case 1:
					p.AllOrNothing = true
				case 2:
					p.ReserveToken, p.ReserveUntil = fmt.Sprintf("tok-%d-%d", g, r), at(3600)
				}
				c, err := s.Claim(t.Context(), p)
				if err != nil {
					errs.add(fmt.Errorf("Claim(%s): %w", pod, err))
					return
				}
				if len(c.Keys) != want || c.Shortfall != 0 || c.Recycled != want || c.Reservation != nil {
					errs.add(fmt.Errorf("Claim(%s) round %d (all or nothing %v, token %q): %d keys, shortfall %d, recycled %d, reservation %+v; the pool covers every pod",
						pod, r, p.AllOrNothing, p.ReserveToken, len(c.Keys), c.Shortfall, c.Recycled, c.Reservation))
					if c.Reservation != nil {
						_ = s.ReleaseReservation(t.Context(), pod, c.Reservation.Token)
					}
				}
				if _, err := s.Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: uid, Until: at(1), Now: at(1)}); err != nil {
					errs.add(fmt.Errorf("Release(%s): %w", pod, err))
					return
				}
			}
		})
	}
	close(start)
	workers.Wait()
	close(stop)
	sweeper.Wait()
	errs.report(t)
	c := counts(t, s)
	if c[store.StateAvailable]+c[store.StateCoolingDown] != goroutines*want {
		t.Errorf("counts %v: want all %d keys back in the pool", c, goroutines*want)
	}
}

// Keys retired while pods claim end up retired and in no pod.
func testConcurrentRetire(t *testing.T, s store.Store) {
	const keys = 60
	addKeys(t, s, store.StateAvailable, at(0), rng(1, keys)...)
	var errs errList
	run(9, func(g int) {
		if g == 8 {
			for i := 1; i <= keys; i += 2 {
				if err := s.Retire(t.Context(), PK(i), "odd", at(2)); err != nil {
					errs.add(fmt.Errorf("Retire(%s): %w", name(PK(i)), err))
				}
			}
			return
		}
		for r := range 5 {
			pod := fmt.Sprintf("pod-%d-%d", g, r)
			if _, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, Want: 3, Now: at(1)}); err != nil {
				errs.add(fmt.Errorf("Claim(%s): %w", pod, err))
			}
		}
	})
	errs.report(t)
	for _, k := range list(t, s, store.ListOptions{}) {
		odd := k.Pubkey[4]%2 == 1
		if odd != (k.State == store.StateRetired) {
			t.Errorf("key %s is %s", name(k.Pubkey), k.State)
		}
	}
	c := counts(t, s)
	if c[store.StateRetired] != keys/2 || c[store.StateAssigned]+c[store.StateAvailable] != keys/2 {
		t.Errorf("counts %v: want %d retired and %d assigned or available", c, keys/2, keys/2)
	}
}

// Concurrent reservations get disjoint ranges that together are 0..n-1.
func testConcurrentReserveIndices(t *testing.T, s store.Store) {
	const goroutines, perG = 16, 8
	type span struct{ first, n uint32 }
	spans := make([][]span, goroutines)
	var errs errList
	run(goroutines, func(g int) {
		for i := range perG {
			n := 1 + (g*i)%5
			first, err := s.ReserveIndices(t.Context(), n)
			if err != nil {
				errs.add(err)
				continue
			}
			spans[g] = append(spans[g], span{first, uint32(n)})
		}
	})
	errs.report(t)
	all := slices.Concat(spans...)
	slices.SortFunc(all, func(a, b span) int { return int(a.first) - int(b.first) })
	next := uint32(0)
	for _, sp := range all {
		if sp.first != next {
			t.Fatalf("reservation at %d (of %d), want it to start at %d: overlapping or missing indices", sp.first, sp.n, next)
		}
		next += sp.n
	}
	if got := reserve(t, s, 1); got != next {
		t.Errorf("next reservation = %d, want %d", got, next)
	}
}

// For each pod, one goroutine adds pending keys intended for it while
// another claims and releases it, and a third confirms every key added; an
// observer checks consistent listings meanwhile. Every call uses the same
// Want per pod, so a pod never counts more than Want assigned and pending
// keys, no key is handed to two pods, and a pod's keys share one UID.
func testConcurrentPending(t *testing.T, s store.Store) {
	const (
		pods   = 4
		rounds = 12
		want   = 3
		pool   = 10
	)
	addKeys(t, s, store.StateAvailable, at(0), rng(1, pool)...)
	var (
		errs  errList
		mu    sync.Mutex
		owner = make(map[store.Pubkey]string)
	)
	podName := func(g int) string { return fmt.Sprintf("pend-%d", g) }

	stop := make(chan struct{})
	var observer sync.WaitGroup
	observed := 0
	observer.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			held := make(map[string]int)
			uids := make(map[string]string)
			err := s.ListKeys(t.Context(), store.ListOptions{}, func(k store.Key) error {
				if k.State == store.StateAssigned && k.Pod == "" {
					return fmt.Errorf("key %s assigned without a pod", name(k.Pubkey))
				}
				if k.Pod == "" {
					return nil
				}
				if k.State != store.StateAssigned && k.State != store.StatePendingDeposit {
					return fmt.Errorf("key %s is %s with pod %s", name(k.Pubkey), k.State, k.Pod)
				}
				if uid, ok := uids[k.Pod]; ok && uid != k.PodUID {
					return fmt.Errorf("pod %s holds keys under UIDs %q and %q", k.Pod, uid, k.PodUID)
				}
				uids[k.Pod] = k.PodUID
				if held[k.Pod]++; held[k.Pod] > want {
					return fmt.Errorf("pod %s counts more than %d assigned and pending keys", k.Pod, want)
				}
				return nil
			})
			if err != nil {
				errs.add(fmt.Errorf("observer: %w", err))
				return
			}
			observed++
		}
	})

	var workers sync.WaitGroup
	for g := range pods {
		pod, uid := podName(g), fmt.Sprintf("uid-%d", g)
		added := make(chan store.Pubkey, rounds*2)
		workers.Go(func() { // adder
			defer close(added)
			for r := range rounds {
				base := 1000 + 100*g + 2*r
				err := s.AddPending(t.Context(), store.AddParams{Pod: pod, PodUID: uid, Want: want, Keys: nks(base, base+1), Now: at(1)})
				if err != nil {
					errs.add(fmt.Errorf("AddPending(%s): %w", pod, err))
					return
				}
				added <- PK(base)
				added <- PK(base + 1)
			}
		})
		workers.Go(func() { // confirmer
			block := uint64(1)
			for pk := range added {
				k, err := s.ConfirmDeposit(t.Context(), pk, block, at(1))
				block++
				if err != nil {
					errs.add(fmt.Errorf("ConfirmDeposit(%s): %w", name(pk), err))
					continue
				}
				// Intended for this pod, or a spare (never added or
				// un-targeted): it joins this pod or the pool, nothing else.
				if ok := (k.State == store.StateAssigned && k.Pod == pod && k.PodUID == uid) ||
					(k.State == store.StateAvailable && k.Pod == ""); !ok {
					errs.add(fmt.Errorf("ConfirmDeposit(%s) for %s = %s", name(pk), pod, describe(k)))
				}
			}
		})
		workers.Go(func() { // claimer
			for r := range rounds {
				c, err := s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: at(1)})
				if err != nil {
					errs.add(fmt.Errorf("Claim(%s): %w", pod, err))
					return
				}
				if n := len(c.Keys) + len(c.Pending); n > want || c.Shortfall != want-n {
					errs.add(fmt.Errorf("Claim(%s) round %d: %d keys, %d pending, shortfall %d; want at most %d in all",
						pod, r, len(c.Keys), len(c.Pending), c.Shortfall, want))
				}
				for _, k := range c.Keys {
					if k.State != store.StateAssigned || k.Pod != pod || k.PodUID != uid {
						errs.add(fmt.Errorf("Claim(%s) returned %s", pod, describe(k)))
					}
				}
				for _, k := range c.Pending {
					if k.State != store.StatePendingDeposit || k.Pod != pod || k.PodUID != uid {
						errs.add(fmt.Errorf("Claim(%s) returned as pending %s", pod, describe(k)))
					}
				}
				mu.Lock()
				for _, k := range c.Keys {
					if prev, held := owner[k.Pubkey]; held {
						errs.add(fmt.Errorf("key %s handed to %s while %s holds it", name(k.Pubkey), pod, prev))
					}
					owner[k.Pubkey] = pod
				}
				for _, k := range c.Keys {
					delete(owner, k.Pubkey)
				}
				mu.Unlock()
				if _, err := s.Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: uid, Until: at(1), Now: at(1), Reason: "churn"}); err != nil {
					errs.add(fmt.Errorf("Release(%s): %w", pod, err))
					return
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	observer.Wait()
	errs.report(t)
	if observed == 0 {
		t.Error("the observer never completed a listing")
	}
	c := counts(t, s)
	total := pool + pods*rounds*2
	if c[store.StatePendingDeposit] != 0 || c[store.StateAssigned]+c[store.StateAvailable]+c[store.StateCoolingDown] != total {
		t.Errorf("counts %v: want all %d keys confirmed, none pending", c, total)
	}
	releases := 0
	for _, e := range auditTrail(t, s) {
		if e.Action == "release" && e.Reason == "churn" {
			releases++
		}
	}
	if releases != pods*rounds {
		t.Errorf("%d release events, want %d", releases, pods*rounds)
	}
}
