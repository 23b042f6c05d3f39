package depositor_test

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/params"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/store"
)

// addPending mints n keys and adds them as pending-deposit for pod (spares
// when pod is empty).
func addPending(t *testing.T, st store.Store, n int, pod string, mod func(*store.NewKey)) []store.NewKey {
	t.Helper()
	kek := deptest.NewKEK(t)
	keys, err := deptest.NewMinter(t, kek).Mint(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		for i := range keys {
			mod(&keys[i])
		}
	}
	if err := st.AddPending(context.Background(), store.AddParams{Pod: pod, Want: max(n, 1), Keys: keys, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func pubkeys(keys []store.NewKey) []store.Pubkey {
	out := make([]store.Pubkey, len(keys))
	for i, k := range keys {
		out[i] = k.Pubkey
	}
	return out
}

func depositsOf(keys ...[]store.NewKey) map[store.Pubkey]*store.DepositData {
	out := map[store.Pubkey]*store.DepositData{}
	for _, list := range keys {
		for _, k := range list {
			out[k.Pubkey] = k.Deposit
		}
	}
	return out
}

// Deposits of keys for two pods and spares are sent in one batch with
// consecutive nonces, land in one block, and each key ends where it was
// intended, with exactly one DepositEvent carrying its deposit data.
func TestDepositsConfirmed(t *testing.T) {
	chain := deptest.StartChain(t, devchain.Config{Manual: true})
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "pkm.db"))
	reg := prometheus.NewRegistry()
	m := depositor.NewMetrics(reg)
	d := deptest.NewDepositor(t, chain.Client(), chain.DepositContract(), st, func(c *depositor.Config) { c.Metrics = m })
	a := addPending(t, st, 12, "pod-a", nil)
	b := addPending(t, st, 7, "pod-b", nil)
	spare := addPending(t, st, 3, "", nil)
	ctx := context.Background()
	startBlock, _ := chain.Client().BlockNumber(ctx)
	startNonce, _ := chain.Client().NonceAt(ctx, d.Funder(), nil) // the dev account deployed the contract

	deptest.RunDepositor(t, d)
	// Wait for all 22 transactions to be in the pool, then make one block.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := chain.Client().PendingNonceAt(ctx, d.Funder())
		if err != nil {
			t.Fatal(err)
		}
		if n == startNonce+22 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d deposit transactions sent", n-startNonce)
		}
		time.Sleep(10 * time.Millisecond)
	}
	block := chain.Commit()
	got := deptest.WaitStates(t, st, append(append(pubkeys(a), pubkeys(b)...), pubkeys(spare)...), 30*time.Second)
	for _, list := range []struct {
		keys  []store.NewKey
		state store.State
		pod   string
	}{{a, store.StateAssigned, "pod-a"}, {b, store.StateAssigned, "pod-b"}, {spare, store.StateAvailable, ""}} {
		for _, k := range list.keys {
			r := got[k.Pubkey]
			if r.State != list.state || r.Pod != list.pod || r.DepositTx == nil || r.DepositTx.Block != block {
				t.Fatalf("key %s: %s, want %s for %q in block %d (tx %+v)", k.Pubkey, deptest.Describe(r), list.state, list.pod, block, r.DepositTx)
			}
		}
	}
	events := deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), depositsOf(a, b, spare), 22)
	for pk, e := range events {
		if e.Block != block || e.Block <= startBlock {
			t.Fatalf("deposit of %s in block %d, want all in block %d", pk, e.Block, block)
		}
		if got[pk].DepositTx.Hash != e.TxHash {
			t.Fatalf("recorded tx %x, event in tx %s", got[pk].DepositTx.Hash, e.TxHash)
		}
	}
	// Consecutive nonces from the funder, EIP-1559 transactions.
	nonces := map[uint64]bool{}
	for pk := range events {
		tx, _, err := chain.Client().TransactionByHash(ctx, got[pk].DepositTx.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if tx.Type() != types.DynamicFeeTxType {
			t.Fatalf("deposit transaction of type %d, want EIP-1559", tx.Type())
		}
		nonces[tx.Nonce()] = true
	}
	for i := startNonce; i < startNonce+22; i++ {
		if !nonces[i] {
			t.Fatalf("nonce %d unused; nonces %v", i, nonces)
		}
	}
	if s, c, f := testutil.ToFloat64(m.Sent), testutil.ToFloat64(m.Confirmed), testutil.ToFloat64(m.Failed); s != 22 || c != 22 || f != 0 {
		t.Fatalf("metrics sent %v confirmed %v failed %v", s, c, f)
	}
	// The sender publishes its gauges after the round that confirmed the
	// keys (a fixed 100 ms pause read 22 at load 12).
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(m.Pending) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pending gauge %v 10 s after every deposit was confirmed", testutil.ToFloat64(m.Pending))
		}
	}
	if bal := testutil.ToFloat64(m.FunderBalance); bal <= 0 {
		t.Fatalf("funder balance gauge %v", bal)
	}
	if n := testutil.CollectAndCount(m.ConfirmationSeconds); n != 1 {
		t.Fatalf("confirmation histogram: %d series", n)
	}
}

