package storetest

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// BenchClaimRequireActiveWaiting measures the worst claim under
// RequireActive, for pools of each of sizes keys (a sub-benchmark each, on
// a store from open): every pool key is available and still activating
// (pending_queued), so the claim takes nothing and counts the activating
// key that would cover it, what a request waiting for activation does
// every 5 s (allocator.DefaultActivationPoll).
func BenchClaimRequireActiveWaiting(b *testing.B, open func(*testing.B) store.Store, sizes ...int) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			s := open(b)
			now := time.Now()
			keys := make([]store.NewKey, n)
			rs := make([]store.ValidatorReading, n)
			for i := range keys {
				rand.Read(keys[i].Pubkey[:])
				keys[i].SealedSecret, keys[i].Origin = []byte{1}, store.OriginImported
				rs[i] = store.ValidatorReading{Pubkey: keys[i].Pubkey, Status: store.ValidatorStatus{
					Index: uint64(i), Status: store.StatusPendingQueued, ExitEpoch: ^uint64(0), At: now}}
			}
			for i := 0; i < n; i += 5000 {
				if err := s.AddKeys(b.Context(), keys[i:min(i+5000, n)], store.StateAvailable, now); err != nil {
					b.Fatal(err)
				}
				if _, err := s.RecordValidators(b.Context(), rs[i:min(i+5000, n)], now); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				c, err := s.Claim(b.Context(), store.ClaimParams{Pod: "p", Want: 1, Now: now, AllOrNothing: true, RequireActive: true})
				if err != nil || c.Activating != 1 || len(c.Keys) != 0 {
					b.Fatalf("claim: %+v, %v", c, err)
				}
			}
		})
	}
}
