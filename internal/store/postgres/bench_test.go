package postgres_test

import (
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// BenchmarkClaimRecycle measures Claim alone: each call for a new pod takes
// one key from a pool of available keys (committed before it returns).
func BenchmarkClaimRecycle(b *testing.B) {
	for _, goroutines := range []int{1, 32} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			s := open(b, pgtest.NewSchema(b))
			var keys []store.NewKey
			for range b.N + goroutines {
				var pk store.Pubkey
				rand.Read(pk[:])
				keys = append(keys, store.NewKey{Pubkey: pk, SealedSecret: []byte{1}, Origin: store.OriginImported})
			}
			for i := 0; i < len(keys); i += 5000 {
				if err := s.AddKeys(b.Context(), keys[i:min(i+5000, len(keys))], store.StateAvailable, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			t0 := time.Now()
			for range goroutines {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						c, err := s.Claim(b.Context(), store.ClaimParams{Pod: fmt.Sprintf("p-%d", i), Want: 1, Now: time.Now()})
						if err != nil || c.Recycled != 1 {
							b.Errorf("Claim: recycled %d, %v", c.Recycled, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "claims/s")
		})
	}
}

// BenchmarkDepositIndexMainnet fills the deposit index with 2 million
// entries (about mainnet's DepositEvents) and measures lookups of 16 keys;
// it reports the table's size with its index.
//
//	PKM_TEST_POSTGRES=... go test -run x -bench DepositIndexMainnet -benchtime 1000x ./internal/store/postgres/
func BenchmarkDepositIndexMainnet(b *testing.B) {
	u := pgtest.NewSchema(b)
	s := open(b, u)
	storetest.BenchDepositIndex(b, s, 2_000_000)
	b.StopTimer()
	conn, err := pgx.Connect(b.Context(), u)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(b.Context())
	var size int64
	if err := conn.QueryRow(b.Context(), `SELECT pg_total_relation_size('pkm_deposit_index')`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(size)/(1<<20), "table-MiB")
}
