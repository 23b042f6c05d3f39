package sparepool_test

import (
	"context"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/params"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/sparepool"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/test/testbin"
)

// recMinter records every key it mints (and their deposit data).
type recMinter struct {
	inner allocator.Minter
	mu    sync.Mutex
	keys  map[store.Pubkey]*store.DepositData
}

func (m *recMinter) Mint(ctx context.Context, n int) ([]store.NewKey, error) {
	ks, err := m.inner.Mint(ctx, n)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range ks {
		m.keys[k.Pubkey] = k.Deposit
	}
	return ks, err
}

func (m *recMinter) minted() map[store.Pubkey]*store.DepositData {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[store.Pubkey]*store.DepositData, len(m.keys))
	for k, v := range m.keys {
		out[k] = v
	}
	return out
}

type env struct {
	chain  *devchain.Chain
	st     *bolt.Store
	dep    *depositor.Depositor
	alloc  *allocator.Allocator
	minter *recMinter
	reg    *prometheus.Registry
	pool   *sparepool.Pool
	log    *testbin.Buffer
}

// newEnv is a pool of target keys on a real dev chain (a block every 100
// ms), a bbolt store, the real minter, depositor and allocator; depMod
// changes the depositor (its funder).
func newEnv(t *testing.T, target int, chainCfg devchain.Config, depMod func(*depositor.Config)) *env {
	t.Helper()
	e := &env{chain: deptest.StartChain(t, chainCfg), reg: prometheus.NewRegistry(), log: &testbin.Buffer{}}
	if chainCfg.Manual {
		deptest.CommitEvery(t, e.chain, 100*time.Millisecond)
	}
	e.st = deptest.OpenStore(t, filepath.Join(t.TempDir(), "pkm.db"))
	kek := deptest.NewKEK(t)
	e.dep = deptest.NewDepositor(t, e.chain.Client(), e.chain.DepositContract(), e.st, depMod)
	deptest.RunDepositor(t, e.dep)
	e.minter = &recMinter{inner: deptest.NewMinter(t, kek), keys: map[store.Pubkey]*store.DepositData{}}
	var err error
	if e.alloc, err = allocator.New(allocator.Config{Store: e.st, Opener: kek, Minter: e.minter, Depositor: e.dep}); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(e.log, nil))
	if e.pool, err = sparepool.New(sparepool.Config{Target: target, Store: e.st, Refiller: e.alloc, Sender: e.dep,
		Interval: 20 * time.Millisecond, Registerer: e.reg, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.pool.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (e *env) counts(t *testing.T) map[store.State]int {
	t.Helper()
	c, err := e.st.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) waitAvailable(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := e.counts(t)
		if c[store.StateAvailable] == n && c[store.StatePendingDeposit] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool never reached %d available keys: %v", n, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// The pool mints and deposits its target ahead of requests; a request
// takes pool keys without minting or waiting for a deposit; the pool
// refills to the target, never above it, with one deposit per key.
func TestPoolRefillsAfterRequests(t *testing.T) {
	e := newEnv(t, 3, devchain.Config{BlockTime: 100 * time.Millisecond}, nil)
	e.run(t)
	e.waitAvailable(t, 3)
	if got := len(e.minter.minted()); got != 3 {
		t.Fatalf("pool minted %d keys for a target of 3", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res, err := e.alloc.Request(ctx, "pod-a", "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Minted != 0 || res.Recycled != 2 {
		t.Fatalf("request from a full pool: minted %d, from the pool %d; want 0 and 2", res.Minted, res.Recycled)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("request from the pool took %s", d)
	}
	e.waitAvailable(t, 3)
	time.Sleep(200 * time.Millisecond) // ten more rounds: nothing above the target
	c := e.counts(t)
	minted := e.minter.minted()
	if c[store.StateAvailable] != 3 || c[store.StateAssigned] != 2 || len(minted) != 5 {
		t.Fatalf("after a request of 2 from a pool of 3: %v, %d minted; want 3 available, 2 assigned, 5 minted", c, len(minted))
	}
	if r := metric(t, e.reg, "pkmanager_spare_pool_keys_minted_total"); r != 5 {
		t.Fatalf("pkmanager_spare_pool_keys_minted_total %v, want 5", r)
	}
	if r := metric(t, e.reg, "pkmanager_spare_pool_refills_total"); r < 2 {
		t.Fatalf("pkmanager_spare_pool_refills_total %v, want at least 2", r)
	}
	if b := metric(t, e.reg, "pkmanager_spare_pool_blocked"); b != 0 {
		t.Fatalf("pkmanager_spare_pool_blocked %v", b)
	}
	deptest.CheckDeposits(t, e.chain.Client(), e.chain.DepositContract(), minted, 5)
	if d, err := e.pool.Depth(ctx); err != nil || d != 3 {
		t.Fatalf("Depth = %d, %v; want 3", d, err)
	}
}

// A funder that cannot pay the pool's deposits at the fee cap: the pool
// mints nothing, says so once (WARN, pkmanager_spare_pool_blocked 1), and
// does not retry faster than its interval; a request still gets its keys
// the usual way while the funder can pay for them.
func TestPoolStopsWhenFunderIsShort(t *testing.T) {
	poorKey, _ := crypto.GenerateKey()
	poor := crypto.PubkeyToAddress(poorKey.PublicKey)
	ether := big.NewInt(params.Ether)
	e := newEnv(t, 3, devchain.Config{Manual: true,
		Alloc: types.GenesisAlloc{poor: {Balance: new(big.Int).Mul(big.NewInt(40), ether)}}},
		func(c *depositor.Config) { c.FunderKey = poorKey })
	e.run(t)
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, e.reg, "pkmanager_spare_pool_blocked") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("pool never reported the missing funds")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // ~25 rounds
	if n := len(e.minter.minted()); n != 0 {
		t.Fatalf("pool minted %d keys its funder cannot pay", n)
	}
	if c := e.counts(t); c[store.StatePendingDeposit] != 0 || c[store.StateAvailable] != 0 {
		t.Fatalf("keys stored: %v", c)
	}
	logs := e.log.String()
	if n := strings.Count(logs, "spare pool not refilled"); n != 1 {
		t.Fatalf("blocked pool logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "insufficient") {
		t.Fatalf("log does not say why:\n%s", logs)
	}
	if r := metric(t, e.reg, "pkmanager_spare_pool_refills_total"); r != 0 {
		t.Fatalf("refills %v", r)
	}
	ctx := context.Background()
	if nonce, _ := e.chain.Client().PendingNonceAt(ctx, poor); nonce != 0 {
		t.Fatalf("the poor funder sent %d transactions", nonce)
	}
	// One deposit is payable: a request of one key still gets it.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if res, err := e.alloc.Request(rctx, "pod-a", "", 1); err != nil || len(res.Keys) != 1 {
		t.Fatalf("request of one payable key: %v", err)
	}
}
