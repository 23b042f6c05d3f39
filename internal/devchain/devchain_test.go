package devchain

import (
	"context"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
)

// The dev chain deploys the official contract, makes blocks on its own,
// serves JSON-RPC on loopback, and keeps its state across a restart.
func TestStartRPCAndRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := Start(ctx, Config{DataDir: dir, BlockTime: 50 * time.Millisecond, RPCAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := ethclient.DialContext(ctx, c.RPCEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	id, err := rpc.ChainID(ctx)
	if err != nil || id.Cmp(ChainID) != 0 {
		t.Fatalf("chain ID over %s: %v %v", c.RPCEndpoint(), id, err)
	}
	n, err := depositcontract.DepositCount(ctx, rpc, c.DepositContract(), nil)
	if err != nil || n != 0 {
		t.Fatalf("deposit count: %d %v", n, err)
	}
	b1, _ := rpc.BlockNumber(ctx)
	time.Sleep(300 * time.Millisecond)
	b2, _ := rpc.BlockNumber(ctx)
	if b2 <= b1 {
		t.Fatalf("no blocks made on their own: %d then %d", b1, b2)
	}
	rpc.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c2, err := Start(ctx, Config{DataDir: dir, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	b3, err := c2.Client().BlockNumber(ctx)
	if err != nil || b3 < b2 {
		t.Fatalf("after restart head %d (%v), was at least %d", b3, err, b2)
	}
	if c2.DepositContract() != c.DepositContract() {
		t.Fatal("contract moved")
	}
	if _, err := depositcontract.DepositCount(ctx, c2.Client(), c2.DepositContract(), nil); err != nil {
		t.Fatal(err)
	}
	if got := c2.Commit(); got != b3+1 {
		t.Fatalf("manual commit made block %d, want %d", got, b3+1)
	}
}
