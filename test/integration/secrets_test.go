package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/test/testbin"
)

// The secrets of the test below: one in each place an operator may put one.
const (
	secretUserinfo = "UserinfoPw-1f2e3d"                          // postgres://user:HERE@...
	secretQueryPW  = "QueryPw-4a5b6c"                             // ?password=HERE
	secretSSLPW    = "SslKeyPw-7d8e9f"                            // ?sslpassword=HERE
	secretPassfile = "PassfilePw-0a1b2c"                          // in the file of ?passfile=
	secretRPCPath  = "RpcPathKey-3c4d5e"                          // --eth1-rpc https://host/v3/HERE
	secretRPCQuery = "RpcQueryKey-6f7a8b"                         // --eth1-rpc ...?apikey=HERE
	funderKeyHex   = devchain.DevKeyHex                           // chain mode's funder (the dev key)
	noContract     = "0x00000000219ab540356cBB839Cbe05303d7705Fa" // an address; nothing answers there
)

// outputs collects everything a server showed, by where it showed it.
type outputs map[string]string

func (o outputs) add(where, what string) { o[where] += what + "\n" }

// No secret of the configuration appears in any output: start-up errors,
// banner, logs (JSON, debug level), /readyz, /metrics, /assignments, and
// the error answers of HTTP and gRPC, while the store and the execution
// node are reachable and after each is cut off.
func TestNoSecretInAnyOutput(t *testing.T) {
	schemaURL := pgtest.NewSchema(t)
	out := outputs{}
	closed := testbin.FreeAddr(t) // nothing listens there
	dir := t.TempDir()
	passfile := filepath.Join(dir, "pgpass")
	if err := os.WriteFile(passfile, []byte("*:*:*:*:"+secretPassfile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Start-up failures: the store or the execution node is unreachable.
	rpcClosed := "http://" + closed + "/v3/" + secretRPCPath + "?apikey=" + secretRPCQuery
	funderFile := filepath.Join(dir, "funder.hex")
	if err := os.WriteFile(funderFile, []byte(funderKeyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"store URL with passwords": {"--store", "postgres://pkm:" + secretUserinfo + "@" + closed + "/db?password=" + secretQueryPW +
			"&sslpassword=" + secretSSLPW + "&connect_timeout=2"},
		"store URL with a passfile": {"--store", "postgres://pkm@" + closed + "/db?connect_timeout=2&passfile=" + passfile},
		"export mode, node down":    {"--deposits", "export", "--eth1-rpc", rpcClosed, "--deposit-contract", noContract},
		"chain mode, node down": {"--deposits", "chain", "--eth1-rpc", rpcClosed, "--deposit-contract", noContract,
			"--funder-key-file", funderFile},
	} {
		args = append([]string{"serve", "--dev", "--data-dir", filepath.Join(dir, "fail"), "--grpc-addr", "127.0.0.1:0",
			"--http-addr", "127.0.0.1:0", "--log-level", "debug"}, args...)
		got, err := run(t, args...)
		if err == nil {
			t.Fatalf("%s: serve started:\n%s", name, got)
		}
		out.add("start-up failure ("+name+")", got)
	}

	// A running server in export mode (it reads the chain) on PostgreSQL,
	// both behind proxies the test cuts.
	chain := startChain(t)
	rpc := newRPCProxy(t, chain.RPCEndpoint())
	dbProxy, via := pgtest.NewProxy(t, schemaURL)
	u, err := url.Parse(via)
	if err != nil {
		t.Fatal(err)
	}
	realPW, _ := u.User.Password() // the test database's: it must not show either
	u.User = url.UserPassword(u.User.Username(), secretUserinfo)
	q := u.Query()
	q.Set("password", realPW) // the query's password wins over the user information's
	q.Set("sslpassword", secretSSLPW)
	q.Set("passfile", passfile)
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	srv := startLoggedServer(t, filepath.Join(dir, "serve"), "--store", u.String(), "--deposits", "export",
		"--eth1-rpc", rpc.url, "--deposit-contract", chain.DepositContract().Hex(), "--log-level", "debug")
	conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	keys := pb.NewKeyServiceClient(conn)
	httpDo := func(where, method, path, body string) int {
		t.Helper()
		code, text := srv.do(t, method, path, body)
		out.add(where+" "+method+" "+path, fmt.Sprintf("%d %s", code, text))
		return code
	}
	grpcDo := func(where string, call func(ctx context.Context) error) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := call(ctx)
		if err != nil {
			out.add(where+" gRPC", status.Convert(err).Message())
		}
		return err
	}
	listAll := func(ctx context.Context) error {
		s, err := keys.ListKeys(ctx, &pb.ListKeysRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	listDeposits := func(ctx context.Context) error {
		s, err := keys.ListDepositData(ctx, &pb.ListDepositDataRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	}

	if code := httpDo("up", "POST", "/api/v1/keys/request", `{"pod_name":"secrets-0","count":2}`); code != 200 {
		t.Fatalf("request with everything up: %d", code)
	}
	if code := httpDo("up", "GET", "/api/v1/deposit-data", ""); code != 200 {
		t.Fatalf("deposit-data with everything up: %d", code)
	}
	httpDo("up", "GET", "/metrics", "")

	// The execution node goes away: exports cannot tell what is on chain.
	rpc.close()
	if code := httpDo("node down", "GET", "/api/v1/deposit-data", ""); code == 200 {
		t.Fatalf("deposit-data with the execution node down answered 200")
	}
	if err := grpcDo("node down ListDepositData", listDeposits); err == nil {
		t.Fatal("ListDepositData with the execution node down succeeded")
	}
	// The deposit index notices too (it syncs every 12 s) and logs it.
	waitFor(t, 45*time.Second, "the deposit index to log the unreachable node", func() bool {
		return strings.Contains(srv.stderr.String(), "deposit index: will retry")
	})

	// The database goes away.
	dbProxy.Cut()
	waitFor(t, 20*time.Second, "/readyz 503 with the database down", func() bool {
		code, body := srv.do(t, "GET", "/readyz", "")
		out.add("store down GET /readyz", fmt.Sprintf("%d %s", code, body))
		return code == http.StatusServiceUnavailable
	})
	if _, body := srv.do(t, "GET", "/readyz", ""); !strings.HasPrefix(body, "not ready: store unreachable\n") {
		t.Errorf("/readyz with the database down: %q, want the fixed reason", body)
	}
	httpDo("store down", "POST", "/api/v1/keys/request", `{"pod_name":"secrets-1","count":1}`)
	httpDo("store down", "POST", "/api/v1/keys/release", `{"pod_name":"secrets-0"}`)
	httpDo("store down", "GET", "/api/v1/keys", "")
	httpDo("store down", "GET", "/api/v1/audit", "")
	httpDo("store down", "GET", "/assignments?format=json", "")
	httpDo("store down", "GET", "/assignments", "")
	httpDo("store down", "GET", "/metrics", "")
	grpcDo("store down RequestKeys", func(ctx context.Context) error {
		_, err := keys.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: "secrets-2", Count: 1})
		return err
	})
	grpcDo("store down ListKeys", listAll)
	grpcDo("store down ListDepositData", listDeposits)
	srv.stop(t)
	out.add("stdout (banner)", srv.stdout.String())
	out.add("stderr (logs)", srv.stderr.String())

	if !strings.Contains(out["stdout (banner)"], "store:") || !strings.Contains(out["stderr (logs)"], "ping store") {
		t.Fatalf("the outputs miss what the test provoked:\n%s", out["stderr (logs)"])
	}
	secrets := map[string]string{secretUserinfo: "userinfo password", secretQueryPW: "?password", secretSSLPW: "?sslpassword",
		secretPassfile: "passfile password", secretRPCPath: "RPC path key", secretRPCQuery: "RPC query key",
		realPW: "the database's password"}
	for where, text := range out {
		for secret, what := range secrets {
			if i := strings.Index(text, secret); i >= 0 {
				// Shown with every secret replaced by its name (CI logs).
				context := text[max(0, i-200):min(len(text), i+len(secret)+60)]
				for s, w := range secrets {
					context = strings.ReplaceAll(context, s, "<"+w+">")
				}
				t.Errorf("%s shows the %s: ...%s...", where, what, context)
			}
		}
	}
}

// loggedServer is a `pkmanager serve --dev` process whose whole output is
// kept.
type loggedServer struct {
	cmd            *exec.Cmd
	grpcAddr       string
	httpAddr       string
	stdout, stderr *syncBuffer
	done           chan error
	stopped        bool
	client         *http.Client
}

func startLoggedServer(t *testing.T, dataDir string, extra ...string) *loggedServer {
	t.Helper()
	args := append([]string{"serve", "--dev", "--data-dir", dataDir, "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--log-format", "json"}, extra...)
	s := &loggedServer{cmd: exec.Command(binary, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{},
		done: make(chan error, 1), client: &http.Client{Timeout: 20 * time.Second}}
	s.cmd.Env = cleanEnv()
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.After(60 * time.Second)
	for {
		text := s.stdout.String()
		g, h := grpcLine.FindStringSubmatch(text), httpLine.FindStringSubmatch(text)
		if g != nil && h != nil && strings.Contains(text, "reuse delay:") {
			s.grpcAddr, s.httpAddr = g[1], h[1]
			return s
		}
		select {
		case err := <-s.done:
			s.stopped = true
			t.Fatalf("server exited (%v):\n%s\n%s", err, text, s.stderr.String())
		case <-deadline:
			t.Fatalf("server did not start within 60s:\n%s\n%s", text, s.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *loggedServer) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.httpAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *loggedServer) stop(t *testing.T) {
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("server did not stop within 30s of SIGTERM")
	}
}

// startChain runs an embedded dev chain in the test process.
func startChain(t *testing.T) *devchain.Chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := devchain.Start(ctx, devchain.Config{BlockTime: 200 * time.Millisecond, RPCAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rpcProxy is an execution node's URL with an API key in its path and its
// query, in front of the dev chain; close makes the node unreachable.
type rpcProxy struct {
	url string
	srv *http.Server
}

func newRPCProxy(t *testing.T, target string) *rpcProxy {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	forward := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(to)
		r.Out.URL.Path, r.Out.URL.RawPath, r.Out.URL.RawQuery = to.Path, "", ""
	}}
	p := &rpcProxy{url: "http://" + lis.Addr().String() + "/v3/" + secretRPCPath + "?apikey=" + secretRPCQuery}
	p.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only the full URL reaches the node, like a provider's API key.
		if r.URL.Path != "/v3/"+secretRPCPath || r.URL.Query().Get("apikey") != secretRPCQuery {
			http.Error(w, "unknown API key", http.StatusUnauthorized)
			return
		}
		forward.ServeHTTP(w, r)
	})}
	go p.srv.Serve(lis)
	t.Cleanup(p.close)
	return p
}

func (p *rpcProxy) close() { _ = p.srv.Close() }

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
