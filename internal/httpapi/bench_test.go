package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The benchmarks share one bbolt store with 100,000 assigned keys over
// 1,000 pods, built on first use and removed by TestMain.
var bench struct {
	once  sync.Once
	dir   string
	store store.Store
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bench.store != nil {
		_ = bench.store.Close()
	}
	if bench.dir != "" {
		_ = os.RemoveAll(bench.dir)
	}
	os.Exit(code)
}

func benchStore(b *testing.B) store.Store {
	b.Helper()
	bench.once.Do(func() {
		start := time.Now()
		bench.dir, bench.err = os.MkdirTemp("", "httpapi-bench-")
		if bench.err != nil {
			return
		}
		bench.store = openBolt(b, bench.dir)
		pods := make([]string, 1000)
		for i := range pods {
			pods[i] = fmt.Sprintf("validator-%d", i)
		}
		fillAssigned(b, bench.store, 0xb0, pods, 100, fixtureNow)
		b.Logf("filled bbolt store with 100,000 assigned keys in %v", time.Since(start).Round(time.Millisecond))
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.store
}

// discardWriter is a ResponseWriter that counts and drops the body, so the
// benchmarks measure the handler, not a growing buffer.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func benchmarkRoute(b *testing.B, target string, wantMinBytes int) {
	s := benchStore(b)
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(b)})
	req := httptest.NewRequest("GET", target, nil)
	w := &discardWriter{}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		*w = discardWriter{header: http.Header{}}
		h.ServeHTTP(w, req)
	}
	if w.status != http.StatusOK || w.n < wantMinBytes {
		b.Fatalf("%s: status %d, %d bytes", target, w.status, w.n)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	b.ReportMetric(float64(w.n)/1e6, "MB/resp")
}

// 100,000 rows of at least 96 hex digits each.
const min100k = 100_000 * 96

// The HTML page is paged: its first page (100 keys, the per-pod summary of
// all of them), and a page of 10,000 keys sorted by time.
func BenchmarkAssignmentsHTML100k(b *testing.B) {
	benchmarkRoute(b, "/assignments?format=html", 100*96)
}

func BenchmarkAssignmentsText100k(b *testing.B) {
	benchmarkRoute(b, "/assignments?format=text", min100k)
}

func BenchmarkAssignmentsJSON100k(b *testing.B) {
	benchmarkRoute(b, "/assignments?format=json", min100k)
}

func BenchmarkAssignmentsHTMLSortSince100k(b *testing.B) {
	benchmarkRoute(b, "/assignments?sort=since&order=desc&per_page=10000&page=3", 10_000*96)
}

func BenchmarkListKeys100k(b *testing.B) {
	benchmarkRoute(b, "/api/v1/keys", min100k)
}
