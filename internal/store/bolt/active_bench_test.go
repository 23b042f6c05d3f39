package bolt

import (
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// BenchmarkClaimRequireActiveWaiting measures the worst claim under
// RequireActive: a pool of 100,000 available keys none of which is active
// (all still activating), so the claim walks the whole pool, reads every
// key's reading and takes nothing (a request waiting for activation
// claims so every 2 s).
func BenchmarkClaimRequireActiveWaiting(b *testing.B) {
	s := openTemp(b)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 100_000
	fill(b, s, 0, n, now)
	rs := make([]store.ValidatorReading, 0, n)
	for i := range n {
		rs = append(rs, store.ValidatorReading{Pubkey: testPK(i), Status: store.ValidatorStatus{Status: store.StatusPendingQueued, ExitEpoch: ^uint64(0), At: now}})
	}
	if _, err := s.RecordValidators(b.Context(), rs, now); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		c, err := s.Claim(b.Context(), store.ClaimParams{Pod: "p", Want: 1, Now: now, AllOrNothing: true, RequireActive: true})
		if err != nil || c.Activating != 1 || len(c.Keys) != 0 {
			b.Fatalf("claim: %+v, %v", c, err)
		}
	}
}
