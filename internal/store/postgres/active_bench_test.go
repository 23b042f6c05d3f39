package postgres_test

import (
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// BenchmarkClaimRequireActiveWaiting: see storetest.
//
//	PKM_TEST_POSTGRES=... go test -run x -bench ClaimRequireActiveWaiting -benchtime 20x ./internal/store/postgres/
func BenchmarkClaimRequireActiveWaiting(b *testing.B) {
	storetest.BenchClaimRequireActiveWaiting(b, func(b *testing.B) store.Store { return open(b, pgtest.NewSchema(b)) }, 1000, 100_000)
}
