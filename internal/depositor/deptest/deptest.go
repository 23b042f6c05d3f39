// Package deptest assembles what tests of on-chain deposits need: a dev
// chain with the official deposit contract, a bbolt store, a KEK, a real
// minter and a depositor wired to them.
package deptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// WithdrawalAddress of minted test keys.
var WithdrawalAddress = [20]byte{0xde, 0xad}

// Network of minted test keys.
var Network = deposit.Network{Name: "devnet", GenesisForkVersion: [4]byte{0x10, 0x00, 0x00, 0x38}}

// NewKEK returns a random KEK.
func NewKEK(t testing.TB) *seal.KEK {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	k, err := seal.ParseKEK(hex.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewMinter returns a real minter of random keys with 0x01 credentials.
func NewMinter(t testing.TB, kek *seal.KEK) *mint.Minter {
	t.Helper()
	m, err := mint.New(mint.Config{Sealer: kek, Network: Network, Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: WithdrawalAddress})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// OpenStore opens (or creates) a bbolt store at path and closes it at the
// end of the test unless the test closes it.
func OpenStore(t testing.TB, path string) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// StartChain starts a dev chain (manual blocks unless blockTime > 0) and
// stops it at the end of the test.
func StartChain(t testing.TB, cfg devchain.Config) *devchain.Chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := devchain.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// NewDepositor returns a depositor on chain c (paid by the dev account)
// for st, with a fast poll.
func NewDepositor(t testing.TB, chain depositor.Chain, contract common.Address, st depositor.Store, mod func(*depositor.Config)) *depositor.Depositor {
	t.Helper()
	cfg := depositor.Config{
		Chain: chain, Store: st, Contract: contract, FunderKey: devchain.DevKey(),
		PollInterval: 20 * time.Millisecond, RescanInterval: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := depositor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// RunDepositor runs d.Run until the test ends (or stop is called) and
// reports a Run error.
func RunDepositor(t testing.TB, d *depositor.Depositor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("depositor Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// CommitEvery makes a block on c every interval until the test ends.
func CommitEvery(t testing.TB, c *devchain.Chain, interval time.Duration) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				c.Commit()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// WaitStates waits until none of pubkeys is pending-deposit and returns
// their final records.
func WaitStates(t testing.TB, st store.Store, pubkeys []store.Pubkey, timeout time.Duration) map[store.Pubkey]store.Key {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := make(map[store.Pubkey]store.Key, len(pubkeys))
		pending := 0
		for _, pk := range pubkeys {
			k, err := st.GetKey(context.Background(), pk)
			if err != nil {
				t.Fatal(err)
			}
			if k.State == store.StatePendingDeposit {
				pending++
			}
			out[pk] = k
		}
		if pending == 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d keys still pending-deposit after %s", pending, len(pubkeys), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckDeposits asserts that the contract holds exactly one DepositEvent
// per key of want (pubkey, withdrawal credentials, amount, signature as
// minted), and that its deposit count is total, both at the head it reads
// first. It returns the events by pubkey.
//
// It reads the events from every block's receipts, not with eth_getLogs:
// go-ethereum's log index (v1.17.10) can fail a search while the chain grows
// ("failed to retrieve log value pointer after last block N: ... of block
// N+1: not found"), and the tests check while blocks are made.
func CheckDeposits(t testing.TB, chain interface {
	depositcontract.Caller
	BlockNumber(ctx context.Context) (uint64, error)
	BlockReceipts(ctx context.Context, blockNrOrHash rpc.BlockNumberOrHash) ([]*types.Receipt, error)
}, contract common.Address, want map[store.Pubkey]*store.DepositData, total uint64) map[store.Pubkey]depositcontract.Event {
	t.Helper()
	ctx := context.Background()
	head, err := chain.BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var events []depositcontract.Event
	for b := uint64(0); b <= head; b++ {
		receipts, err := chain.BlockReceipts(ctx, rpc.BlockNumberOrHashWithNumber(rpc.BlockNumber(b)))
		if err != nil {
			t.Fatalf("receipts of block %d: %v", b, err)
		}
		for _, r := range receipts {
			for _, l := range r.Logs {
				if l.Address != contract || len(l.Topics) == 0 || l.Topics[0] != depositcontract.DepositEventTopic {
					continue
				}
				e, err := depositcontract.ParseEvent(*l)
				if err != nil {
					t.Fatalf("block %d tx %s: %v", b, l.TxHash, err)
				}
				events = append(events, e)
			}
		}
	}
	byKey := map[store.Pubkey]depositcontract.Event{}
	for i, e := range events {
		if e.Index != uint64(i) {
			t.Errorf("event %d has index %d", i, e.Index)
		}
		pk := store.Pubkey(e.Pubkey)
		if _, dup := byKey[pk]; dup {
			t.Errorf("key %s deposited twice", pk)
		}
		byKey[pk] = e
	}
	for pk, dd := range want {
		e, ok := byKey[pk]
		if !ok {
			t.Errorf("no deposit event for key %s", pk)
			continue
		}
		if e.WithdrawalCredentials != dd.WithdrawalCredentials || e.AmountGwei != dd.AmountGwei || e.Signature != dd.Signature {
			t.Errorf("deposit event of %s differs from its deposit data: %+v", pk, e)
		}
		if err := deposit.Verify([48]byte(pk), store.DepositData{
			WithdrawalCredentials: e.WithdrawalCredentials, AmountGwei: e.AmountGwei, Signature: e.Signature,
			DepositMessageRoot: dd.DepositMessageRoot, DepositDataRoot: dd.DepositDataRoot,
			ForkVersion: dd.ForkVersion, NetworkName: dd.NetworkName,
		}, keys.Verify); err != nil {
			t.Errorf("deposit event of %s: %v", pk, err)
		}
	}
	n, err := depositcontract.DepositCount(ctx, chain, contract, new(big.Int).SetUint64(head))
	if err != nil {
		t.Fatal(err)
	}
	if n != total || uint64(len(events)) != total {
		t.Errorf("contract deposit count %d, %d events, want %d", n, len(events), total)
	}
	return byKey
}

// Describe is a short description of a key for failure messages.
func Describe(k store.Key) string {
	return fmt.Sprintf("%s %s pod=%q reason=%q", k.Pubkey, k.State, k.Pod, k.RetiredReason)
}
