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
		start := time.Now()
		for b.Loop() {
			rawBatch(b, workers, batch)
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
	for _, kind := range mintKinds {
		m := benchMinter(b, kind)
		b.Run("mint-"+kind, func(b *testing.B) {
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

// BenchmarkMintRatio measures MintVsSign's ratios with the kinds
// interleaved: each round runs one batch of raw and one of every kind of
// minting, in an order that rotates from round to round, so that a drift
// of the machine's speed over the run (its clock, another tenant, the
// benchmark's own start) falls on all of them alike, which one after the
// other, as sub-benchmarks, it does not. Each kind's %-of-raw is raw's
// total time over the kind's for the same number of keys; keys/s is raw's
// rate.
func BenchmarkMintRatio(b *testing.B) {
	const batch = 256
	workers := runtime.GOMAXPROCS(0)
	runs := []func(){func() { rawBatch(b, workers, batch) }}
	for _, kind := range mintKinds {
		m := benchMinter(b, kind)
		runs = append(runs, func() {
			if _, err := m.Mint(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
		})
	}
	spent := make([]time.Duration, len(runs))
	round := 0
	for b.Loop() {
		for j := range runs {
			k := (round + j) % len(runs)
			t0 := time.Now()
			runs[k]()
			spent[k] += time.Since(t0)
		}
		round++
	}
	b.ReportMetric(float64(round*batch)/spent[0].Seconds(), "keys/s")
	for i, kind := range mintKinds {
		b.ReportMetric(100*spent[0].Seconds()/spent[i+1].Seconds(), kind+"-%-of-raw")
	}
}

// mintKinds are the kinds of minting the benchmarks compare with raw:
// random keys, EIP-2333 derived ones, and derived ones with a derived BLS
// withdrawal key each.
var mintKinds = []string{"random", "derived", "derived-bls"}

// benchMinter is a Minter of the given kind (of mintKinds).
func benchMinter(b *testing.B, kind string) *Minter {
	b.Helper()
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
	return m
}

// rawBatch is one batch of "raw" on workers goroutines: key generation,
// public key and a signature of a 32-byte message, for n keys.
func rawBatch(b *testing.B, workers, n int) {
	msg := make([]byte, 32)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
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
