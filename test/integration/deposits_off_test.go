package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A server that never mints (--deposits off, outside dev mode) needs no
// withdrawal address: it serves imported keys and fails plainly when the
// pool is empty.
func TestDepositsOffNeedsNoWithdrawalAddress(t *testing.T) {
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek.hex")
	os.WriteFile(kek, []byte(strings.Repeat("ef", 32)), 0o600)
	cmd := exec.Command(binary, "serve", "--deposits", "off", "--network", "hoodi", "--kek-file", kek, "--data-dir", filepath.Join(dir, "data"),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--watch=false", "--auth", "none")
	cmd.Env = cleanEnv()
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
	})
	var grpcAddr string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if g := grpcLine.FindStringSubmatch(stdout.String()); g != nil && strings.Contains(stdout.String(), "reuse delay:") {
			grpcAddr = g[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve --deposits off exited (%v):\n%s\n%s", err, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve --deposits off did not start:\n%s\n%s", stdout.String(), stderr.String())
		}
	}
	if !strings.Contains(stdout.String(), "withdrawal:   none (--deposits off: no key is minted)") {
		t.Errorf("banner:\n%s", stdout.String())
	}
	out, err := run(t, "request", "--server", grpcAddr, "--pod-name", "off-0", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(dir, "k"), "--timeout", "20s")
	if err == nil || !strings.Contains(out, "pool exhausted") {
		t.Fatalf("request from an empty pool: %v\n%s", err, out)
	}
	mnemonic := filepath.Join(dir, "m.txt")
	mustRun(t, "mnemonic", "new", "--out", mnemonic)
	mustRun(t, "import", "--server", grpcAddr, "--mnemonic-file", mnemonic, "--count", "1")
	if out := mustRun(t, "request", "--server", grpcAddr, "--pod-name", "off-0", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(dir, "k")); !strings.Contains(out, "recycled 1, minted 0") {
		t.Fatalf("request of an imported key:\n%s", out)
	}
}