// A deposit the contract would reject (a wrong deposit_data_root) is caught
// by simulation: nothing is sent for it, the key goes to deposit-failed with
// the contract's reason, and the other deposits of the batch go through.
func TestSimulatedRevertFailsKey(t *testing.T) {
	chain := deptest.StartChain(t, devchain.Config{Manual: true})
	deptest.CommitEvery(t, chain, 50*time.Millisecond)
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "pkm.db"))
	m := depositor.NewMetrics(nil)
	d := deptest.NewDepositor(t, chain.Client(), chain.DepositContract(), st, func(c *depositor.Config) { c.Metrics = m })
	good := addPending(t, st, 2, "pod-a", nil)
	bad := addPending(t, st, 1, "pod-b", func(k *store.NewKey) { k.Deposit.DepositDataRoot[0] ^= 0xff })
	deptest.RunDepositor(t, d)

	got := deptest.WaitStates(t, st, append(pubkeys(good), pubkeys(bad)...), 30*time.Second)
	r := got[bad[0].Pubkey]
	if r.State != store.StateDepositFailed || r.Pod != "" || r.LastPod != "pod-b" ||
		!strings.Contains(r.RetiredReason, "deposit_data_root") || !strings.Contains(r.RetiredReason, "nothing was sent") || r.DepositTx != nil {
		t.Fatalf("bad key: %s tx %+v", deptest.Describe(r), r.DepositTx)
	}
	for _, k := range good {
		if got[k.Pubkey].State != store.StateAssigned {
			t.Fatalf("good key: %s", deptest.Describe(got[k.Pubkey]))
		}
	}
	deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), depositsOf(good), 2)
	if n, _ := chain.Client().NonceAt(context.Background(), d.Funder(), nil); n != 1+2 {
		t.Fatalf("funder sent %d transactions after the contract's deployment, want 2 (none for the rejected deposit)", n-1)
	}
	// The trail follows the commits (store.RecordAudit): the sender writes
	// the deposit-confirmed events once it has woken the waiters, so they
	// can land just after the keys turned assigned.
	var audit []store.AuditEvent
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if audit, err = st.ListAudit(context.Background(), 0, 100); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range audit {
			if e.Action == store.AuditDepositConfirmed {
				n++
			}
		}
		if n >= len(good) || time.Now().After(deadline) {
			break
		}
	}
	// The rejected key failed; the good ones were sent and confirmed, each
	// event naming its transaction, all by the depositor.
	var failed []store.AuditEvent
	sent, confirmed := map[store.Pubkey]string{}, map[store.Pubkey]string{}
	for _, e := range audit {
		if e.Actor != depositor.Actor || len(e.Pubkeys) != 1 {
			t.Fatalf("audit event %+v: want one key, by %s", e, depositor.Actor)
		}
		switch e.Action {
		case "deposit-failed":
			failed = append(failed, e)
		case store.AuditDepositSent:
			sent[e.Pubkeys[0]] = e.Reason
		case store.AuditDepositConfirmed:
			confirmed[e.Pubkeys[0]] = e.Reason
		}
	}
	if len(failed) != 1 || failed[0].Pubkeys[0] != bad[0].Pubkey {
		t.Fatalf("audit trail %+v", audit)
	}
	for _, k := range good {
		tx := common.Hash(got[k.Pubkey].DepositTx.Hash).Hex()
		if !strings.Contains(sent[k.Pubkey], tx) || !strings.Contains(confirmed[k.Pubkey], tx) ||
			!strings.Contains(confirmed[k.Pubkey], fmt.Sprintf("block %d (", got[k.Pubkey].DepositTx.Block)) {
			t.Fatalf("good key %s: sent %q, confirmed %q; want its transaction %s and block %d", k.Pubkey, sent[k.Pubkey], confirmed[k.Pubkey], tx, got[k.Pubkey].DepositTx.Block)
		}
	}
	if f := testutil.ToFloat64(m.Failed); f != 1 {
		t.Fatalf("failed metric %v", f)
	}
}

