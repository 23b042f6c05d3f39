package bolt

import (
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// BenchmarkClaimRequireActiveWaiting: see storetest. With the active index
// a claim's time does not grow with the pool (keys=1000 and keys=100000).
func BenchmarkClaimRequireActiveWaiting(b *testing.B) {
	storetest.BenchClaimRequireActiveWaiting(b, func(b *testing.B) store.Store { return openTemp(b) }, 1000, 100_000)
}
