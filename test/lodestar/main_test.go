// Package lodestar runs the real pkmanager binary against a real Lodestar
// 1.5.1 dev chain (package lodestartest): its beacon node for the reuse
// gate, its validator clients for keys that sign.
package lodestar

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
	"github.com/pkmanager/pkmanager/test/testbin"
)

var binary string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &binary)) }

type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	stderr   *testbin.Buffer
	done     chan error
}

var (
	grpcLine = regexp.MustCompile(`(?m)^  grpc:\s+(\S+)`)
	httpLine = regexp.MustCompile(`(?m)^  http:\s+http://(\S+)`)
)

// startServer runs `pkmanager serve --dev` for chain's network (its genesis
// fork version), with no deposits (keys come from import), plus extra flags.
func startServer(t *testing.T, chain *lodestartest.Chain, extra ...string) *server {
	t.Helper()
	return startServerIn(t, chain, filepath.Join(t.TempDir(), "pkm"), append([]string{"--deposits", "off"}, extra...)...)
}

// startServerIn runs `pkmanager serve --dev` for chain's network on dataDir
// with these flags (the deposit flags among them).
func startServerIn(t *testing.T, chain *lodestartest.Chain, dataDir string, flags ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--dev", "--data-dir", dataDir,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json",
		"--network", "lodestar-dev", "--fork-version", genesisForkVersion(t, chain)}, flags...)
	cmd := exec.Command(binary, args...)
	cmd.Env = testbin.Env()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, stderr: &testbin.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan string, 1)
	go func() {
		var sb strings.Builder
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			sb.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), "reuse delay:") {
				banner <- sb.String()
				sent = true
			}
		}
		if !sent {
			banner <- sb.String()
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	select {
	case out := <-banner:
		g, h := grpcLine.FindStringSubmatch(out), httpLine.FindStringSubmatch(out)
		if g == nil || h == nil {
			_ = cmd.Process.Kill()
			t.Fatalf("server did not start:\n%s\n%s", out, s.stderr.String())
		}
		s.grpcAddr, s.httpAddr = g[1], h[1]
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("server did not start within 60s:\n%s", s.stderr.String())
	}
	t.Cleanup(s.stop)
	return s
}

// genesisForkVersion is the chain config's GENESIS_FORK_VERSION, which
// deposits are signed over. (The genesis endpoint answers the genesis
// state's fork, Altair's on this dev chain.)
func genesisForkVersion(t *testing.T, chain *lodestartest.Chain) string {
	t.Helper()
	resp, err := http.Get(chain.URL + "/eth/v1/config/spec")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Data map[string]string `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Data["GENESIS_FORK_VERSION"] == "" {
		t.Fatalf("spec: %v %v", err, v.Data["GENESIS_FORK_VERSION"])
	}
	return v.Data["GENESIS_FORK_VERSION"]
}

func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("server exited with %v after SIGTERM:\n%s", err, s.stderr.String())
		}
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		s.t.Errorf("server did not stop within 15s of SIGTERM")
	}
	if s.t.Failed() {
		s.t.Logf("pkmanager log:\n%s", lastLines(s.stderr.String(), 60))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a pkmanager command and returns its combined output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = testbin.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("pkmanager %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *server) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.httpAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// apiKey is a key of GET /api/v1/keys.
type apiKey struct {
	Pubkey string `json:"pubkey"`
	State  string `json:"state"`
}

// keys returns the store's keys (GET /api/v1/keys).
func (s *server) keys(t *testing.T) []apiKey {
	t.Helper()
	code, body := s.get(t, "/api/v1/keys")
	if code != 200 {
		t.Fatalf("/api/v1/keys: %d %.300s", code, body)
	}
	var v struct {
		Keys []apiKey `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("/api/v1/keys: %v: %.300s", err, body)
	}
	return v.Keys
}

// keyState returns the store's state of pubkey (GET /api/v1/keys).
func (s *server) keyState(t *testing.T, pubkey string) string {
	t.Helper()
	for _, k := range s.keys(t) {
		if k.Pubkey == pubkey {
			return k.State
		}
	}
	t.Fatalf("key %s not in the store", pubkey)
	return ""
}

// metric returns the value of a metric line (name with labels, as written).
func (s *server) metric(t *testing.T, name string) string {
	t.Helper()
	_, body := s.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// importInterop puts interop validators' keystores into the server's pool.
func (s *server) importInterop(t *testing.T, chain *lodestartest.Chain, indices ...int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keystores")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, i := range indices {
		ks, err := chain.Keystore(i)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("keystore-%d.json", i)), []byte(ks), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "import", "--server", s.grpcAddr, "--keystores", dir, "--password-file", chain.PasswordFile)
}

// request runs `pkmanager request` for pod and returns the keystores it
// wrote (pubkey -> keystore JSON) and the password file.
func (s *server) request(t *testing.T, pod string, n int) (map[string]string, string, error) {
	t.Helper()
	return s.requestWithin(t, pod, n, 30*time.Second)
}

// requestWithin is request with the request's deadline (--timeout).
func (s *server) requestWithin(t *testing.T, pod string, n int, timeout time.Duration) (map[string]string, string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), pod)
	pw := filepath.Join(t.TempDir(), pod+".pw")
	if err := os.WriteFile(pw, []byte(lodestartest.KeystorePassword), 0o600); err != nil {
		t.Fatal(err)
	}
	msg, err := run(t, "request", "--server", s.grpcAddr, "--pod-name", pod, "--keys", fmt.Sprint(n), "--out", out,
		"--password-file", pw, "--insecure-kdf", "--timeout", timeout.String())
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s", err, msg)
	}
	files, _ := filepath.Glob(filepath.Join(out, "keystores", "*.json"))
	if len(files) == 0 {
		files, _ = filepath.Glob(filepath.Join(out, "*", "*.json"))
	}
	got := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ks struct {
			Pubkey string `json:"pubkey"`
		}
		if json.Unmarshal(b, &ks) != nil || ks.Pubkey == "" {
			continue
		}
		got["0x"+strings.TrimPrefix(ks.Pubkey, "0x")] = string(b)
	}
	if len(got) != n {
		return nil, "", fmt.Errorf("request wrote %d keystores (%v), want %d: %s", len(got), files, n, msg)
	}
	return got, pw, nil
}
