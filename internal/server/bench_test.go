package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// fillPool adds n available keys (sealed random secrets) to a new bbolt file.
func fillPool(b *testing.B, path string, kek *seal.KEK, n int) {
	b.Helper()
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := addSealedKeys(st, kek, n); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRecycleGRPC measures recycle-path allocations through the real
// server: concurrent gRPC RequestKeys calls over loopback TCP, each for a new
// pod and one key taken from a pool of available keys in bbolt (every
// allocation committed with fsync before the answer). Reports allocations/s,
// latency percentiles and the CPU time of the process (server and clients)
// per allocation; RecycleGRPCServerCPU measures the server's alone.
func BenchmarkRecycleGRPC(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			c := dialKeys(b, startRecycleServer(b, b.N+clients))
			recycleLoad(b, []pb.KeyServiceClient{c}, clients)
		})
	}
}

// BenchmarkGRPCRoundTrip measures the floor of a lone request beside a
// commit's: sequential gRPC health checks (grpc.health.v1.Health/Check,
// through the same server, listener and interceptors as RequestKeys, but
// without the store) over loopback TCP from one client. Reports p50, and
// the process's CPU (client and server) per call; RecycleGRPC with one
// client less this and BenchmarkRawCommit is the cost of the claim itself.
func BenchmarkGRPCRoundTrip(b *testing.B) {
	conn, err := grpc.NewClient(startRecycleServer(b, 1), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	h := healthpb.NewHealthClient(conn)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		t0 := time.Now()
		if _, err := h.Check(b.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	cpu := processCPU() - cpu0
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms")
}

// recycleLoad runs b.N RequestKeys calls, each for a new pod and one key that
// must come from the pool, from `clients` goroutines spread round-robin over
// the given servers, and reports allocations/s (also returned), latency
// percentiles and the process's CPU time per allocation.
func recycleLoad(b *testing.B, servers []pb.KeyServiceClient, clients int) float64 {
	b.Helper()
	b.ResetTimer()
	cpu0 := processCPU()
	r := runRecycle(b.Context(), servers, clients, b.N)
	cpu := processCPU() - cpu0
	b.StopTimer()
	if r.err != nil {
		b.Fatal(r.err)
	}
	rate := float64(r.n) / r.elapsed.Seconds()
	b.ReportMetric(rate, "allocs/s")
	b.ReportMetric(r.pct(0.50), "p50-ms")
	b.ReportMetric(r.pct(0.99), "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(r.n), "cpu-ms")
	return rate
}

// recycleRun is what runRecycle measured.
type recycleRun struct {
	n         int
	elapsed   time.Duration
	latencies []time.Duration // sorted
	err       error           // the first failure
}

// pct is the latency at percentile p (0 to 1) in milliseconds.
func (r recycleRun) pct(p float64) float64 {
	if len(r.latencies) == 0 {
		return 0
	}
	return float64(r.latencies[int(float64(len(r.latencies)-1)*p)].Microseconds()) / 1000
}

// runRecycle makes n RequestKeys calls, each for a new pod and one key that
// must come from the pool, from `clients` goroutines spread round-robin over
// the given servers.
func runRecycle(ctx context.Context, servers []pb.KeyServiceClient, clients, n int) recycleRun {
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, n)
		firstErr  error
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			keys := servers[c%len(servers)]
			local := make([]time.Duration, 0, n/clients+1)
			defer func() {
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			}()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				t0 := time.Now()
				r, err := keys.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: fmt.Sprintf("bench-%d", i), Count: 1})
				if err != nil {
					fail(err)
					return
				}
				if r.GetRecycled() != 1 || r.GetMinted() != 0 {
					fail(fmt.Errorf("not a recycle: recycled %d minted %d", r.GetRecycled(), r.GetMinted()))
					return
				}
				local = append(local, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	return recycleRun{n: len(latencies), elapsed: elapsed, latencies: latencies, err: firstErr}
}
