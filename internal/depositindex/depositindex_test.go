package depositindex_test

import (
	"context"
	"errors"
	"math/big"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositindex"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/store"
)

// chain is a dev chain with manual blocks and a minter of real deposits.
type chain struct {
	t     *testing.T
	c     *devchain.Chain
	cl    *ethclient.Client
	nonce uint64
	keys  []store.NewKey
}

func newChain(t *testing.T) *chain {
	c := deptest.StartChain(t, devchain.Config{Manual: true})
	nonce, err := c.Client().NonceAt(t.Context(), devchain.DevAddress(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &chain{t: t, c: c, cl: c.Client(), nonce: nonce}
}

// deposit sends the deposits of n new keys and makes a block with them; it
// returns their pubkeys and the block.
func (ch *chain) deposit(n int) ([]store.Pubkey, uint64) {
	t := ch.t
	t.Helper()
	keys, err := deptest.NewMinter(t, deptest.NewKEK(t)).Mint(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Pubkey
	for _, k := range keys {
		ch.send(k)
		out = append(out, k.Pubkey)
	}
	return out, ch.c.Commit()
}

func (ch *chain) send(k store.NewKey) {
	t := ch.t
	t.Helper()
	d := k.Deposit
	to := ch.c.DepositContract()
	tx, err := types.SignNewTx(ch.c.FunderKey(), types.LatestSignerForChainID(devchain.ChainID), &types.DynamicFeeTx{
		ChainID: devchain.ChainID, Nonce: ch.nonce, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9), Gas: 300_000,
		To: &to, Value: depositcontract.GweiToWei(d.AmountGwei),
		Data: depositcontract.PackDeposit(k.Pubkey, d.WithdrawalCredentials, d.Signature, d.DepositDataRoot),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.cl.SendTransaction(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	ch.nonce++
	ch.keys = append(ch.keys, k)
}

func (ch *chain) empty(n int) {
	for range n {
		ch.c.Commit()
	}
}

// countingChain counts eth_getLogs calls and refuses ranges wider than
// maxRange (0: none).
type countingChain struct {
	depositindex.Chain
	mu       sync.Mutex
	calls    int
	maxRange uint64
}

func (c *countingChain) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	if c.maxRange > 0 && q.ToBlock.Uint64()-q.FromBlock.Uint64()+1 > c.maxRange {
		return nil, errors.New("query returned more than 10000 results")
	}
	return c.Chain.FilterLogs(ctx, q)
}

func (c *countingChain) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func newIndex(t *testing.T, ch depositindex.Chain, st depositindex.Store, contract common.Address, chainID int64, mod func(*depositindex.Config)) *depositindex.Index {
	t.Helper()
	start := uint64(0)
	cfg := depositindex.Config{Chain: ch, Store: st, Contract: contract, ChainID: big.NewInt(chainID), Start: &start, Chunk: 4, Margin: 3}
	if mod != nil {
		mod(&cfg)
	}
	ix, err := depositindex.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func find(t *testing.T, ix *depositindex.Index, pks ...store.Pubkey) map[store.Pubkey]depositcontract.Event {
	t.Helper()
	got, err := ix.Find(t.Context(), pks)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// Deposits in stored blocks, in the live tail and in both; keys without a
// deposit are absent; a second deposit of a key reports the first.
func TestFind(t *testing.T) {
	ch := newChain(t)
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "s.db"))
	cc := &countingChain{Chain: ch.cl}
	ix := newIndex(t, cc, st, ch.c.DepositContract(), 1337, nil)

	old, oldBlock := ch.deposit(3)
	ch.empty(10)
	mid, _ := ch.deposit(2)
	ch.empty(5)
	// A second deposit (a top-up) of old[0].
	ch.send(ch.keys[0])
	ch.c.Commit()
	recent, recentBlock := ch.deposit(1) // within the margin: read live
	absent, err := deptest.NewMinter(t, deptest.NewKEK(t)).Mint(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}

	all := append(append(append([]store.Pubkey{}, old...), mid...), recent...)
	got := find(t, ix, append(all, absent[0].Pubkey)...)
	if len(got) != len(all) {
		t.Fatalf("Find found %d keys, want %d", len(got), len(all))
	}
	for i, pk := range all {
		want := uint64(i)
		if i == len(all)-1 {
			want++ // after the top-up
		}
		e, ok := got[pk]
		if !ok || store.Pubkey(e.Pubkey) != pk || e.Index != want {
			t.Errorf("key %d: deposit index %d (found %v), want %d", i, e.Index, ok, want)
		}
	}
	if got[old[0]].Block != oldBlock || got[recent[0]].Block != recentBlock {
		t.Errorf("blocks %d, %d; want %d (first deposit, not the top-up), %d", got[old[0]].Block, got[recent[0]].Block, oldBlock, recentBlock)
	}
	head, _ := ch.cl.BlockNumber(t.Context())
	cur, err := st.DepositIndexCursor(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cur.Next != head-3+1 || cur.Source != ix.Source() {
		t.Errorf("cursor %+v, want next block %d (head %d minus the margin 3, plus 1) of %s", cur, head-2, head, ix.Source())
	}

	// A new Index on the same store resumes: no block is read again, only
	// the candidate blocks and the tail.
	cc2 := &countingChain{Chain: ch.cl}
	ix2 := newIndex(t, cc2, st, ch.c.DepositContract(), 1337, nil)
	got2 := find(t, ix2, mid[1])
	if len(got2) != 1 || got2[mid[1]].Index != 4 {
		t.Errorf("resumed Find = %+v", got2)
	}
	if n := cc2.Calls(); n != 2 {
		t.Errorf("a resumed Find made %d eth_getLogs calls, want 2 (one candidate block, one tail)", n)
	}
}

// A node that refuses wide log ranges gets narrower ones.
func TestNarrowsRefusedRanges(t *testing.T) {
	ch := newChain(t)
	pks, _ := ch.deposit(2)
	ch.empty(20)
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "s.db"))
	cc := &countingChain{Chain: ch.cl, maxRange: 2}
	ix := newIndex(t, cc, st, ch.c.DepositContract(), 1337, func(c *depositindex.Config) { c.Chunk = 16 })
	if got := find(t, ix, pks...); len(got) != 2 {
		t.Fatalf("Find found %d of 2 deposits", len(got))
	}
}

// A cursor whose block hash is not the chain's (a reorganization below it)
// is rewound and the blocks read again; entries of another chain are
// dropped.
func TestRewindAndNewSource(t *testing.T) {
	ch := newChain(t)
	pks, _ := ch.deposit(2)
	ch.empty(12)
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "s.db"))
	ix := newIndex(t, ch.cl, st, ch.c.DepositContract(), 1337, nil)
	if _, err := ix.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	cur, err := st.DepositIndexCursor(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the indexed branch was another one: its hash differs, and
	// its entries (none of the real ones) are gone.
	forged := cur
	forged.Hash[0] ^= 0xff
	if err := st.MoveDepositIndex(t.Context(), cur, store.IndexCursor{Source: cur.Source, Next: 0}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.MoveDepositIndex(t.Context(), store.IndexCursor{Source: cur.Source}, forged, nil); err != nil {
		t.Fatal(err)
	}
	if got := find(t, ix, pks...); len(got) != 2 {
		t.Fatalf("after a reorganization Find found %d of 2 deposits", len(got))
	}
	if after, _ := st.DepositIndexCursor(t.Context()); after != cur {
		t.Errorf("cursor after the rewind %+v, want %+v", after, cur)
	}

	// Another chain ID: the stored entries are not this chain's.
	other := newIndex(t, ch.cl, st, ch.c.DepositContract(), 99, nil)
	if _, err := other.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	after, _ := st.DepositIndexCursor(t.Context())
	if after.Source != other.Source() || after.Source == cur.Source {
		t.Errorf("cursor source %q, want %q", after.Source, other.Source())
	}
}

// Two processes keep one index: both sync at once and agree.
func TestConcurrentSync(t *testing.T) {
	ch := newChain(t)
	var pks []store.Pubkey
	for range 5 {
		p, _ := ch.deposit(1)
		pks = append(pks, p...)
		ch.empty(7)
	}
	st := deptest.OpenStore(t, filepath.Join(t.TempDir(), "s.db"))
	var wg sync.WaitGroup
	results := make([]map[store.Pubkey]depositcontract.Event, 4)
	errs := make([]error, 4)
	for i := range results {
		ix := newIndex(t, ch.cl, st, ch.c.DepositContract(), 1337, func(c *depositindex.Config) { c.Chunk = 2 })
		wg.Go(func() { results[i], errs[i] = ix.Find(context.Background(), pks) })
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("Find %d: %v", i, errs[i])
		}
		if len(results[i]) != len(pks) {
			t.Errorf("Find %d found %d of %d deposits", i, len(results[i]), len(pks))
		}
	}
}
