package k8s_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var grpcLine = regexp.MustCompile(`(?m)^  grpc:\s+(\S+)`)
var httpLine = regexp.MustCompile(`(?m)^  http:\s+http://(\S+)`)

// TestCLI runs the real binary outside dev mode against the API server: the
// serve flags (--kubeconfig, --watch-namespace, token auth and the watcher on
// by default) and the client's --token-file.
func TestCLI(t *testing.T) {
	c := newCluster(t, "cli")
	ctx := c.ctx
	dir := t.TempDir()
	bin := filepath.Join(dir, "pkmanager")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/pkmanager").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(env.KubeconfigFor(c.pkm.BearerToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	kek := filepath.Join(dir, "kek.hex")
	os.WriteFile(kek, []byte(strings.Repeat("ab", 32)), 0o600)

	node := c.node("n", true)
	p := c.pod("validator-0", node, nil)
	q := c.pod("validator-1", node, nil)

	cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--kek-file", kek,
		"--network", "testnet", "--fork-version", "0x10000038", "--withdrawal-address", "0x0000000000000000000000000000000000000001",
		"--deposits", "export", "--reuse-delay", "0s",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--kubeconfig", kubeconfig, "--watch-namespace", c.ns, "--watch-resync", "300ms")
	cmd.Env = cliEnv()
	stdout, _ := cmd.StdoutPipe()
	var stderr logBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
	})
	banner := make(chan string, 1)
	go func() {
		var sb strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			sb.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "reuse delay:") {
				banner <- sb.String()
			}
		}
	}()
	var grpcAddr, httpAddr string
	select {
	case out := <-banner:
		grpcAddr, httpAddr = grpcLine.FindStringSubmatch(out)[1], httpLine.FindStringSubmatch(out)[1]
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not start:\n%s", stderr.String())
	}

	tokenFile := func(name string, tok string) string {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(tok), 0o600)
		return f
	}
	pTok, err := env.PodToken(ctx, c.ns, validatorSA, p.Name, p.UID, "pkmanager")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, args...)
		cmd.Env = cliEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("request", "--server", grpcAddr, "--pod-name", p.Name, "--keys", "2", "--insecure-kdf",
		"--out", filepath.Join(dir, "keys-0"), "--token-file", tokenFile("p.tok", pTok), "--timeout", "30s")
	if err != nil || !strings.Contains(out, "holds 2 keys") {
		t.Fatalf("request with the pod's token: %v\n%s\n%s", err, out, stderr.String())
	}
	out, err = run("request", "--server", grpcAddr, "--pod-name", q.Name, "--keys", "1", "--insecure-kdf",
		"--out", filepath.Join(dir, "keys-1"), "--token-file", tokenFile("p2.tok", pTok), "--timeout", "10s")
	if err == nil || !strings.Contains(out, "permission denied") || strings.Contains(out, "PermissionDenied") {
		t.Fatalf("request for another pod with p's token: %v\n%s", err, out)
	}
	out, err = run("request", "--server", grpcAddr, "--pod-name", p.Name, "--keys", "1", "--insecure-kdf",
		"--out", filepath.Join(dir, "keys-2"), "--token-file", "", "--timeout", "10s")
	if err == nil || !strings.Contains(out, "not authenticated") || strings.Contains(out, "Unauthenticated") {
		t.Fatalf("request without a token: %v\n%s", err, out)
	}

	adminTok, err := env.ServiceAccountToken(ctx, c.ns, adminSA, "pkmanager")
	if err != nil {
		t.Fatal(err)
	}
	// import takes the token and TLS flags of every client command.
	mnemonic := filepath.Join(dir, "mnemonic.txt")
	os.WriteFile(mnemonic, []byte(strings.Repeat("abandon ", 11)+"about\n"), 0o600)
	out, err = run("import", "--server", grpcAddr, "--mnemonic-file", mnemonic, "--count", "1", "--token-file", "", "--timeout", "10s")
	if err == nil || !strings.Contains(out, "not authenticated") {
		t.Fatalf("import without a token: %v\n%s", err, out)
	}
	out, err = run("import", "--server", grpcAddr, "--mnemonic-file", mnemonic, "--count", "1", "--token-file", tokenFile("admin.tok", adminTok), "--timeout", "30s")
	if err != nil || !strings.Contains(out, "imported 1 keys") {
		t.Fatalf("import with an admin token: %v\n%s", err, out)
	}

	// The watcher (on by default outside dev mode) releases p's keys once it is gone from its Ready node.
	c.forceDelete(p.Name)
	waitFor(t, 20*time.Second, "released by the watcher of the binary", func() (bool, string) {
		code, body := (&srv{t: t}).getURL(t, "http://"+httpAddr+"/api/v1/audit?action=release&pod="+p.Name, adminTok)
		return code == 200 && strings.Contains(body, `"actor":"pod-watcher"`), body
	})
}

// cliEnv is the environment without PKM_* settings and without a cluster.
func cliEnv() []string {
	var out []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PKM_") && !strings.HasPrefix(e, "KUBERNETES_") {
			out = append(out, e)
		}
	}
	return out
}
