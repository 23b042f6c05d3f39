package bolt

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// fill adds n available keys (with 61-byte sealed secrets and deposits, like
// production records) in chunks.
func fill(b *testing.B, s *Store, from, n int, now time.Time) {
	b.Helper()
	const chunk = 5000
	for start := from; start < from+n; start += chunk {
		keys := make([]store.NewKey, 0, chunk)
		for i := start; i < min(start+chunk, from+n); i++ {
			keys = append(keys, store.NewKey{
				Pubkey:       testPK(i),
				SealedSecret: make([]byte, 61),
				Origin:       store.OriginDerived, DerivationIndex: uint32(i), HasDerivationIndex: true,
				Deposit: &store.DepositData{AmountGwei: 32e9, NetworkName: "hoodi"},
			})
		}
		if err := s.AddKeys(b.Context(), keys, store.StateAvailable, now.Add(time.Duration(start)*time.Microsecond)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClaimRecycle measures parallel Claims of one key each, for
// distinct pods, from a large available pool: every Claim commits.
func BenchmarkClaimRecycle(b *testing.B) {
	s := openTemp(b)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fill(b, s, 0, b.N+50_000, now)
	parallelClaims(b, s, now)
}

// parallelClaims makes b.N Claims of one key each, for distinct pods, from
// 16 x GOMAXPROCS goroutines, and reports claims/s and latency percentiles.
func parallelClaims(b *testing.B, s *Store, now time.Time) {
	b.ResetTimer()
	start := time.Now()
	lat := claimRound(b, s, now, 0, b.N, 16*runtime.GOMAXPROCS(0))
	reportLatency(b, lat, time.Since(start), "claims/s")
}

func BenchmarkListKeys100k(b *testing.B) {
	s := openTemp(b)
	fill(b, s, 0, 100_000, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := s.ListKeys(b.Context(), store.ListOptions{}, func(store.Key) error { n++; return nil }); err != nil || n != 100_000 {
			b.Fatalf("listed %d keys, %v", n, err)
		}
	}
}

func BenchmarkListKeys100kWithDeposit(b *testing.B) {
	s := openTemp(b)
	fill(b, s, 0, 100_000, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := s.ListKeys(b.Context(), store.ListOptions{WithDeposit: true}, func(store.Key) error { n++; return nil }); err != nil || n != 100_000 {
			b.Fatalf("listed %d keys, %v", n, err)
		}
	}
}

func BenchmarkCounts100k(b *testing.B) {
	s := openTemp(b)
	fill(b, s, 0, 100_000, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b.ResetTimer()
	for b.Loop() {
		c, err := s.Counts(b.Context())
		if err != nil || c[store.StateAvailable] != 100_000 {
			b.Fatalf("counts %v, %v", c, err)
		}
	}
}

// BenchmarkConfirmDeposit measures parallel confirmations of pending keys
// intended for pods (four per pod): every call commits and moves the key
// from its pod's pending list into its set.
func BenchmarkConfirmDeposit(b *testing.B) {
	s := openTemp(b)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const perPod = 4
	for start := 0; start < b.N; start += perPod {
		keys := make([]store.NewKey, 0, perPod)
		for i := start; i < min(start+perPod, b.N); i++ {
			keys = append(keys, store.NewKey{Pubkey: testPK(i), SealedSecret: make([]byte, 61), Origin: store.OriginRandom})
		}
		p := store.AddParams{Pod: fmt.Sprintf("pod-%d", start), PodUID: "u", Want: perPod, Keys: keys, Now: now}
		if err := s.AddPending(b.Context(), p); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1) - 1)
			k, err := s.ConfirmDeposit(b.Context(), testPK(i), uint64(i+1), now)
			if err != nil || k.State != store.StateAssigned {
				b.Errorf("ConfirmDeposit(%d) = %s, %v", i, k.State, err)
				return
			}
		}
	})
}

// fillForDump adds n available keys and gives one in ten to a pod (ten
// keys per pod), so that a dump has assigned keys and pod entries.
func fillForDump(b *testing.B, s *Store, n int) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fill(b, s, 0, n, now)
	for i := range n / 100 {
		if _, err := s.Claim(b.Context(), store.ClaimParams{Pod: fmt.Sprintf("pod-%d", i), PodUID: "u", Want: 10, Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}

func dumpAll(b *testing.B, s *Store) ([]store.Key, store.Snapshot) {
	keys := make([]store.Key, 0, b.N)
	snap, err := s.Dump(b.Context(), func(k store.Key) error { keys = append(keys, k); return nil })
	if err != nil {
		b.Fatal(err)
	}
	return keys, snap
}

// BenchmarkDump dumps a store of b.N keys once: ns/op is the cost per key
// (-benchtime 100000x for a store of 100,000 keys).
func BenchmarkDump(b *testing.B) {
	s := openTemp(b)
	fillForDump(b, s, b.N)
	b.ResetTimer()
	start := time.Now()
	if keys, _ := dumpAll(b, s); len(keys) != b.N {
		b.Fatalf("dumped %d keys, want %d", len(keys), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
}

// BenchmarkLoad loads a dump of b.N keys into a new store once, in one
// write transaction with every index: ns/op is the cost per key.
func BenchmarkLoad(b *testing.B) {
	s := openTemp(b)
	fillForDump(b, s, b.N)
	keys, snap := dumpAll(b, s)
	d := openTemp(b)
	b.ResetTimer()
	start := time.Now()
	if err := d.Load(b.Context(), snap, keys); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
}

// BenchmarkDepositIndexMainnet fills the deposit index with 2 million
// entries (about mainnet's DepositEvents) and measures lookups of 16 keys;
// it reports the store file's size.
//
//	go test -run x -bench DepositIndexMainnet -benchtime 1000x ./internal/store/bolt/
func BenchmarkDepositIndexMainnet(b *testing.B) {
	s := openTemp(b)
	storetest.BenchDepositIndex(b, s, 2_000_000)
	b.StopTimer()
	if st, err := os.Stat(s.Path()); err == nil {
		b.ReportMetric(float64(st.Size())/(1<<20), "file-MiB")
	}
}