// A funder that cannot pay gets a clear error naming both amounts, and
// nothing is sent or recorded; once funded, the waiting deposits go out.
func TestInsufficientFunds(t *testing.T) {
	poorKey, _ := crypto.GenerateKey()
	poor := crypto.PubkeyToAddress(poorKey.PublicKey)
	ether := big.NewInt(params.Ether)
	chain := deptest.StartChain(t, devchain.Config{Manual: true,
		Alloc: types.GenesisAlloc{poor: {Balance: new(big.Int).Mul(big.NewInt(40), ether)}}})
	deptest.CommitEvery(t, chain, 50*time.Millisecond)
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "pkm.db"))
	d := deptest.NewDepositor(t, chain.Client(), chain.DepositContract(), st, func(c *depositor.Config) { c.FunderKey = poorKey })
	ctx := context.Background()

	// The pre-check the allocator makes before minting.
	if err := d.CheckFunds(ctx, 1); err != nil {
		t.Fatalf("40 ETH cannot pay one deposit? %v", err)
	}
	err := d.CheckFunds(ctx, 2)
	if !errors.Is(err, depositor.ErrInsufficientFunds) || !strings.Contains(err.Error(), "funder "+poor.Hex()+" has 40 ETH (40000000000000000000 wei)") ||
		!strings.Contains(err.Error(), "2 deposits need 64.") {
		t.Fatalf("CheckFunds(2): %v", err)
	}

	keys := addPending(t, st, 2, "pod-a", nil)
	deptest.RunDepositor(t, d)
	deadline := time.Now().Add(20 * time.Second)
	for d.Blocked() == nil {
		if time.Now().After(deadline) {
			t.Fatal("sender never reported the missing funds")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.Blocked(); !errors.Is(err, depositor.ErrInsufficientFunds) || !strings.Contains(err.Error(), "has 40 ETH") {
		t.Fatalf("Blocked: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n, _ := chain.Client().PendingNonceAt(ctx, poor); n != 0 {
		t.Fatalf("a poor funder sent %d transactions", n)
	}
	for _, k := range keys {
		r, err := st.GetKey(ctx, k.Pubkey)
		if err != nil || r.State != store.StatePendingDeposit || r.DepositTx != nil || r.Pod != "pod-a" {
			t.Fatalf("key after the refused batch: %s tx %+v %v", deptest.Describe(r), r.DepositTx, err)
		}
	}

	// Fund it from the dev account: the deposits go out by themselves.
	fund(t, chain, poor, new(big.Int).Mul(big.NewInt(100), ether))
	got := deptest.WaitStates(t, st, pubkeys(keys), 30*time.Second)
	for _, r := range got {
		if r.State != store.StateAssigned {
			t.Fatalf("after funding: %s", deptest.Describe(r))
		}
	}
	if d.Blocked() != nil {
		t.Fatalf("still blocked: %v", d.Blocked())
	}
	deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), depositsOf(keys), 2)
}

// fund sends value from the dev account to addr and waits for it to be mined.
func fund(t *testing.T, chain *devchain.Chain, to [20]byte, value *big.Int) {
	t.Helper()
	ctx := context.Background()
	c := chain.Client()
	nonce, err := c.PendingNonceAt(ctx, devchain.DevAddress())
	if err != nil {
		t.Fatal(err)
	}
	addr := common.Address(to)
	tx, err := types.SignNewTx(devchain.DevKey(), types.LatestSignerForChainID(devchain.ChainID), &types.DynamicFeeTx{
		ChainID: devchain.ChainID, Nonce: nonce, GasTipCap: big.NewInt(params.GWei), GasFeeCap: big.NewInt(100 * params.GWei),
		Gas: 21000, To: &addr, Value: value,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := depositcontract.WaitMined(ctx, c, tx.Hash(), 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

// The funder key is checked and never quoted in errors.
func TestParseFunderKey(t *testing.T) {
	if _, err := depositor.ParseFunderKey("0x" + devchain.DevKeyHex + "\n"); err != nil {
		t.Fatal(err)
	}
	bad := strings.Repeat("zz", 32)
	_, err := depositor.ParseFunderKey(bad)
	if err == nil || strings.Contains(err.Error(), bad) {
		t.Fatalf("bad key: %v", err)
	}
	if _, err := depositor.ParseFunderKey("abc"); err == nil {
		t.Fatal("short key accepted")
	}
}
