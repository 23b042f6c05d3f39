package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runServe runs `pkmanager serve --dev` in-process on loopback with args
// for at most a few seconds and returns its error (nil when it served
// until the deadline).
func runServe(t *testing.T, args ...string) error {
	t.Helper()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	root := newRootCommand()
	root.SetOut(io.Discard)
	root.SetArgs(append([]string{"serve", "--dev", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--dev-rpc-addr", "none", "--log-level", "error"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	return root.ExecuteContext(ctx)
}

// fakeNode answers eth_chainId with id (and nothing else).
func fakeNode(t *testing.T, id uint64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if req.Method != "eth_chainId" {
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"not here"}}`, req.ID)
			return
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":"%#x"}`, req.ID, id)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// --dev turns off the guards for real funds (generated KEK, burn address,
// no authentication): it is refused with a public network's name, fork
// version or chain ID, and with an execution node on a public chain.
// 08c6756 accepted every one of these.
func TestDevRefusesPublicNetworks(t *testing.T) {
	contract := "0x00000000219ab540356cBB839Cbe05303d7705Fa"
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"network mainnet", []string{"--network", "mainnet"}, "mainnet"},
		{"network hoodi", []string{"--network", "hoodi", "--deposits", "export"}, "hoodi"},
		{"holesky by fork version", []string{"--network", "holesky", "--fork-version", "0x01017000", "--deposits", "export"}, "holesky"},
		{"sepolia by fork version, other name", []string{"--network", "mydev", "--fork-version", "0x90000069", "--deposits", "export"}, "sepolia"},
		{"chain ID of mainnet", []string{"--chain-id", "1"}, "mainnet"},
		{"chain ID of holesky, export", []string{"--deposits", "export", "--chain-id", "17000", "--eth1-rpc", fakeNode(t, 17000), "--deposit-contract", contract}, "holesky"},
		{"node on mainnet, export", []string{"--deposits", "export", "--eth1-rpc", fakeNode(t, 1), "--deposit-contract", contract}, "mainnet"},
		{"node on sepolia, chain", []string{"--deposits", "chain", "--eth1-rpc", fakeNode(t, 11155111), "--deposit-contract", contract,
			"--funder-key-file", funderKeyFile(t)}, "sepolia"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := runServe(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), "--dev") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("serve --dev %v: %v; want a refusal naming --dev and %q", c.args, err, c.want)
			}
		})
	}
}

// With --auth none, dev mode keeps the loopback rule unless
// --insecure-listen-any says otherwise (08c6756 served on every interface
// without authentication in dev mode); the flag is for dev mode only.
func TestDevAuthNoneLoopbackOnly(t *testing.T) {
	err := runServe(t, "--grpc-addr", "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "--insecure-listen-any") {
		t.Fatalf("serve --dev --grpc-addr 0.0.0.0:0: %v; want a refusal naming loopback and --insecure-listen-any", err)
	}
	if err := runServe(t, "--http-addr", "0.0.0.0:0", "--insecure-listen-any"); err != nil {
		t.Fatalf("serve --dev --insecure-listen-any on 0.0.0.0: %v", err)
	}
}

// funderKeyFile writes a throwaway funder key (mode 0600).
func funderKeyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "funder.hex")
	if err := os.WriteFile(p, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
