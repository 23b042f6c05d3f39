package devchain_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/store"
)

// The crash child is this test binary run again with these variables.
const (
	childDirEnv   = "PKM_DEVCHAIN_CRASH_CHILD" // data dir of the chain
	childCheckEnv = "PKM_DEVCHAIN_CRASH_CHECK" // comma-separated tx hashes to look up at start
	childPrefix   = "CRASHCHILD "
)

// Transactions of the crash child: odd nonces pay transferWei to recipient,
// even nonces (from 2; 0 deployed the contract) are 32 ETH deposits.
var (
	recipient   = common.HexToAddress("0x00000000000000000000000000000000000c0ffe")
	transferWei = big.NewInt(1_000_000_007)
	depositWei  = depositcontract.GweiToWei(32_000_000_000)
)

// childLine is one report of the crash child on its stdout.
type childLine struct {
	Event     string `json:"event"` // start, check, mined, error
	Head      uint64 `json:"head,omitempty"`
	HeadHash  string `json:"head_hash,omitempty"`
	Tx        string `json:"tx,omitempty"`
	Nonce     uint64 `json:"nonce,omitempty"`
	Block     uint64 `json:"block,omitempty"`
	BlockHash string `json:"block_hash,omitempty"`
	Missing   bool   `json:"missing,omitempty"`
	Error     string `json:"error,omitempty"`
}

func report(l childLine) {
	b, _ := json.Marshal(l)
	fmt.Println(childPrefix + string(b))
}

// TestCrashChild is the process TestSIGKILLKeepsEveryMinedBlock kills: it
// opens the chain on its data dir (block timer on), reports the head and the
// receipts it was asked about, then sends transfers and deposits one after
// the other and reports each once a client can see it mined.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("helper process of TestSIGKILLKeepsEveryMinedBlock")
	}
	// Never outlive a parent that died.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fail := func(format string, args ...any) {
		report(childLine{Event: "error", Error: fmt.Sprintf(format, args...)})
		os.Exit(3)
	}
	c, err := devchain.Start(ctx, devchain.Config{DataDir: dir, BlockTime: 10 * time.Millisecond})
	if err != nil {
		fail("start: %v", err)
	}
	cl := c.Client()
	head, err := cl.HeaderByNumber(ctx, nil)
	if err != nil {
		fail("head: %v", err)
	}
	report(childLine{Event: "start", Head: head.Number.Uint64(), HeadHash: head.Hash().Hex()})
	if list := os.Getenv(childCheckEnv); list != "" {
		for _, h := range strings.Split(list, ",") {
			r, err := cl.TransactionReceipt(ctx, common.HexToHash(h))
			if err != nil {
				if depositcontract.IsNotFound(err) {
					report(childLine{Event: "check", Tx: h, Missing: true})
					continue
				}
				fail("receipt %s: %v", h, err)
			}
			report(childLine{Event: "check", Tx: h, Block: r.BlockNumber.Uint64(), BlockHash: r.BlockHash.Hex()})
		}
	}

	minter := deptest.NewMinter(t, deptest.NewKEK(t))
	signer := types.LatestSignerForChainID(devchain.ChainID)
	nonce, err := cl.NonceAt(ctx, devchain.DevAddress(), nil)
	if err != nil {
		fail("nonce: %v", err)
	}
	// The next nonce is counted here: a receipt can be visible a moment
	// before the state of its block is the latest.
	for ; ; nonce++ {
		tx, err := childTx(ctx, minter, nonce)
		if err != nil {
			fail("%v", err)
		}
		stx, err := types.SignTx(tx, signer, devchain.DevKey())
		if err != nil {
			fail("sign: %v", err)
		}
		if err := cl.SendTransaction(ctx, stx); err != nil {
			fail("send nonce %d: %v", nonce, err)
		}
		r, err := waitReceipt(ctx, cl, stx.Hash())
		if err != nil {
			fail("receipt of nonce %d: %v", nonce, err)
		}
		if r.Status != types.ReceiptStatusSuccessful {
			fail("transaction with nonce %d reverted", nonce)
		}
		report(childLine{Event: "mined", Tx: stx.Hash().Hex(), Nonce: nonce, Block: r.BlockNumber.Uint64(), BlockHash: r.BlockHash.Hex()})
	}
}

