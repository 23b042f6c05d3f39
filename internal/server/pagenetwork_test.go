package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
)

// The /assignments header names the network and fork keys are minted for
// and the execution chain: the embedded dev chain's chain ID and contract
// in chain mode, the configured ones (or none) otherwise.
func TestAssignmentsNetworkHeader(t *testing.T) {
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 11))
	if err != nil {
		t.Fatal(err)
	}
	fork, _ := deposit.ParseForkVersion("0x10000038")
	devnet := mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
		Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}}
	for _, tt := range []struct {
		name     string
		mint     mint.Config
		deposits func(dir string) DepositOptions
		want     []string
	}{
		{"export", devnet, func(string) DepositOptions { return DepositOptions{Mode: DepositsExport} },
			[]string{"<dt>Network</dt><dd>devnet</dd>", `<dt>Genesis fork version</dt><dd class="mono">0x10000038</dd>`,
				"<dt>Chain ID</dt><dd>not set</dd>", "<dt>Deposit contract</dt><dd>not set</dd>", "<dt>Deposits</dt><dd>export</dd>"}},
		{"off", mint.Config{}, func(string) DepositOptions { return DepositOptions{Mode: DepositsOff} },
			[]string{"<dt>Network</dt><dd>not set</dd>", "<dt>Deposits</dt><dd>off</dd>"}},
		{"chain", devnet, func(dir string) DepositOptions {
			return DepositOptions{Mode: DepositsChain, DevChain: &devchain.Config{DataDir: filepath.Join(dir, "chain"), BlockTime: time.Second}}
		}, []string{"<dt>Network</dt><dd>devnet</dd>", `<dt>Chain ID</dt><dd class="mono">1337</dd>`,
			`<dt>Deposit contract</dt><dd class="mono">0x`, "<dt>Deposits</dt><dd>chain (1 confirmation)</dd>"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := New(ctx, Options{
				StoreURL: "bolt://" + filepath.Join(dir, "pk.db"), KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
				Mint: tt.mint, Deposits: tt.deposits(dir), Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx) }()
			defer func() { cancel(); <-served }()
			resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/assignments")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET /assignments: %d %v", resp.StatusCode, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("the header lacks %q:\n%s", w, grepHeader(string(body)))
				}
			}
		})
	}
}

func grepHeader(page string) string {
	i, j := strings.Index(page, `<section id="network">`), strings.Index(page, `<section id="states">`)
	if i < 0 || j < i {
		return page
	}
	return page[i:j]
}
