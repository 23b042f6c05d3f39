package depositor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// The chain is the truth: a store that says a key has no deposit (a
// restored backup, a store rebuilt from a mnemonic) never makes the sender
// pay for it again.

// dumpInto copies src into a new store (what backup + restore do).
func dumpInto(t *testing.T, src store.Store, path string) *bolt.Store {
	t.Helper()
	var ks []store.Key
	snap, err := src.Dump(t.Context(), func(k store.Key) error {
		ks = append(ks, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dst := deptest.OpenStore(t, path)
	if err := dst.Load(t.Context(), snap, ks); err != nil {
		t.Fatal(err)
	}
	return dst
}

func pubkeysOfNew(ks []store.NewKey) []store.Pubkey {
	out := make([]store.Pubkey, len(ks))
	for i, k := range ks {
		out[i] = k.Pubkey
	}
	return out
}

// A backup taken while keys were pending-deposit without a transaction,
// restored after the live server deposited them: the restored store's
// sender finds the deposits on chain and confirms the keys, paying nothing.
func TestRestoredBackupDoesNotDepositAgain(t *testing.T) {
	chain := deptest.StartChain(t, devchain.Config{})
	kek := deptest.NewKEK(t)
	dir := t.TempDir()
	live := deptest.OpenStore(t, filepath.Join(dir, "live.db"))
	minted, err := deptest.NewMinter(t, kek).Mint(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := live.AddPending(t.Context(), store.AddParams{Pod: "pod-a", PodUID: "A", Want: 2, Keys: minted, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	backup := dumpInto(t, live, filepath.Join(dir, "backup.db"))

	// The live server deposits them.
	d := deptest.NewDepositor(t, chain.Client(), chain.DepositContract(), live, nil)
	stop := deptest.RunDepositor(t, d)
	deptest.WaitStates(t, live, pubkeysOfNew(minted), time.Minute)
	stop()
	want := map[store.Pubkey]*store.DepositData{}
	for _, k := range minted {
		want[k.Pubkey] = k.Deposit
	}
	deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), want, 3)
	balance := func() *big.Int {
		b, err := chain.Client().BalanceAt(context.Background(), devchain.DevAddress(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := balance()

	// The backup is restored and its server's sender runs.
	d2 := deptest.NewDepositor(t, chain.Client(), chain.DepositContract(), backup, nil)
	deptest.RunDepositor(t, d2)
	got := deptest.WaitStates(t, backup, pubkeysOfNew(minted), time.Minute)
	for _, k := range minted {
		g := got[k.Pubkey]
		wantState := store.StateAssigned
		if g.Pod == "" && g.LastPod == "" {
			wantState = store.StateAvailable // the spare
		}
		if g.State != wantState || g.DepositTx == nil || g.DepositTx.Block == 0 {
			t.Errorf("restored key %s", deptest.Describe(g))
		}
	}
	chain.Commit()
	deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), want, 3)
	if after := balance(); after.Cmp(before) != 0 {
		t.Errorf("the funder paid %s wei after the restore", new(big.Int).Sub(before, after))
	}
}

// A derived key whose deposit another account paid (another installation
// on the same mnemonic) is kept out of circulation; a key whose deposit on
// chain has other withdrawal credentials is failed; a random key deposited
// by someone else is confirmed.
func TestDepositOnChainFromElsewhere(t *testing.T) {
	other, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherAddr := crypto.PubkeyToAddress(other.PublicKey)
	chain := deptest.StartChain(t, devchain.Config{Manual: true, Alloc: types.GenesisAlloc{
		otherAddr: {Balance: new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))},
	}})
	kek := deptest.NewKEK(t)
	seed := make([]byte, 32)
	rand.Read(seed)
	der, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "s.db"))
	dm, err := mint.New(mint.Config{Sealer: kek, Network: deptest.Network, Withdrawal: mint.WithdrawalExecution,
		WithdrawalAddress: deptest.WithdrawalAddress, Deriver: der, Indices: st})
	if err != nil {
		t.Fatal(err)
	}
	derived, err := dm.Mint(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	random, err := deptest.NewMinter(t, kek).Mint(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else deposits the derived key and the first random key as
	// minted, and the second random key with other credentials.
	foreign := *random[1].Deposit
	foreign.WithdrawalCredentials[31] ^= 1
	if foreign.DepositDataRoot, err = deposit.DataRoot(random[1].Pubkey, foreign.WithdrawalCredentials, foreign.AmountGwei, foreign.Signature); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, chain, other, derived[0].Pubkey, derived[0].Deposit, 0)
	sendFrom(t, chain, other, random[0].Pubkey, random[0].Deposit, 1)
	sendFrom(t, chain, other, random[1].Pubkey, &foreign, 2)
	chain.Commit()
	all := append(append([]store.NewKey{}, derived...), random...)
	if err := st.AddPending(t.Context(), store.AddParams{Keys: all, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}

	d := deptest.NewDepositor(t, chain.Client(), chain.DepositContract(), st, nil)
	deptest.RunDepositor(t, d)
	deptest.CommitEvery(t, chain, 50*time.Millisecond)
	got := deptest.WaitStates(t, st, pubkeysOfNew(all), time.Minute)
	if k := got[derived[0].Pubkey]; k.State != store.StateDepositFailed || !strings.Contains(k.RetiredReason, "another installation on the same mnemonic") {
		t.Errorf("derived key paid by another account: %s", deptest.Describe(k))
	}
	if k := got[random[0].Pubkey]; k.State != store.StateAvailable {
		t.Errorf("random key deposited elsewhere as minted: %s", deptest.Describe(k))
	}
	if k := got[random[1].Pubkey]; k.State != store.StateDepositFailed || !strings.Contains(k.RetiredReason, "not ours") {
		t.Errorf("random key deposited with other credentials: %s", deptest.Describe(k))
	}
	// Nothing was paid by the funder: only the three foreign deposits exist.
	n, err := depositcontract.DepositCount(t.Context(), chain.Client(), chain.DepositContract(), nil)
	if err != nil || n != 3 {
		t.Errorf("deposit count %d, %v; want 3 (none by the server)", n, err)
	}
}

func sendFrom(t *testing.T, chain *devchain.Chain, priv *ecdsa.PrivateKey, pk store.Pubkey, d *store.DepositData, nonce uint64) {
	t.Helper()
	to := chain.DepositContract()
	tx, err := types.SignNewTx(priv, types.LatestSignerForChainID(devchain.ChainID), &types.DynamicFeeTx{
		ChainID: devchain.ChainID, Nonce: nonce, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9), Gas: 300_000,
		To: &to, Value: depositcontract.GweiToWei(d.AmountGwei),
		Data: depositcontract.PackDeposit(pk, d.WithdrawalCredentials, d.Signature, d.DepositDataRoot),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chain.Client().SendTransaction(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
}
