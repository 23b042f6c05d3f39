package mint

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/keys"
)

// BenchmarkMintVsSign compares minting (generate key + public key + sign
// deposit + seal, on all cores) with the raw BLS signing rate of blst on the
// same cores. Both report keys/s (signatures/s for "sign"); docs/benchmarks.md
// records the ratio.
func BenchmarkMintVsSign(b *testing.B) {
	const batch = 256
	workers := runtime.GOMAXPROCS(0)
	b.Run("sign", func(b *testing.B) {
		sks := make([]*keys.SecretKey, workers)
		for i := range sks {
			sk, err := keys.GenerateRandom()
			if err != nil {
				b.Fatal(err)
			}
			sks[i] = sk
		}
		msg := make([]byte, 32)
		b.ResetTimer()
		start := time.Now()
		for b.Loop() {
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= batch {
						_ = sks[w].Sign(msg)
					}
				}()
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "keys/s")
	})
	for _, derived := range []bool{false, true} {
		name := "mint-random"
		cfg := Config{Sealer: testKEK(b), Network: devnet(b), Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr}
		if derived {
			name = "mint-derived"
			cfg.Deriver, cfg.Indices = deriver(b), &counter{}
		}
		m, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				if _, err := m.Mint(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "keys/s")
		})
	}
}
