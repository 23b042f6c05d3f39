package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/test/testbin"
)

func freePort(t *testing.T) string { return testbin.FreeAddr(t) }

// A pod's init container usually starts before the server is reachable: the
// client waits and retries, then succeeds once the server is up.
func TestClientWaitsForServer(t *testing.T) {
	addr := freePort(t)
	out := filepath.Join(t.TempDir(), "keys")
	cmd := exec.Command(binary, "request", "--server", addr, "--pod-name", "early-pod", "--keys", "2",
		"--out", out, "--insecure-kdf", "--timeout", "60s")
	cmd.Env = cleanEnv()
	var output syncBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	time.Sleep(1500 * time.Millisecond) // the client is retrying now
	select {
	case err := <-done:
		t.Fatalf("client gave up before the server started: %v\n%s", err, output.String())
	default:
	}
	s := startServer(t, t.TempDir(), "--grpc-addr", addr)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("client failed after the server came up: %v\n%s", err, output.String())
		}
	case <-time.After(45 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("client did not finish after the server came up:\n%s", output.String())
	}
	if got := keystoreDir(t, out); len(got) != 2 {
		t.Fatalf("%d keystores", len(got))
	}
	if a := s.assignments(t); len(a["early-pod"]) != 2 {
		t.Fatalf("assignments %v", a)
	}
}

// With no server the client stops at --timeout with a clear error.
func TestClientTimesOut(t *testing.T) {
	addr := freePort(t)
	start := time.Now()
	out, err := run(t, "request", "--server", addr, "--pod-name", "lonely", "--keys", "1",
		"--out", filepath.Join(t.TempDir(), "k"), "--timeout", "2s")
	if err == nil {
		t.Fatal("request without a server succeeded")
	}
	if !strings.Contains(out, "no answer from server "+addr) {
		t.Fatalf("unclear error: %s", out)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("took %s, want about the 2s timeout", d)
	}
}
