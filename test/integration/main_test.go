// Package integration runs the real pkmanager binary on loopback ports and
// drives it through its CLI, gRPC (v1 and the legacy Prysm protocol) and HTTP.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/test/testbin"
)

var binary string // the pkmanager binary built once for all tests

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &binary)) }

// server is one running `pkmanager serve` process.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	dataDir  string
	banner   string // what it printed on stdout at start
	stderr   *syncBuffer
	done     chan error
}

type syncBuffer = testbin.Buffer

var (
	grpcLine = regexp.MustCompile(`(?m)^  grpc:\s+(\S+)`)
	httpLine = regexp.MustCompile(`(?m)^  http:\s+http://(\S+)`)
)

// startServer runs `pkmanager serve --dev` on free loopback ports with the
// given data dir and extra flags, and waits until it prints its addresses.
func startServer(t *testing.T, dataDir string, extra ...string) *server {
	t.Helper()
	// The embedded dev chain makes a block every 200 ms (minted keys are
	// handed out once their deposits are in a block) and serves JSON-RPC on
	// a free port.
	args := append([]string{"serve", "--dev", "--data-dir", dataDir,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json",
		"--dev-block-time", "200ms", "--dev-rpc-addr", "127.0.0.1:0"}, extra...)
	return startServe(t, binary, dataDir, "", args...)
}

// startServe runs the pkmanager binary bin with args (a serve command that
// logs JSON and listens on the loopback addresses it prints) in dir ("":
// the test's) and waits until it prints its addresses.
func startServe(t *testing.T, bin, dataDir, dir string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv() // never inherit PKM_* settings such as a KEK
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, dataDir: dataDir, stderr: &syncBuffer{}, done: make(chan error, 1)}
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
			cmd.Process.Kill()
			t.Fatalf("server did not start:\n%s\n%s", out, s.stderr.String())
		}
		s.grpcAddr, s.httpAddr, s.banner = g[1], h[1], out
		// stderr arrives through a pipe of its own, copied by another
		// goroutine: wait for the start-up log's last line (logged before
		// the banner) so tests that read start-up warnings see all of them.
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.stderr.String(), `"msg":"serving"`); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("the server printed its banner but its log has no \"serving\" line within 10 s:\n%s", s.stderr.String())
			}
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start within 30s:\n%s", s.stderr.String())
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func cleanEnv() []string { return testbin.Env() }

// stop sends SIGTERM and waits for a clean exit.
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
		s.cmd.Process.Kill()
		s.t.Errorf("server did not stop within 15s of SIGTERM")
	}
}

// run runs a pkmanager client command and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = cleanEnv()
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

// assignments returns pod -> sorted pubkeys from /assignments?format=text.
func (s *server) assignments(t *testing.T) map[string][]string {
	t.Helper()
	code, body := s.get(t, "/assignments?format=text")
	if code != 200 {
		t.Fatalf("/assignments: %d %s", code, body)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		if line == "" {
			continue
		}
		pod, pub, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(pub, "0x") || len(pub) != 98 {
			t.Fatalf("bad assignments line %q", line)
		}
		out[pod] = append(out[pod], pub)
	}
	return out
}

func (s *server) counts(t *testing.T) map[string]int {
	t.Helper()
	code, body := s.get(t, "/assignments?format=json")
	if code != 200 {
		t.Fatalf("/assignments json: %d", code)
	}
	var v struct {
		Counts map[string]int `json:"counts"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v.Counts
}