func childTx(ctx context.Context, minter *mint.Minter, nonce uint64) (*types.Transaction, error) {
	tx := &types.DynamicFeeTx{ChainID: devchain.ChainID, Nonce: nonce,
		GasTipCap: big.NewInt(1_000_000_000), GasFeeCap: big.NewInt(100_000_000_000)}
	if nonce%2 == 1 {
		tx.To, tx.Value, tx.Gas = &recipient, transferWei, 21_000
		return types.NewTx(tx), nil
	}
	keys, err := minter.Mint(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("mint: %w", err)
	}
	k, dd := keys[0].Pubkey, keys[0].Deposit
	contract := crypto.CreateAddress(devchain.DevAddress(), 0) // the deposit contract
	tx.To, tx.Value, tx.Gas = &contract, depositWei, 300_000
	tx.Data = depositcontract.PackDeposit(k, dd.WithdrawalCredentials, dd.Signature, dd.DepositDataRoot)
	return types.NewTx(tx), nil
}

func waitReceipt(ctx context.Context, cl *ethclient.Client, h common.Hash) (*types.Receipt, error) {
	for {
		r, err := cl.TransactionReceipt(ctx, h)
		if err == nil {
			return r, nil
		}
		if !depositcontract.IsNotFound(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// A chain SIGKILLed at random moments while it mines transfers and deposits
// keeps every block a client saw: after each restart on the same data dir
// the head has not gone back, every receipt a client saw is in the same
// block, and at the end the contract, its deposits and the balances are
// all there.
func TestSIGKILLKeepsEveryMinedBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills 6 processes")
	}
	dir := t.TempDir()
	const cycles = 6
	seen := map[string]childLine{} // tx -> mined report
	var order []string
	var last childLine // the highest block a client saw mined
	for cycle := range cycles {
		var check []string
		check = append(check, order...)
		lines, kill, wait := startChild(t, dir, check)
		// Start: the head is not below any block seen mined before.
		l := next(t, lines, cycle)
		if l.Event != "start" {
			kill()
			t.Fatalf("cycle %d: child reported %+v, want start (%s)", cycle, l, wait())
		}
		if l.Head < last.Block {
			kill()
			t.Fatalf("cycle %d: after SIGKILL the head is block %d, but block %d (%s) was seen mined before the kill", cycle, l.Head, last.Block, last.BlockHash)
		}
		for range check {
			l := next(t, lines, cycle)
			want := seen[l.Tx]
			if l.Event != "check" || want.Tx == "" {
				kill()
				t.Fatalf("cycle %d: unexpected %+v (%s)", cycle, l, wait())
			}
			if l.Missing || l.Block != want.Block || l.BlockHash != want.BlockHash {
				kill()
				t.Fatalf("cycle %d: transaction %s (nonce %d) was seen mined in block %d %s before a SIGKILL; after the restart its receipt is %+v",
					cycle, want.Tx, want.Nonce, want.Block, want.BlockHash, l)
			}
		}
		// Let it mine a few transactions, then kill it at a random moment.
		n := 2 + rand.IntN(6)
		for range n {
			l := next(t, lines, cycle)
			if l.Event != "mined" {
				kill()
				t.Fatalf("cycle %d: child reported %+v (%s)", cycle, l, wait())
			}
			seen[l.Tx] = l
			order = append(order, l.Tx)
			if l.Block >= last.Block {
				last = l
			}
		}
		time.Sleep(time.Duration(rand.IntN(25)) * time.Millisecond)
		kill()
		// Reports written before the kill count as seen too.
		for l := range lines {
			if l.Event == "mined" {
				seen[l.Tx] = l
				order = append(order, l.Tx)
				if l.Block >= last.Block {
					last = l
				}
			}
		}
		wait()
	}

	// The chain in this process, without blocks of its own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := devchain.Start(ctx, devchain.Config{DataDir: dir, Manual: true})
	if err != nil {
		t.Fatalf("open the chain after %d SIGKILLs: %v", cycles, err)
	}
	defer c.Close()
	cl := c.Client()
	head, err := cl.BlockNumber(ctx)
	if err != nil || head < last.Block {
		t.Fatalf("head %d (%v), block %d was seen mined", head, err, last.Block)
	}
	for _, h := range order {
		want := seen[h]
		r, err := cl.TransactionReceipt(ctx, common.HexToHash(h))
		if err != nil || r.BlockNumber.Uint64() != want.Block || r.BlockHash.Hex() != want.BlockHash {
			t.Fatalf("transaction %s (nonce %d) was seen in block %d %s; now: %v %v", h, want.Nonce, want.Block, want.BlockHash, r, err)
		}
	}
	nonce, err := cl.NonceAt(ctx, devchain.DevAddress(), nil)
	if err != nil {
		t.Fatal(err)
	}
	transfers, deposits := nonce/2, (nonce-1)/2
	if uint64(len(order)) > nonce-1 {
		t.Fatalf("%d transactions seen mined, the dev account's nonce is only %d", len(order), nonce)
	}
	bal, err := cl.BalanceAt(ctx, recipient, nil)
	if want := new(big.Int).Mul(transferWei, new(big.Int).SetUint64(transfers)); err != nil || bal.Cmp(want) != 0 {
		t.Errorf("recipient balance %v (%v), want %v (%d transfers)", bal, err, want, transfers)
	}
	bal, err = cl.BalanceAt(ctx, c.DepositContract(), nil)
	if want := new(big.Int).Mul(depositWei, new(big.Int).SetUint64(deposits)); err != nil || bal.Cmp(want) != 0 {
		t.Errorf("deposit contract balance %v (%v), want %v (%d deposits)", bal, err, want, deposits)
	}
	count, err := depositcontract.DepositCount(ctx, cl, c.DepositContract(), nil)
	if err != nil || count != deposits {
		t.Errorf("deposit count %d (%v), want %d", count, err, deposits)
	}
	events, err := depositcontract.Events(ctx, cl, c.DepositContract(), 0, head, 0)
	if err != nil || uint64(len(events)) != deposits {
		t.Errorf("%d deposit events (%v), want %d", len(events), err, deposits)
	}
	keys := map[store.Pubkey]bool{}
	for i, e := range events {
		if e.Index != uint64(i) || keys[e.Pubkey] {
			t.Errorf("event %d: index %d, pubkey seen before: %v", i, e.Index, keys[e.Pubkey])
		}
		keys[e.Pubkey] = true
	}
	t.Logf("%d SIGKILLs: head %d, %d transactions seen mined all in place, %d transfers and %d deposits on chain",
		cycles, head, len(order), transfers, deposits)
}

// startChild runs TestCrashChild on dir and returns its reports, a kill
// (SIGKILL) and a wait that returns its stderr.
func startChild(t *testing.T, dir string, check []string) (lines <-chan childLine, kill func(), wait func() string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childCheckEnv+"="+strings.Join(check, ","))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan childLine, 1024)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(ch)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s, ok := strings.CutPrefix(sc.Text(), childPrefix)
			if !ok {
				continue
			}
			var l childLine
			if err := json.Unmarshal([]byte(s), &l); err != nil {
				l = childLine{Event: "error", Error: "bad report: " + s}
			}
			ch <- l
		}
	}()
	killed := false
	kill = func() {
		if !killed {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	waited := false
	wait = func() string {
		if !waited {
			kill()
			<-scanned
			_ = cmd.Wait()
			waited = true
		}
		return stderr.String()
	}
	t.Cleanup(func() { wait() })
	return ch, kill, wait
}

// next returns the child's next report, failing the test on an error
// report, an early exit or a minute of silence.
func next(t *testing.T, lines <-chan childLine, cycle int) childLine {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("cycle %d: the child exited early", cycle)
		}
		if l.Event == "error" {
			t.Fatalf("cycle %d: child: %s", cycle, l.Error)
		}
		return l
	case <-time.After(time.Minute):
		t.Fatalf("cycle %d: no report from the child within a minute", cycle)
	}
	return childLine{}
}
