package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// BenchmarkAssignmentsJSON1MPostgres is BenchmarkAssignmentsJSON1M on
// PostgreSQL (PKM_TEST_POSTGRES, a schema of its own): 1,000,000 assigned
// keys on 10,000 pods, key i held by pod i mod 10,000, put in with
// Store.Load (the time it takes is logged).
func BenchmarkAssignmentsJSON1MPostgres(b *testing.B) {
	url := pgtest.NewSchema(b)
	ctx := context.Background()
	s, err := postgres.Open(ctx, url, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n, pods = 1_000_000, 10_000
	keys := make([]store.Key, n)
	for i := range keys {
		pod := fmt.Sprintf("validator-%d", i%pods)
		keys[i] = store.Key{
			Pubkey: pk(0xb2, i), State: store.StateAssigned, Origin: store.OriginDerived,
			DerivationIndex: uint32(i), HasDerivationIndex: true,
			Pod: pod, PodUID: "uid-" + pod, LastPod: pod,
			Since: fixtureNow, CreatedAt: fixtureNow, SealedSecret: slices.Clone(markerSecret),
		}
	}
	t0 := time.Now()
	if err := s.Load(ctx, store.Snapshot{Bindings: map[string]string{}, NextIndex: n}, keys); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d keys in %v", n, time.Since(t0).Round(time.Millisecond))
	keys = nil
	for _, bc := range []struct {
		name string
		keys KeyLister
	}{{"streamed", s}, {"in-memory", keysOnly{s}}} {
		b.Run(bc.name, func(b *testing.B) { benchAssignmentsJSON(b, bc.keys, n) })
	}
}
