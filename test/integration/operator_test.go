package integration

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A client that cannot reach its server says so within 2 s, names until when
// it retries, and then gives up at --timeout.
func TestClientSaysServerUnreachable(t *testing.T) {
	addr := freePort(t)
	cmd := exec.Command(binary, "request", "--server", addr, "--pod-name", "early-pod", "--keys", "1",
		"--out", filepath.Join(t.TempDir(), "k"), "--timeout", "20s")
	cmd.Env = cleanEnv()
	var output syncBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	want := "server " + addr + " unreachable (connect: connection refused), retrying until "
	for !strings.Contains(output.String(), want) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("no notice within 2s; output so far:\n%s", output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("notice after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(output.String()))
}

// A malformed --server fails at once with what is expected, and so does the
// server's HTTP port given as --server.
func TestClientRefusesBadServerAddress(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, tc := range []struct{ server, want string }{
		{"http://" + s.grpcAddr, "want host:port of the gRPC port without a scheme (e.g. --server " + s.grpcAddr + ")"},
		{"grpc://" + s.grpcAddr + "/", "want host:port of the gRPC port without a scheme"},
		{"127.0.0.1", "missing port in address"},
		{"127.0.0.1:http", `port "http" is not a number`},
		{s.httpAddr, "server " + s.httpAddr + " does not answer gRPC: is it the HTTP port? --server wants the gRPC port"},
	} {
		start := time.Now()
		out, err := run(t, "request", "--server", tc.server, "--pod-name", "p-0", "--out", filepath.Join(t.TempDir(), "k"), "--timeout", "30s")
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("--server %s: err %v, output %q; want %q", tc.server, err, out, tc.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("--server %s: took %s to fail", tc.server, d)
		}
	}
	if a := s.assignments(t); len(a) != 0 {
		t.Fatalf("a refused request assigned keys: %v", a)
	}
}

// Start-up warnings appear once: in the log, not also in the banner.
func TestStartupWarningsOnce(t *testing.T) {
	s := startServer(t, t.TempDir())
	warning := "generated a key-encryption key in " // dev mode's first start
	// The server logs its warnings before it prints the banner; the pipe
	// from its stderr may still be carrying them.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.stderr.String(), warning) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(s.banner+s.stderr.String(), warning); n != 1 {
		t.Fatalf("warning %q appears %d times:\nbanner:\n%s\nlog:\n%s", warning, n, s.banner, s.stderr.String())
	}
	if !strings.Contains(s.banner, "  warnings:     2, in the log\n") {
		t.Errorf("the banner does not count the warnings:\n%s", s.banner)
	}
}

// --version and `pkmanager version` print the binary's version, not a
// placeholder.
func TestVersion(t *testing.T) {
	flag := strings.TrimSpace(mustRun(t, "--version"))
	cmd := strings.TrimSpace(mustRun(t, "version"))
	v, ok := strings.CutPrefix(flag, "pkmanager version ")
	if !ok || v == "" || v == "dev" {
		t.Fatalf("--version printed %q", flag)
	}
	if !strings.HasPrefix(cmd, "pkmanager "+v+" (") {
		t.Fatalf("version printed %q, --version %q", cmd, flag)
	}
}

// GET / leads to the assignments page.
func TestRootRedirectsToAssignments(t *testing.T) {
	s := startServer(t, t.TempDir())
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + s.httpAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "assignments" {
		t.Fatalf("GET / = %d, Location %q; want 302 to assignments", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, body := s.get(t, "/"); code != http.StatusOK || !strings.Contains(body, "<table") {
		t.Fatalf("GET / followed = %d:\n%.300s", code, body)
	}
	if code, _ := s.get(t, "/no-such-page"); code != http.StatusNotFound {
		t.Fatalf("GET /no-such-page = %d, want 404 (only the root redirects)", code)
	}
}
