package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// pgServer is a server on a PostgreSQL store, serving until the test ends.
type pgServer struct {
	srv  *Server
	conn *grpc.ClientConn
	keys pb.KeyServiceClient
	stop func() // stops it before the test ends (idempotent)
}

func testKEK(t testing.TB) *seal.KEK {
	kek, err := seal.ParseKEK(strings.Repeat("5a", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func startPGServer(t testing.TB, storeURL string) *pgServer {
	t.Helper()
	return startPGServerWith(t, storeURL, nil)
}

// startPGServerWith is startPGServer with options changed by mod.
func startPGServerWith(t testing.TB, storeURL string, mod func(*Options)) *pgServer {
	t.Helper()
	fork, _ := deposit.ParseForkVersion("0x10000038")
	ctx, cancel := context.WithCancel(context.Background())
	opts := Options{
		StoreURL: storeURL, KEK: testKEK(t), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		Logger: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(ctx, opts)
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			cancel()
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &pgServer{srv: srv, conn: conn, keys: pb.NewKeyServiceClient(conn), stop: stop}
}

func (p *pgServer) readyz(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + p.srv.HTTPAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (p *pgServer) health(t *testing.T) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(p.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return r.GetStatus()
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The server reports not-ready (/readyz and gRPC health) while PostgreSQL is
// unreachable and recovers by itself when it is back.
func TestPostgresReadinessFollowsDatabase(t *testing.T) {
	proxy, via := pgtest.NewProxy(t, pgtest.NewSchema(t))
	p := startPGServer(t, via)
	eventually(t, 5*time.Second, "ready at start", func() bool {
		return p.readyz(t) == http.StatusOK && p.health(t) == healthpb.HealthCheckResponse_SERVING
	})

	proxy.Cut()
	eventually(t, 10*time.Second, "/readyz 503 and gRPC NOT_SERVING with the database down", func() bool {
		return p.readyz(t) == http.StatusServiceUnavailable && p.health(t) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	_, err := p.keys.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: "pod-down", Count: 1})
	cancel()
	if err == nil {
		t.Fatal("RequestKeys succeeded with the database down")
	}

	proxy.Restore()
	eventually(t, 20*time.Second, "ready again after the database is back", func() bool {
		return p.readyz(t) == http.StatusOK && p.health(t) == healthpb.HealthCheckResponse_SERVING
	})
	r, err := p.keys.RequestKeys(t.Context(), &pb.RequestKeysRequest{PodName: "pod-up", Count: 2})
	if err != nil || len(r.GetKeys()) != 2 {
		t.Fatalf("RequestKeys after recovery: %d keys, %v", len(r.GetKeys()), err)
	}
}

// The database never sees a plaintext secret: every secret handed out is
// searched for in every row of every table.
func TestPostgresSecretsEncryptedAtRest(t *testing.T) {
	u := pgtest.NewSchema(t)
	p := startPGServer(t, u)
	var secrets [][]byte
	for i := range 3 {
		r, err := p.keys.RequestKeys(t.Context(), &pb.RequestKeysRequest{PodName: fmt.Sprintf("pod-%d", i), Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range r.GetKeys() {
			secrets = append(secrets, k.GetSecretKey())
		}
	}
	if _, err := p.keys.ReleaseKeys(t.Context(), &pb.ReleaseKeysRequest{PodName: "pod-0"}); err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 9 {
		t.Fatalf("%d secrets handed out, want 9", len(secrets))
	}
	db := pgtest.Connect(t, u)
	rows, err := db.Query(t.Context(), `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	if !slices.Contains(tables, "pkm_keys") {
		t.Fatalf("tables %v: no pkm_keys", tables)
	}
	var dumpText strings.Builder
	var raw [][]byte
	for _, tb := range tables {
		rows, err := db.Query(t.Context(), `SELECT t::text FROM `+tb+` t`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			dumpText.WriteString(s)
		}
		rows.Close()
	}
	rows, err = db.Query(t.Context(), `SELECT sealed_secret FROM pkm_keys`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var b []byte
		rows.Scan(&b)
		raw = append(raw, b)
	}
	rows.Close()
	if len(raw) != 9 {
		t.Fatalf("%d sealed secrets stored, want 9", len(raw))
	}
	text := strings.ToLower(dumpText.String())
	for _, sec := range secrets {
		if len(sec) != 32 {
			t.Fatalf("secret of %d bytes", len(sec))
		}
		if strings.Contains(text, hex.EncodeToString(sec)) {
			t.Errorf("a plaintext secret is in the database")
		}
		for _, b := range raw {
			if bytes.Contains(b, sec) {
				t.Errorf("a sealed secret contains a plaintext secret")
			}
		}
	}
}

// Duplicate requests for one pod that reach two replicas at once get one
// set, minted once.
func TestPostgresDuplicatesAcrossReplicasMintOnce(t *testing.T) {
	u := pgtest.NewSchema(t)
	a, b := startPGServer(t, u), startPGServer(t, u)
	const n, dups = 4, 8
	sets := make([][]string, dups)
	errs := make([]error, dups)
	var wg sync.WaitGroup
	for i := range dups {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Go(func() {
			r, err := c.keys.RequestKeys(t.Context(), &pb.RequestKeysRequest{PodName: "pod-dup", PodUid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Count: n})
			errs[i] = err
			for _, k := range r.GetKeys() {
				sets[i] = append(sets[i], hex.EncodeToString(k.GetPubkey()))
			}
			slices.Sort(sets[i])
		})
	}
	wg.Wait()
	for i := range dups {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if len(sets[i]) != n || !slices.Equal(sets[i], sets[0]) {
			t.Errorf("request %d got %d keys %v, request 0 got %v", i, len(sets[i]), sets[i], sets[0])
		}
	}
	var total int
	if err := pgtest.Connect(t, u).QueryRow(t.Context(), `SELECT count(*) FROM pkm_keys`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != n {
		t.Errorf("%d keys stored, want %d: the shortfall was minted more than once", total, n)
	}
}
