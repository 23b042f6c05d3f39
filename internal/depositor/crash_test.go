package depositor_test

import (
	"context"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// The crash tests run the sender in a child process (this test binary,
// running TestCrashHelper) against the parent's dev chain over JSON-RPC and
// a store file. The child kills itself with SIGKILL at the chosen point;
// the parent then restarts the sender on the same store and checks that
// every key is deposited exactly once and none is lost.

const (
	helperMode     = "PKM_CRASH_HELPER"
	helperStore    = "PKM_CRASH_STORE"
	helperRPC      = "PKM_CRASH_RPC"
	helperContract = "PKM_CRASH_CONTRACT"
)

func TestCrashHelper(t *testing.T) {
	mode := os.Getenv(helperMode)
	if mode == "" {
		t.Skip("helper process of the crash tests")
	}
	st, err := bolt.Open(os.Getenv(helperStore), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ethclient.Dial(os.Getenv(helperRPC))
	if err != nil {
		t.Fatal(err)
	}
	d := deptest.NewDepositor(t, client, common.HexToAddress(os.Getenv(helperContract)), st, nil)
	kill := func(int) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	switch mode {
	case "after-record":
		depositor.SetHooks(d, kill, nil)
	case "after-broadcast":
		depositor.SetHooks(d, nil, kill)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d.Run(ctx)
	t.Fatal("the helper was not killed")
}

// crashRun runs the sender in a child process until it kills itself at mode.
func crashRun(t *testing.T, mode, storePath string, chain *devchain.Chain) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperMode+"="+mode, helperStore+"="+storePath,
		helperRPC+"="+chain.RPCEndpoint(), helperContract+"="+chain.DepositContract().Hex())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL at %s: %v\n%s", mode, err, out)
	}
}

type crashEnv struct {
	chain      *devchain.Chain
	storePath  string
	keys       []store.NewKey
	startNonce uint64
}

