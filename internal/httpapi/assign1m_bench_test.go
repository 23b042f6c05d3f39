package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
	"time"
)

// firstByteWriter is a discardWriter that notes when the first byte of the
// body is written.
type firstByteWriter struct {
	discardWriter
	first time.Time
}

func (w *firstByteWriter) Write(p []byte) (int, error) {
	if w.first.IsZero() && len(p) > 0 {
		w.first = time.Now()
	}
	return w.discardWriter.Write(p)
}

// BenchmarkAssignmentsJSON1M measures GET /assignments?format=json over a
// bbolt store of 1,000,000 assigned keys on 10,000 pods: the time to the
// first byte of the body and to the whole listing, streamed pod by pod as
// the server does it (PodSizes, serveAssignmentsJSON) and, for reference,
// read whole into memory and sorted first (the store's PodSizes hidden).
func BenchmarkAssignmentsJSON1M(b *testing.B) {
	dir, err := os.MkdirTemp("", "httpapi-bench-1m-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s := openBolt(b, dir)
	defer s.Close()
	pods := make([]string, 10_000)
	for i := range pods {
		pods[i] = fmt.Sprintf("validator-%d", i)
	}
	fillAssigned(b, s, 0xb1, pods, 100, fixtureNow)
	for _, bc := range []struct {
		name string
		keys KeyLister
	}{{"streamed", s}, {"in-memory", keysOnly{s}}} {
		b.Run(bc.name, func(b *testing.B) { benchAssignmentsJSON(b, bc.keys, 1_000_000) })
	}
}

// benchAssignmentsJSON serves /assignments?format=json from keys, which
// hold n keys, and reports the first byte and the whole listing.
func benchAssignmentsJSON(b *testing.B, keys KeyLister, n int) {
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: keys, Logger: quietLogger(b)})
	req := httptest.NewRequest("GET", "/assignments?format=json", nil)
	var first, total, cpu time.Duration
	w := &firstByteWriter{}
	for b.Loop() {
		*w = firstByteWriter{discardWriter: discardWriter{header: http.Header{}}}
		c0 := processCPU(b)
		t0 := time.Now()
		h.ServeHTTP(w, req)
		total += time.Since(t0)
		cpu += processCPU(b) - c0
		first += w.first.Sub(t0)
	}
	if w.status != http.StatusOK || w.n < n*96 {
		b.Fatalf("status %d, %d bytes", w.status, w.n)
	}
	b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "first-byte-ms")
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "total-ms")
	// The CPU the whole process spent (user and system, GC included): on
	// a loaded machine a steadier figure than the wall clock.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms")
	b.ReportMetric(float64(w.n)/1e6, "MB/resp")
}

// processCPU is the CPU time the process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
