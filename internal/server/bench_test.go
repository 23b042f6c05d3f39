package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
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
	now := time.Now()
	for start := 0; start < n; start += 5000 {
		batch := make([]store.NewKey, min(5000, n-start))
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
		if err := st.AddKeys(context.Background(), batch, store.StateAvailable, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecycleGRPC measures recycle-path allocations through the real
// server: concurrent gRPC RequestKeys calls over loopback TCP, each for a new
// pod and one key taken from a pool of available keys in bbolt (every
// allocation committed with fsync before the answer). Reports allocations/s
// and latency percentiles.
func BenchmarkRecycleGRPC(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			kek, err := seal.ParseKEK(strings.Repeat("42", seal.KEKSize))
			if err != nil {
				b.Fatal(err)
			}
			path := filepath.Join(b.TempDir(), "pk.db")
			fillPool(b, path, kek, b.N+clients)
			fork, _ := deposit.ParseForkVersion("0x10000038")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := New(ctx, Options{
				StoreURL: "bolt://" + path, KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
				Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
					Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
			})
			if err != nil {
				b.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx) }()
			conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			c := pb.NewKeyServiceClient(conn)

			recycleLoad(b, []pb.KeyServiceClient{c}, clients)
			cancel()
			if err := <-served; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// recycleLoad runs b.N RequestKeys calls, each for a new pod and one key that
// must come from the pool, from `clients` goroutines spread round-robin over
// the given servers, and reports allocations/s and latency percentiles.
func recycleLoad(b *testing.B, servers []pb.KeyServiceClient, clients int) {
	b.Helper()
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
			keys := servers[c%len(servers)]
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
