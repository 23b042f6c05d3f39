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

// BenchmarkMintVsSign compares minting (generate or derive a key + public
// key + sign deposit + seal, on all cores) with the raw rate of blst on the
// same cores: "raw" is key generation + public key + signature of a 32-byte
// message per key (the reference of minting), "sign" the signature alone.
// All report keys/s, the minting ones also %-of-raw (against "raw" of the
// same run, when it ran); docs/benchmarks.md records the ratios.
func BenchmarkMintVsSign(b *testing.B) {
	const batch = 256
	var raw float64 // keys/s of "raw" in this run
	workers := runtime.GOMAXPROCS(0)
	b.Run("raw", func(b *testing.B) {
		msg := make([]byte, 32)
		start := time.Now()
		for b.Loop() {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= batch {
						sk, err := keys.GenerateRandom()
						if err != nil {
							b.Error(err)
							return
						}
						_ = sk.PublicKey()
						_ = sk.Sign(msg)
						sk.Zero()
					}
				})
			}
			wg.Wait()
		}
		raw = float64(b.N*batch) / time.Since(start).Seconds()
		b.ReportMetric(raw, "keys/s")
	})
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
	for _, kind := range []string{"random", "derived", "derived-bls"} {
		name := "mint-" + kind
		cfg := Config{Sealer: testKEK(b), Network: devnet(b), Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr}
		if kind != "random" {
			cfg.Deriver, cfg.Indices = deriver(b), &counter{}
		}
		if kind == "derived-bls" { // a BLS withdrawal key besides every signing key
			cfg.Withdrawal, cfg.WithdrawalAddress = WithdrawalBLS, [20]byte{}
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
			rate := float64(b.N*batch) / time.Since(start).Seconds()
			b.ReportMetric(rate, "keys/s")
			if raw > 0 {
				b.ReportMetric(100*rate/raw, "%-of-raw")
			}
		})
	}
}
