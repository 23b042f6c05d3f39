package server

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// BenchmarkRecycleGRPCPostgres measures recycle-path allocations through
// real servers on one PostgreSQL database: concurrent gRPC RequestKeys calls
// over loopback, each for a new pod and one key taken from a pool of
// available keys, spread over 1 or 3 server replicas (each with its own
// connection pool, cross-replica pod locks and ownership runner). Every
// allocation is committed before the answer. Reports allocations/s and
// latency percentiles.
func BenchmarkRecycleGRPCPostgres(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		for _, clients := range []int{16, 32} {
			b.Run(fmt.Sprintf("replicas=%d/clients=%d", replicas, clients), func(b *testing.B) {
				benchRecyclePG(b, replicas, clients)
			})
		}
	}
}

func benchRecyclePG(b *testing.B, replicas, clients int) {
	u := pgtest.NewSchema(b)
	kek := testKEK(b)
	st, err := postgres.Open(b.Context(), u, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for start := 0; start < b.N+clients; start += 5000 {
		batch := make([]store.NewKey, min(5000, b.N+clients-start))
		for i := range batch {
			var pub store.Pubkey
			secret := make([]byte, 32)
			rand.Read(pub[:])
			rand.Read(secret)
			sealed, err := kek.Seal(secret, pub[:])
			if err != nil {
				b.Fatal(err)
			}
			batch[i] = store.NewKey{Pubkey: pub, SealedSecret: sealed, Origin: store.OriginImported}
		}
		if err := st.AddKeys(b.Context(), batch, store.StateAvailable, now); err != nil {
			b.Fatal(err)
		}
	}
	st.Close()
	servers := make([]*pgServer, replicas)
	for i := range servers {
		servers[i] = startPGServer(b, u)
	}

	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, b.N)
		wg        sync.WaitGroup
	)
	ctx := b.Context()
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			keys := servers[c%replicas].keys
			local := make([]time.Duration, 0, b.N/clients+1)
			defer func() {
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			}()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				r, err := keys.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: fmt.Sprintf("bench-%d", i), Count: 1})
				if err != nil {
					b.Error(err)
					return
				}
				if r.GetRecycled() != 1 || r.GetMinted() != 0 {
					b.Errorf("not a recycle: recycled %d minted %d", r.GetRecycled(), r.GetMinted())
					return
				}
				local = append(local, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(float64(len(latencies)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "allocs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
