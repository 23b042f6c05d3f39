package bolt

import (
	"encoding/binary"
	"fmt"
	"slices"
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
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		pod := fmt.Sprintf("pod-%d", i)
		t0 := time.Now()
		c, err := s.Claim(b.Context(), store.ClaimParams{Pod: pod, Want: 1, Now: now.Add(time.Hour)})
		lat = append(lat, time.Since(t0))
		if err != nil || len(c.Keys) != 1 {
			b.Fatalf("Claim(%s) = %d keys, %v", pod, len(c.Keys), err)
		}
	}
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
// distinct pods (as BenchmarkClaimRecycle) in stores of 10,000 and of
// 1,000,000 keys (plus the b.N the benchmark claims): a claim's cost must not
// grow with the store.
func BenchmarkClaimStoreSize(b *testing.B) {
	for _, size := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", size), func(b *testing.B) {
			s := openTemp(b)
			now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			fill(b, s, 0, size+b.N, now)
			parallelClaims(b, s, now)
		})
	}
}
