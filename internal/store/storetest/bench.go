package storetest

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// BenchDepositIndex fills s's deposit index as a mainnet-sized chain would:
// deposits DepositEvents over 13 million blocks read in chunks of 10,000
// blocks (one MoveDepositIndex each, entries spread evenly), then looks up
// 16 keys at a time, half of them indexed. It reports the time to fill, the
// entries per second, and the lookup time (size is the caller's to report).
func BenchDepositIndex(b *testing.B, s store.Store, deposits int) {
	const (
		blocks = 13_000_000
		chunk  = 10_000
	)
	key := func(i int) uint64 {
		h := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
		return binary.BigEndian.Uint64(h[:8])
	}
	perChunk := deposits * chunk / blocks
	ctx := b.Context()
	cur := store.IndexCursor{}
	t0 := time.Now()
	n := 0
	for next := uint64(0); next < blocks; next += chunk {
		entries := make([]store.IndexEntry, 0, perChunk+1)
		for j := 0; j < perChunk && n < deposits; j++ {
			entries = append(entries, store.IndexEntry{Key: key(n), Block: next + uint64(j)%chunk})
			n++
		}
		to := store.IndexCursor{Source: "1/0x00000000219ab540356cbb839cbe05303d7705fa", Next: next + chunk}
		binary.BigEndian.PutUint64(to.Hash[:], to.Next)
		if err := s.MoveDepositIndex(ctx, cur, to, entries); err != nil {
			b.Fatal(err)
		}
		cur = to
	}
	fill := time.Since(t0)
	b.ResetTimer()
	for i := range b.N {
		keys := make([]uint64, 16)
		for j := range keys {
			if j%2 == 0 {
				keys[j] = key((i*16 + j) % n)
			} else {
				keys[j] = uint64(i*16 + j)
			}
		}
		got, err := s.LookupDepositIndex(ctx, keys)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) < 8 {
			b.Fatalf("lookup found %d of the 8 indexed keys", len(got))
		}
	}
	b.StopTimer()
	b.ReportMetric(fill.Seconds(), "fill-s")
	b.ReportMetric(float64(n)/fill.Seconds(), "entries/s")
}
