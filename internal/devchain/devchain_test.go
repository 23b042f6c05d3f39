package devchain

import (
	"bytes"
	"context"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
)

// The dev chain deploys the official contract, makes (idle) blocks on its
// own, serves JSON-RPC on loopback, and keeps its state across a restart.
func TestStartRPCAndRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := Start(ctx, Config{DataDir: dir, BlockTime: 50 * time.Millisecond, IdleBlockTime: 50 * time.Millisecond, RPCAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.CrashSafe() {
		t.Fatal("a chain in a new data directory is not crash-safe")
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
	b2 := b1
	for deadline := time.Now().Add(30 * time.Second); b2 <= b1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no blocks made on their own: %d then %d", b1, b2)
		}
		b2, _ = rpc.BlockNumber(ctx)
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
	if !c2.CrashSafe() {
		t.Fatal("the reopened chain is not crash-safe")
	}
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

// Without transactions no block is made before IdleBlockTime; a pending
// transaction is mined at the next tick.
func TestBlocksOnlyForTransactionsAndWhenIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idle := 3 * time.Second
	c, err := Start(ctx, Config{DataDir: t.TempDir(), BlockTime: 20 * time.Millisecond, IdleBlockTime: idle})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.Client()
	head := func() *types.Header {
		t.Helper()
		h, err := cl.HeaderByNumber(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	// A transaction is mined within a few ticks.
	h0 := head()
	start := time.Now()
	tx, err := types.SignNewTx(DevKey(), types.LatestSignerForChainID(ChainID), &types.DynamicFeeTx{
		ChainID: ChainID, Nonce: 1, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9), Gas: 21_000,
		To: &common.Address{1}, Value: big.NewInt(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	r, err := depositcontract.WaitMined(ctx, cl, tx.Hash(), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= idle {
		t.Fatalf("a transaction took %s to be mined (idle block time %s)", took, idle)
	}
	if r.BlockNumber.Uint64() <= h0.Number.Uint64() {
		t.Fatalf("mined in block %d, head was %d", r.BlockNumber, h0.Number)
	}

	// Then nothing until the idle block, made at least idle after the
	// transaction's block, which was made after start.
	h1 := head()
	var h2 *types.Header
	for {
		h2 = head()
		if h2.Number.Uint64() > h1.Number.Uint64() {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("no idle block within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took < idle {
		t.Fatalf("an empty block %s after the transaction was sent; idle block time %s", took, idle)
	}
	if h2.Number.Uint64() != h1.Number.Uint64()+1 {
		t.Fatalf("head went from %d to %d at once", h1.Number, h2.Number)
	}
	if b, err := cl.BlockByNumber(ctx, h2.Number); err != nil || len(b.Transactions()) != 0 {
		t.Fatalf("idle block: %v", err)
	}
}

// A data directory made by an earlier version (go-ethereum's defaults:
// Pebble, path scheme) still opens, with its blocks, and a warning that it
// is not crash-safe.
func TestLegacyDataDirOpensWithWarning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	saved := newLayout
	newLayout.engine, newLayout.scheme = "", ""
	c, err := Start(ctx, Config{DataDir: dir, Manual: true})
	newLayout = saved
	if err != nil {
		t.Fatal(err)
	}
	c.Commit()
	head := c.Commit()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	c, err = Start(ctx, Config{DataDir: dir, Manual: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.CrashSafe() {
		t.Fatal("a Pebble/path-scheme chain reports crash-safe")
	}
	if n, err := c.Client().BlockNumber(ctx); err != nil || n != head {
		t.Fatalf("head %d (%v), want %d", n, err, head)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "not crash-safe") || !strings.Contains(out, "state_scheme=path") ||
		!strings.Contains(out, "db_engine=pebble") || !strings.Contains(out, "new data directory") {
		t.Fatalf("no warning about the legacy chain:\n%s", out)
	}
}

// Commit's block has every transaction the pool accepted before it, also one
// whose promotion still waits behind another's when Commit starts.
// go-ethereum's pool (v1.17.10) merges that promotion into the forced reset a
// block starts with, and that run leaves the transaction queued until the
// next block (go-ethereum#35649): the depositor's crash test saw a block with
// one of two transactions sent before it. The pool's first promotion run is
// held here in its announcement to subscribers, so the second transaction is
// sent, and Commit starts, while it runs.
func TestCommitIncludesEveryAcceptedTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.Client()
	nonce, err := cl.NonceAt(ctx, DevAddress(), nil)
	if err != nil {
		t.Fatal(err)
	}

	held := make(chan core.NewTxsEvent)
	sub := c.eth.TxPool().SubscribeTransactions(held, false)
	defer sub.Unsubscribe()
	stop := make(chan struct{})
	drained := make(chan struct{})
	defer func() { close(stop); <-drained }()
	release := make(chan struct{})
	go func() {
		defer close(drained)
		select {
		case <-release:
			time.Sleep(300 * time.Millisecond)
		case <-stop:
			return
		}
		for {
			select {
			case <-held:
			case <-stop:
				return
			}
		}
	}()

	var sent []common.Hash
	for i := range uint64(2) {
		tx, err := types.SignNewTx(DevKey(), types.LatestSignerForChainID(ChainID), &types.DynamicFeeTx{
			ChainID: ChainID, Nonce: nonce + i, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9), Gas: 21_000,
			To: &common.Address{1}, Value: big.NewInt(1),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.SendTransaction(ctx, tx); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, tx.Hash())
	}
	// Let the first run finish a while after Commit has started.
	close(release)
	head := c.Commit()
	b, err := cl.BlockByNumber(ctx, new(big.Int).SetUint64(head))
	if err != nil {
		t.Fatal(err)
	}
	var got []common.Hash
	for _, tx := range b.Transactions() {
		got = append(got, tx.Hash())
	}
	if len(got) != 2 || got[0] != sent[0] || got[1] != sent[1] {
		t.Fatalf("block %d has transactions %v; want the two sent before Commit, %v", head, got, sent)
	}
}
