package server

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// BenchmarkRecycleGRPCPostgres measures recycle-path allocations through
// real servers on one PostgreSQL database: concurrent gRPC RequestKeys calls
// over loopback, each for a new pod and one key taken from a pool of
// available keys, spread over 1 or 3 server replicas (each with its own
// connection pool and ownership runner; no lock across replicas). Every
// allocation is committed before the answer. Reports allocations/s and
// latency percentiles, and beside them, measured right before at the same
// concurrency on the same database, pgbench's rate of single-row-update
// commits (pgbenchCommits) and its rate of the servers' own claim function
// on a pool of its own (pgbenchClaims: what the database alone does of the
// work).
func BenchmarkRecycleGRPCPostgres(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		for _, clients := range []int{16, 32} {
			b.Run(fmt.Sprintf("replicas=%d/clients=%d", replicas, clients), func(b *testing.B) {
				benchRecyclePG(b, replicas, clients)
			})
		}
	}
}

func benchRecyclePG(b *testing.B, replicas, clients int) {
	u := pgtest.NewSchema(b)
	fillPGPool(b, u, b.N+clients)
	servers := make([]*pgServer, replicas)
	for i := range servers {
		servers[i] = startPGServer(b, u)
	}

	clientsOf := make([]pb.KeyServiceClient, len(servers))
	for i, srv := range servers {
		clientsOf[i] = srv.keys
	}
	// The database's own commit rate at the same concurrency, in the same
	// run (not in the first, one-iteration round of the benchmark).
	var pgbench, claims float64
	if b.N > 1 {
		pgbench = pgbenchCommits(b, u, clients, 5*time.Second)
		claims = pgbenchClaims(b, clients, 30_000, 5*time.Second)
	}
	rate := recycleLoad(b, clientsOf, clients)
	if pgbench > 0 {
		b.ReportMetric(pgbench, "pgbench-tps")
		b.ReportMetric(100*rate/pgbench, "%-of-pgbench")
		b.ReportMetric(claims, "pgbench-claims/s")
		b.ReportMetric(100*rate/claims, "%-of-pgbench-claims")
	}
}

// fillPGPool adds n available keys (sealed random secrets) to the store of
// the schema URL u.
func fillPGPool(b *testing.B, u string, n int) {
	b.Helper()
	st, err := postgres.Open(b.Context(), u, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := addSealedKeys(st, testKEK(b), n); err != nil {
		b.Fatal(err)
	}
}
