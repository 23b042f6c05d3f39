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
// withdrawal address and no network: it serves imported keys and fails
// plainly when the pool is empty; slashing-protection history, which needs
// the chain (--network or --beacon-url), is refused where it is used,
// saying what to give.
func TestDepositsOffNeedsNoWithdrawalAddress(t *testing.T) {
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek.hex")
	os.WriteFile(kek, []byte(strings.Repeat("ef", 32)), 0o600)
	cmd := exec.Command(binary, "serve", "--deposits", "off", "--kek-file", kek, "--data-dir", filepath.Join(dir, "data"),
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
	if !strings.Contains(stdout.String(), "withdrawal:   none (--deposits off: no key is minted)") ||
		!strings.Contains(stdout.String(), "network:      none (--deposits off: no deposit data is made; slashing-protection history needs --network or --beacon-url)") {
		t.Errorf("banner:\n%s", stdout.String())
	}
	out, err := run(t, "request", "--server", grpcAddr, "--pod-name", "off-0", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(dir, "k"), "--timeout", "20s")
	if err == nil || !strings.Contains(out, "pool exhausted") {
		t.Fatalf("request from an empty pool: %v\n%s", err, out)
	}
	mnemonic := filepath.Join(dir, "m.txt")
	mustRun(t, "mnemonic", "new", "--out", mnemonic)
	mustRun(t, "import", "--server", grpcAddr, "--mnemonic-file", mnemonic, "--count", "1")
	if out := mustRun(t, "request", "--server", grpcAddr, "--pod-name", "off-0", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(dir, "k")); !strings.Contains(out, "recycled 1, minted 0") ||
		!strings.Contains(out, "no slashing-protection history (the server knows no chain parameters)") {
		t.Fatalf("request of an imported key:\n%s", out)
	}
	sp := filepath.Join(dir, "sp.json")
	os.WriteFile(sp, []byte(`{"metadata":{"interchange_format_version":"5","genesis_validators_root":"0x`+strings.Repeat("00", 32)+`"},"data":[]}`), 0o600)
	out, err = run(t, "release", "--server", grpcAddr, "--pod-name", "off-0", "--slashing-protection", sp)
	if err == nil || !strings.Contains(out, "--deposits off and neither --network nor --beacon-url") || !strings.Contains(out, "give --beacon-url, or --network (mainnet") {
		t.Fatalf("release with history on a server that knows no chain: %v, want an error saying what to give:\n%s", err, out)
	}
	// Without the history the release goes through.
	if out := mustRun(t, "release", "--server", grpcAddr, "--pod-name", "off-0"); !strings.Contains(out, "released 1 key of pod off-0") {
		t.Fatalf("release:\n%s", out)
	}
}