func newCrashEnv(t *testing.T, n int) *crashEnv {
	t.Helper()
	e := &crashEnv{
		chain:     deptest.StartChain(t, devchain.Config{Manual: true, RPCAddr: "127.0.0.1:0"}),
		storePath: filepath.Join(t.TempDir(), "pkm.db"),
	}
	st, err := bolt.Open(e.storePath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.keys = addPending(t, st, n, "pod-a", nil)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	e.startNonce, err = e.chain.Client().NonceAt(context.Background(), devchain.DevAddress(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *crashEnv) nonces(t *testing.T) (mined, pending uint64) {
	t.Helper()
	ctx := context.Background()
	mined, err := e.chain.Client().NonceAt(ctx, devchain.DevAddress(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pending, err = e.chain.Client().PendingNonceAt(ctx, devchain.DevAddress())
	if err != nil {
		t.Fatal(err)
	}
	return mined - e.startNonce, pending - e.startNonce
}

// recorded reads the keys' records from the store (opened and closed here).
func (e *crashEnv) recorded(t *testing.T) map[store.Pubkey]store.Key {
	t.Helper()
	st, err := bolt.Open(e.storePath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out := map[store.Pubkey]store.Key{}
	for _, k := range e.keys {
		r, err := st.GetKey(context.Background(), k.Pubkey)
		if err != nil {
			t.Fatal(err)
		}
		out[k.Pubkey] = r
	}
	return out
}

// restart runs the sender in this process on the same store until every key
// is settled, and returns the final records.
func (e *crashEnv) restart(t *testing.T) map[store.Pubkey]store.Key {
	t.Helper()
	st := deptest.OpenStore(t, e.storePath)
	d := deptest.NewDepositor(t, e.chain.Client(), e.chain.DepositContract(), st, nil)
	deptest.CommitEvery(t, e.chain, 50*time.Millisecond)
	stop := deptest.RunDepositor(t, d)
	got := deptest.WaitStates(t, st, pubkeys(e.keys), 30*time.Second)
	time.Sleep(300 * time.Millisecond) // a few more rounds: nothing else may be sent
	stop()
	return got
}

func TestCrashBetweenRecordAndBroadcast(t *testing.T) {
	e := newCrashEnv(t, 5)
	crashRun(t, "after-record", e.storePath, e.chain)
	if mined, pending := e.nonces(t); mined != 0 || pending != 0 {
		t.Fatalf("after the crash: %d mined, %d pending transactions; nothing was broadcast", mined, pending)
	}
	before := e.recorded(t)
	for pk, r := range before {
		if r.State != store.StatePendingDeposit || r.DepositTx == nil || len(r.DepositTx.Raw) == 0 {
			t.Fatalf("key %s after the crash: %s tx %+v; want pending with its signed tx recorded", pk, deptest.Describe(r), r.DepositTx)
		}
	}

	got := e.restart(t)
	events := deptest.CheckDeposits(t, e.chain.Client(), e.chain.DepositContract(), depositsOf(e.keys), 5)
	for pk, r := range got {
		if r.State != store.StateAssigned || r.Pod != "pod-a" {
			t.Fatalf("key after restart: %s", deptest.Describe(r))
		}
		// The very transaction recorded before the crash was sent.
		if r.DepositTx.Hash != before[pk].DepositTx.Hash || events[pk].TxHash != common.Hash(before[pk].DepositTx.Hash) {
			t.Fatalf("key %s: deposited by tx %s, recorded %x before the crash", pk, events[pk].TxHash, before[pk].DepositTx.Hash)
		}
	}
	if mined, pending := e.nonces(t); mined != 5 || pending != 5 {
		t.Fatalf("funder sent %d (%d pending) transactions, want 5", mined, pending)
	}
}

func TestCrashBetweenBroadcastAndMined(t *testing.T) {
	for _, minedWhileDown := range []bool{true, false} {
		name := "mined after restart"
		if minedWhileDown {
			name = "mined while down"
		}
		t.Run(name, func(t *testing.T) {
			e := newCrashEnv(t, 4)
			crashRun(t, "after-broadcast", e.storePath, e.chain)
			if mined, pending := e.nonces(t); mined != 0 || pending != 4 {
				t.Fatalf("after the crash: %d mined, %d pending; want 0 and 4", mined, pending)
			}
			before := e.recorded(t)
			if minedWhileDown {
				e.chain.Commit()
				if mined, _ := e.nonces(t); mined != 4 {
					t.Fatalf("%d mined", mined)
				}
			}
			got := e.restart(t)
			deptest.CheckDeposits(t, e.chain.Client(), e.chain.DepositContract(), depositsOf(e.keys), 4)
			for pk, r := range got {
				if r.State != store.StateAssigned || r.DepositTx.Hash != before[pk].DepositTx.Hash {
					t.Fatalf("key after restart: %s", deptest.Describe(r))
				}
			}
			if mined, pending := e.nonces(t); mined != 4 || pending != 4 {
				t.Fatalf("funder sent %d (%d pending) transactions, want 4", mined, pending)
			}
		})
	}
}

// While the sender was down, the nonces of its recorded transactions were
// used by other transactions: one by a plain transfer (the deposit is not on
// chain: it must be signed again with a new nonce), one by the same deposit
// sent by hand with other fees (it is on chain: it must be confirmed, not
// sent again).
func TestNonceConsumedByAnotherTransaction(t *testing.T) {
	e := newCrashEnv(t, 2)
	crashRun(t, "after-record", e.storePath, e.chain)
	before := e.recorded(t)
	byNonce := map[uint64]store.NewKey{}
	for _, k := range e.keys {
		byNonce[before[k.Pubkey].DepositTx.Nonce] = k
	}
	transferred, byHand := byNonce[e.startNonce], byNonce[e.startNonce+1]
	if transferred.Deposit == nil || byHand.Deposit == nil {
		t.Fatalf("recorded nonces %v, want %d and %d", byNonce, e.startNonce, e.startNonce+1)
	}
	ctx := context.Background()
	c := e.chain.Client()
	signer := types.LatestSignerForChainID(devchain.ChainID)
	self := devchain.DevAddress()
	contract := e.chain.DepositContract()
	dd := byHand.Deposit
	for _, inner := range []*types.DynamicFeeTx{
		{Nonce: e.startNonce, Gas: 21000, To: &self, Value: big.NewInt(1)},
		{Nonce: e.startNonce + 1, Gas: 300_000, To: &contract, Value: depositcontract.GweiToWei(dd.AmountGwei),
			Data: depositcontract.PackDeposit(byHand.Pubkey, dd.WithdrawalCredentials, dd.Signature, dd.DepositDataRoot)},
	} {
		inner.ChainID, inner.GasTipCap, inner.GasFeeCap = devchain.ChainID, big.NewInt(3*params.GWei), big.NewInt(300*params.GWei)
		tx, err := types.SignNewTx(devchain.DevKey(), signer, inner)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendTransaction(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	handBlock := e.chain.Commit()
	if mined, _ := e.nonces(t); mined != 2 {
		t.Fatalf("%d mined", mined)
	}

	got := e.restart(t)
	deptest.CheckDeposits(t, c, contract, depositsOf(e.keys), 2)
	rt, rh := got[transferred.Pubkey], got[byHand.Pubkey]
	if rt.State != store.StateAssigned || rt.DepositTx.Hash == before[transferred.Pubkey].DepositTx.Hash || rt.DepositTx.Nonce != e.startNonce+2 {
		t.Fatalf("key whose nonce a transfer used: %s tx %+v; want assigned, signed again with nonce %d", deptest.Describe(rt), rt.DepositTx, e.startNonce+2)
	}
	if rh.State != store.StateAssigned || rh.DepositTx.Block != handBlock {
		t.Fatalf("key deposited by hand: %s tx %+v; want assigned, confirmed in block %d", deptest.Describe(rh), rh.DepositTx, handBlock)
	}
	if mined, pending := e.nonces(t); mined != 3 || pending != 3 {
		t.Fatalf("funder nonces %d mined, %d pending; want 3 (transfer, deposit by hand, one new deposit)", mined, pending)
	}
}
