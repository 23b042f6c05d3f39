package lifecycle_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// BenchmarkRefresh100k is one status refresh of 100,000 keys in a bbolt
// store against the fake beacon node (in process, so the allocations and
// time include the node's JSON encoding of 100,000 validators): the calls
// it makes, the time, and the memory allocated.
//
//	go test -run x -bench Refresh100k -benchtime 3x ./internal/lifecycle/
func BenchmarkRefresh100k(b *testing.B) {
	const n = 100_000
	chain := beacon.Chain{GenesisTime: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), GenesisValidatorsRoot: [32]byte{1},
		CapellaForkVersion: [4]byte{3}, SecondsPerSlot: 12 * time.Second, SlotsPerEpoch: 32}
	clk := &clock{t: chain.EpochStart(5000)}
	f := beacontest.NewFake(chain, clk.Now)
	defer f.Close()
	node, err := beacon.Dial(b.Context(), []string{f.URL()}, beacon.Options{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(b.TempDir(), "s.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	batch := make([]store.NewKey, 0, 10_000)
	for i := range n {
		var pk store.Pubkey
		pk[0], pk[1], pk[2], pk[3] = 0xa0, byte(i>>16), byte(i>>8), byte(i)
		batch = append(batch, store.NewKey{Pubkey: pk, SealedSecret: []byte{1}, Origin: store.OriginRandom})
		f.AddValidator(pk, uint64(i))
		if len(batch) == cap(batch) {
			if err := st.AddKeys(b.Context(), batch, store.StateAvailable, clk.Now()); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	w, err := lifecycle.New(lifecycle.Config{Store: st, Beacon: node, Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var calls int64
	var peak uint64
	for range b.N {
		var ms runtime.MemStats
		rep, err := w.Refresh(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapSys)
		if rep.Keys != n || rep.ByStatus["active_ongoing"] != n {
			b.Fatalf("refresh saw %d keys, %v", rep.Keys, rep.ByStatus)
		}
		calls = rep.Calls
		b.Logf("refresh %v: beacon node %v, store %v", rep.Duration, rep.Beacon, rep.Record)
	}
	b.ReportMetric(float64(calls), "calls/refresh")
	b.ReportMetric(float64(peak)/(1<<20), "heap-sys-MiB")
	b.Log(fmt.Sprintf("%d keys: %d beacon API calls per refresh", n, calls))
}
