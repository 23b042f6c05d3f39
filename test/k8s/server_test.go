package k8s_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/server"
	"github.com/pkmanager/pkmanager/internal/store"
)

// srv is a real pkmanager server (bbolt store, minter, allocator, gRPC and
// HTTP on loopback) with the Kubernetes integration under test.
type srv struct {
	*server.Server
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	logs   *logBuffer
}

type srvConfig struct {
	dataDir    string
	reuseDelay time.Duration
	kube       server.KubeOptions
	tls        server.TLSOptions
	legacy     bool
}

// startServer starts a server on cfg.dataDir with the cluster's namespace,
// selector and the pkmanager ServiceAccount's credentials filled in.
func (c *cluster) startServer(cfg srvConfig) *srv {
	c.t.Helper()
	kek, err := seal.ParseKEK(strings.Repeat("5a", seal.KEKSize))
	if err != nil {
		c.t.Fatal(err)
	}
	fork, _ := deposit.ParseForkVersion("0x10000038")
	k := cfg.kube
	if k.RESTConfig == nil {
		k.RESTConfig = c.pkm
	}
	if k.Namespace == "" {
		k.Namespace = c.ns
	}
	if k.PodSelector == "" {
		k.PodSelector = selector
	}
	if k.Resync == 0 {
		k.Resync = watcherResync
	}
	if cfg.dataDir == "" {
		cfg.dataDir = c.t.TempDir()
	}
	logs := &logBuffer{}
	var w io.Writer = logs
	if os.Getenv("PKM_TEST_LOGS") != "" {
		w = io.MultiWriter(logs, os.Stderr)
	}
	s, err := server.New(c.ctx, server.Options{
		StoreURL: "bolt://" + filepath.Join(cfg.dataDir, "pk.db"), KEK: kek,
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		ReuseDelay: cfg.reuseDelay, SweepInterval: 100 * time.Millisecond,
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		LegacyGRPC: cfg.legacy, ShutdownTimeout: 5 * time.Second,
		Kube: k, TLS: cfg.tls,
		Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		c.t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &srv{Server: s, t: c.t, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- s.Serve(ctx) }()
	c.t.Cleanup(r.stop)
	return r
}

func (r *srv) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("server stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		r.t.Error("server did not stop within 20 s")
	}
}

// client returns a gRPC client of the server.
func (r *srv) client(sec client.Security) *client.Client {
	r.t.Helper()
	c, err := client.New(r.GRPCAddr().String(), client.Options{Security: sec})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// request asks for n keys of pod (no token) and returns them.
func (r *srv) request(ctx context.Context, pod, uid string, n uint32) []store.Pubkey {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := r.client(client.Security{}).RequestKeys(ctx, pod, uid, n)
	if err != nil {
		r.t.Fatalf("request %d keys for %s: %v", n, pod, err)
	}
	out := make([]store.Pubkey, len(resp.GetKeys()))
	for i, k := range resp.GetKeys() {
		copy(out[i][:], k.GetPubkey())
	}
	return out
}

type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// get fetches path from the server's HTTP listener (no token) and returns
// the body; it fails the test on a status other than 200.
func (r *srv) get(t *testing.T, path string) string {
	t.Helper()
	code, body := r.getAs(t, path, "")
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return body
}

// getAs fetches path with an optional bearer token.
func (r *srv) getAs(t *testing.T, path, token string) (int, string) {
	t.Helper()
	return r.getURL(t, r.httpBase()+path, token)
}

// getURL fetches url with an optional bearer token.
func (r *srv) getURL(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *srv) httpBase() string { return "http://" + r.HTTPAddr().String() }

func (r *srv) httpClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
