// Tests of the allocator's on-chain deposit path (allocator.Config.Depositor)
// with this package's depositor on a real in-process chain. They live here,
// not in package allocator, so that the allocator's race-detector run does
// not compile go-ethereum with -race.
package depositor_test

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/params"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/store"
)

// chainEnv is an allocator that deposits on a real (in-process) chain.
type chainEnv struct {
	chain  *devchain.Chain
	st     store.Store
	dep    *depositor.Depositor
	alloc  *allocator.Allocator
	minted map[store.Pubkey]*store.DepositData
	mu     sync.Mutex
	mints  atomic.Int64
}

type recordingMinter struct {
	e     *chainEnv
	inner allocator.Minter
	mod   func(*store.NewKey)
}

func (m recordingMinter) Mint(ctx context.Context, n int) ([]store.NewKey, error) {
	m.e.mints.Add(1)
	ks, err := m.inner.Mint(ctx, n)
	if err != nil {
		return nil, err
	}
	m.e.mu.Lock()
	defer m.e.mu.Unlock()
	for i := range ks {
		if m.mod != nil {
			m.mod(&ks[i])
		}
		m.e.minted[ks[i].Pubkey] = ks[i].Deposit
	}
	return ks, nil
}

func newChainEnv(t *testing.T, blockTime time.Duration, mod func(*store.NewKey), depMod func(*depositor.Config), chainCfg devchain.Config) *chainEnv {
	t.Helper()
	chainCfg.BlockTime = blockTime
	e := &chainEnv{chain: deptest.StartChain(t, chainCfg), minted: map[store.Pubkey]*store.DepositData{}}
	e.st = deptest.OpenStore(t, filepath.Join(t.TempDir(), "pkm.db"))
	kek := deptest.NewKEK(t)
	e.dep = deptest.NewDepositor(t, e.chain.Client(), e.chain.DepositContract(), e.st, depMod)
	deptest.RunDepositor(t, e.dep)
	var err error
	e.alloc, err = allocator.New(allocator.Config{
		Store: e.st, Opener: kek, Minter: recordingMinter{e: e, inner: deptest.NewMinter(t, kek), mod: mod},
		Depositor: e.dep, ReuseDelay: 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func checkSet(t *testing.T, res allocator.Result, n int) []string {
	t.Helper()
	if len(res.Keys) != n {
		t.Fatalf("%d keys, want %d", len(res.Keys), n)
	}
	var out []string
	for _, k := range res.Keys {
		sk, err := keys.SecretKeyFromBytes(k.Secret)
		if err != nil || sk.PublicKey() != k.Pubkey {
			t.Fatalf("secret does not match key %s: %v", k.Pubkey, err)
		}
		out = append(out, k.Pubkey.String())
	}
	return out
}

// Concurrent requests of several pods (with duplicates) mint only their
// shortfalls, wait for their deposits (about one block), and get exactly
// those keys; every minted key has exactly one deposit on chain. A pod served
// from the pool meanwhile is not held up by the deposits.
func TestOnChainRequests(t *testing.T) {
	e := newChainEnv(t, 0, nil, nil, devchain.Config{Manual: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Blocks every 300 ms, unless paused.
	var paused atomic.Bool
	stopBlocks := make(chan struct{})
	blocksDone := make(chan struct{})
	go func() {
		defer close(blocksDone)
		tk := time.NewTicker(300 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopBlocks:
				return
			case <-tk.C:
				if !paused.Load() {
					e.chain.Commit()
				}
			}
		}
	}()
	defer func() { close(stopBlocks); <-blocksDone }()
	startBlock, _ := e.chain.Client().BlockNumber(ctx)
	type answer struct {
		pod  string
		keys []string
		res  allocator.Result
	}
	var (
		mu      sync.Mutex
		answers []answer
		wg      sync.WaitGroup
	)
	start := time.Now()
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := fmt.Sprintf("validator-%d", i%6)
			n := 1 + (i%6)*3
			res, err := e.alloc.Request(ctx, pod, "", n)
			if err != nil {
				t.Error(err)
				return
			}
			ks := checkSet(t, res, n)
			mu.Lock()
			answers = append(answers, answer{pod, ks, res})
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	endBlock, _ := e.chain.Client().BlockNumber(ctx)
	if t.Failed() {
		t.FailNow()
	}
	byPod := map[string][]string{}
	owner := map[string]string{}
	totalMinted := 0
	for _, a := range answers {
		if prev, ok := byPod[a.pod]; ok {
			if strings.Join(prev, ",") != strings.Join(a.keys, ",") {
				t.Fatalf("pod %s: duplicate requests got different sets", a.pod)
			}
		} else {
			byPod[a.pod] = a.keys
			for _, k := range a.keys {
				if o, dup := owner[k]; dup {
					t.Fatalf("key %s handed to %s and %s", k, o, a.pod)
				}
				owner[k] = a.pod
			}
		}
		totalMinted += a.res.Minted
	}
	if totalMinted != 1+4+7+10+13+16 || len(e.minted) != totalMinted {
		t.Fatalf("minted %d keys (%d recorded), want exactly the 51 the pods asked for", totalMinted, len(e.minted))
	}
	deptest.CheckDeposits(t, e.chain.Client(), e.chain.DepositContract(), e.minted, uint64(totalMinted))
	// Every minted key is now assigned to the pod it was minted for.
	depositBlocks := map[uint64]bool{}
	for pk := range e.minted {
		k, err := e.st.GetKey(ctx, pk)
		if err != nil || k.State != store.StateAssigned || owner[pk.String()] != k.Pod || k.DepositTx == nil || k.DepositTx.Block == 0 {
			t.Fatalf("minted key %s: %s %v", pk, deptest.Describe(k), err)
		}
		depositBlocks[k.DepositTx.Block] = true
	}
	// All deposits went out together, not one per key: a sender that waited
	// for each deposit before the next would spread the 51 over 51 blocks.
	// Counted in blocks that hold the deposits, at most one per request, not
	// in blocks the wall clock made meanwhile (minting and confirming under
	// load took 9 blocks of 300 ms once).
	t.Logf("the deposits of 51 keys landed in %d blocks; %d blocks in %s", len(depositBlocks), endBlock-startBlock, elapsed)
	if n := len(depositBlocks); n > 12 {
		t.Fatalf("the deposits of 51 keys for 12 requests landed in %d blocks (blocks %d-%d, %s)", n, startBlock, endBlock, elapsed)
	}

	// A pod served from the pool answers while another pod's deposits wait.
	// No blocks now: the big request's deposits cannot confirm until the
	// pool request has been answered.
	paused.Store(true)
	slow := make(chan error, 1)
	go func() {
		res, err := e.alloc.Request(ctx, "validator-big", "", 20)
		if err == nil && res.Minted != 20 {
			err = fmt.Errorf("big request minted %d keys, want 20", res.Minted)
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond) // its deposits are now pending
	if _, err := e.alloc.Release(ctx, "validator-0", ""); err != nil {
		t.Fatal(err)
	}
	res, err := e.alloc.Request(ctx, "validator-recycled", "", 1)
	if err != nil || res.Recycled != 1 || res.Minted != 0 {
		t.Fatalf("recycle-path request: %+v %v", res, err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the big request finished without a block: %v", err)
	default:
	}
	paused.Store(false)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

// A deposit the contract rejects fails the request clearly; the key is in
// deposit-failed and never handed out.
func TestOnChainDepositFailed(t *testing.T) {
	e := newChainEnv(t, 100*time.Millisecond, func(k *store.NewKey) { k.Deposit.DepositDataRoot[5] ^= 1 }, nil, devchain.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e.alloc.Request(ctx, "validator-0", "", 2)
	if !errors.Is(err, allocator.ErrDepositFailed) || !strings.Contains(err.Error(), "deposit_data_root") {
		t.Fatalf("request: %v", err)
	}
	for pk := range e.minted {
		k, err := e.st.GetKey(ctx, pk)
		if err != nil || k.State != store.StateDepositFailed || k.LastPod != "validator-0" {
			t.Fatalf("key %s: %v", deptest.Describe(k), err)
		}
	}
	var held int
	e.st.ListKeys(ctx, store.ListOptions{Pod: "validator-0"}, func(store.Key) error { held++; return nil })
	if held != 0 {
		t.Fatalf("pod holds %d keys after failed deposits", held)
	}
	deptest.CheckDeposits(t, e.chain.Client(), e.chain.DepositContract(), nil, 0)
}

// A funder that cannot pay: a clear error naming both amounts, and nothing
// minted, recorded or sent.
func TestOnChainInsufficientFunds(t *testing.T) {
	poorKey, _ := crypto.GenerateKey()
	poor := crypto.PubkeyToAddress(poorKey.PublicKey)
	e := newChainEnv(t, 100*time.Millisecond, nil, func(c *depositor.Config) { c.FunderKey = poorKey },
		devchain.Config{Alloc: types.GenesisAlloc{poor: {Balance: new(big.Int).Mul(big.NewInt(50), big.NewInt(params.Ether))}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e.alloc.Request(ctx, "validator-0", "", 2)
	if !errors.Is(err, allocator.ErrDepositsUnavailable) || !errors.Is(err, depositor.ErrInsufficientFunds) ||
		!strings.Contains(err.Error(), "2 deposits need 64.") || !strings.Contains(err.Error(), "has 50 ETH (50000000000000000000 wei)") {
		t.Fatalf("request: %v", err)
	}
	counts, err := e.st.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for st, n := range counts {
		if n != 0 {
			t.Fatalf("%d keys in state %s after a refused request", n, st)
		}
	}
	if e.mints.Load() != 0 {
		t.Fatal("minted although the funds check failed")
	}
	if n, _ := e.chain.Client().PendingNonceAt(ctx, poor); n != 0 {
		t.Fatalf("%d transactions sent", n)
	}
	// One key is affordable.
	res, err := e.alloc.Request(ctx, "validator-0", "", 1)
	if err != nil || res.Minted != 1 {
		t.Fatalf("affordable request: %+v %v", res, err)
	}
}

// A request that gives up while its deposits are pending leaves the keys
// intended for the pod; asking again waits for them instead of minting.
func TestOnChainRetryWaitsForPendingKeys(t *testing.T) {
	e := newChainEnv(t, 0, nil, nil, devchain.Config{Manual: true})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := e.alloc.Request(ctx, "validator-0", "", 3)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request without blocks: %v", err)
	}
	var pending int
	e.st.ListKeys(context.Background(), store.ListOptions{Pod: "validator-0", States: []store.State{store.StatePendingDeposit}},
		func(store.Key) error { pending++; return nil })
	if pending != 3 {
		t.Fatalf("%d keys pending for the pod, want 3", pending)
	}
	deptest.CommitEvery(t, e.chain, 100*time.Millisecond)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.alloc.Request(ctx, "validator-0", "", 3)
	if err != nil || res.Minted != 0 || len(res.Keys) != 3 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if e.mints.Load() != 1 {
		t.Fatalf("minted %d times, want once", e.mints.Load())
	}
	deptest.CheckDeposits(t, e.chain.Client(), e.chain.DepositContract(), e.minted, 3)
}
