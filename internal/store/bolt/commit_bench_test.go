package bolt

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// BenchmarkRawCommit is the floor of every committed allocation: one bbolt
// read-write transaction writing one 100-byte value, with the options Open
// uses, committed with bbolt's two fdatasyncs (data pages, then meta page),
// on the disk of the test's temporary directory (set TMPDIR to measure
// another). Compare BenchmarkClaimSequential and the server's RecycleGRPC
// with one client against it; cpu-ms is the process's CPU per commit.
func BenchmarkRawCommit(b *testing.B) {
	db := openRaw(b)
	val := make([]byte, 100)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	for i := range b.N {
		t0 := time.Now()
		err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("b")).Put(binary.BigEndian.AppendUint64(nil, uint64(i)), val)
		})
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	reportLatency(b, lat, time.Since(start), "commits/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms")
}

// processCPU is the CPU time (user and system, the kernel's work for the
// writes and fdatasyncs included) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkClaimSequential measures Claims of one key each, for distinct
// pods, from one goroutine: every Claim commits alone.
func BenchmarkClaimSequential(b *testing.B) {
	s := openTemp(b)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fill(b, s, 0, b.N+10, now)
	b.ResetTimer()
	start := time.Now()
	lat := claimRound(b, s, now, 0, b.N, 1)
	reportLatency(b, lat, time.Since(start), "claims/s")
}

// reportLatency reports the rate of len(lat) operations in elapsed as unit,
// and the p50 and p99 of lat.
func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration, unit string) {
	b.Helper()
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), unit)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkClaimStoreSize measures parallel Claims of one key each for
// distinct pods (16 × GOMAXPROCS goroutines, as parallelClaims) in a store
// of 10,000 keys and in one of 1,000,000 (each plus the b.N claimed from
// it): a claim's cost must not grow with the store. Both stores are filled
// first, then the claims run in rounds of 1,000, alternating between the
// stores (and which goes first), so that the machine's drift (a minute of
// slower fsyncs, the kernel writing back the fill) falls on both sizes
// alike; p99-ratio is the large store's p99 over the small one's.
func BenchmarkClaimStoreSize(b *testing.B) {
	sizes := []int{10_000, 1_000_000}
	names := []string{"10k", "1M"}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	stores := make([]*Store, len(sizes))
	for i, size := range sizes {
		stores[i] = openTemp(b)
		fill(b, stores[i], 0, size+b.N, now)
	}
	const round = 1000
	workers := 16 * runtime.GOMAXPROCS(0)
	lat := make([][]time.Duration, len(sizes))
	elapsed := make([]time.Duration, len(sizes))
	b.ResetTimer()
	for done, r := 0, 0; done < b.N; done, r = done+round, r+1 {
		n := min(round, b.N-done)
		for j := range sizes {
			i := (j + r) % len(sizes)
			t0 := time.Now()
			lat[i] = append(lat[i], claimRound(b, stores[i], now, done, n, workers)...)
			elapsed[i] += time.Since(t0)
		}
	}
	b.StopTimer()
	var p99 []time.Duration
	for i, name := range names {
		l := lat[i]
		slices.Sort(l)
		p99 = append(p99, l[len(l)*99/100])
		b.ReportMetric(float64(len(l))/elapsed[i].Seconds(), "claims/s-"+name)
		b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, "p50-ms-"+name)
		b.ReportMetric(float64(p99[i].Microseconds())/1000, "p99-ms-"+name)
	}
	b.ReportMetric(float64(p99[1])/float64(p99[0]), "p99-ratio")
}

// claimRound makes n Claims of one key each in s, for the pods from+1 to
// from+n, on workers goroutines, and returns their latencies.
func claimRound(b *testing.B, s *Store, now time.Time, from, n, workers int) []time.Duration {
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
		lat  = make([]time.Duration, 0, n)
	)
	next.Store(int64(from))
	for range workers {
		wg.Go(func() {
			var mine []time.Duration
			for p := next.Add(1); p <= int64(from+n); p = next.Add(1) {
				pod := fmt.Sprintf("pod-%d", p)
				t0 := time.Now()
				c, err := s.Claim(b.Context(), store.ClaimParams{Pod: pod, Want: 1, Now: now.Add(time.Hour)})
				mine = append(mine, time.Since(t0))
				if err != nil || len(c.Keys) != 1 {
					b.Errorf("Claim(%s) = %d keys, %v", pod, len(c.Keys), err)
					return
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return lat
}
