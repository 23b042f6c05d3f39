package mint

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
)

// A published BIP-39 test mnemonic (the Trezor vectors' first entry).
const testMnemonic = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"

var withdrawalAddr = [20]byte{0xde, 0xad, 0xbe, 0xef, 19: 0x01}

func testKEK(t testing.TB) *seal.KEK {
	t.Helper()
	k, err := seal.ParseKEK(strings.Repeat("5a", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func devnet(t testing.TB) deposit.Network {
	t.Helper()
	v, err := deposit.ParseForkVersion("0x10000038")
	if err != nil {
		t.Fatal(err)
	}
	return deposit.Network{Name: "devnet", GenesisForkVersion: v}
}

// counter is an in-memory IndexReserver for unit tests.
type counter struct {
	mu   sync.Mutex
	next uint32
}

func (c *counter) ReserveIndices(_ context.Context, n int) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := c.next
	c.next += uint32(n)
	return first, nil
}

func deriver(t testing.TB) *keys.Deriver {
	t.Helper()
	seed, err := keys.SeedFromMnemonic(testMnemonic, "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkKey proves a minted key is self-consistent: the sealed secret opens to
// a key with the record's pubkey and the deposit data verifies for it.
func checkKey(t *testing.T, kek *seal.KEK, nk store.NewKey, wantWC [32]byte) *keys.SecretKey {
	t.Helper()
	secret, err := kek.Open(nk.SealedSecret, nk.Pubkey[:])
	if err != nil {
		t.Fatalf("open sealed secret: %v", err)
	}
	sk, err := keys.SecretKeyFromBytes(secret)
	if err != nil {
		t.Fatal(err)
	}
	if sk.PublicKey() != nk.Pubkey {
		t.Fatalf("sealed secret belongs to another key")
	}
	if nk.Deposit == nil {
		t.Fatal("no deposit data")
	}
	if err := deposit.Verify(nk.Pubkey, *nk.Deposit, keys.Verify); err != nil {
		t.Fatalf("deposit data does not verify: %v", err)
	}
	if nk.Deposit.WithdrawalCredentials != wantWC {
		t.Fatalf("withdrawal credentials %x, want %x", nk.Deposit.WithdrawalCredentials, wantWC)
	}
	if nk.Deposit.AmountGwei != deposit.DefaultAmountGwei || nk.Deposit.NetworkName != "devnet" {
		t.Fatalf("deposit amount %d network %q", nk.Deposit.AmountGwei, nk.Deposit.NetworkName)
	}
	if bytes.Contains(nk.SealedSecret, secret) {
		t.Fatal("sealed secret contains the plaintext")
	}
	return sk
}

func TestMintRandom(t *testing.T) {
	kek := testKEK(t)
	for _, kind := range []WithdrawalKind{WithdrawalExecution, WithdrawalCompounding} {
		m, err := New(Config{Sealer: kek, Network: devnet(t), Withdrawal: kind, WithdrawalAddress: withdrawalAddr})
		if err != nil {
			t.Fatal(err)
		}
		if m.Derived() {
			t.Fatal("random minter says derived")
		}
		got, err := m.Mint(context.Background(), 9)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 9 {
			t.Fatalf("%d keys", len(got))
		}
		want := deposit.ExecutionCredentials(withdrawalAddr)
		if kind == WithdrawalCompounding {
			want = deposit.CompoundingCredentials(withdrawalAddr)
		}
		seen := map[store.Pubkey]bool{}
		for _, nk := range got {
			if nk.Origin != store.OriginRandom || nk.HasDerivationIndex {
				t.Fatalf("origin %q derived=%v", nk.Origin, nk.HasDerivationIndex)
			}
			if seen[nk.Pubkey] {
				t.Fatal("duplicate key minted")
			}
			seen[nk.Pubkey] = true
			checkKey(t, kek, nk, want)
		}
	}
}

func TestMintDerived(t *testing.T) {
	kek := testKEK(t)
	d := deriver(t)
	idx := &counter{next: 5}
	m, err := New(Config{Sealer: kek, Network: devnet(t), Withdrawal: WithdrawalBLS, Deriver: d, Indices: idx})
	if err != nil {
		t.Fatal(err)
	}
	first, err := m.Mint(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	second, err := m.Mint(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	all := append(first, second...)
	for i, nk := range all {
		wantIdx := uint32(5 + i)
		if nk.Origin != store.OriginDerived || !nk.HasDerivationIndex || nk.DerivationIndex != wantIdx {
			t.Fatalf("key %d: origin %q index %d (has %v), want index %d", i, nk.Origin, nk.DerivationIndex, nk.HasDerivationIndex, wantIdx)
		}
		wk, err := d.WithdrawalKey(wantIdx)
		if err != nil {
			t.Fatal(err)
		}
		sk := checkKey(t, kek, nk, deposit.BLSCredentials(wk.PublicKey()))
		want, err := d.SigningKey(wantIdx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sk.Bytes(), want.Bytes()) {
			t.Fatalf("key %d is not m/12381/3600/%d/0/0", i, wantIdx)
		}
		if wk.PublicKey() == nk.Pubkey {
			t.Fatal("withdrawal key equals signing key")
		}
	}
	if idx.next != 10 {
		t.Fatalf("next index %d, want 10", idx.next)
	}
}

func TestMintDerivedExecutionCredentials(t *testing.T) {
	kek := testKEK(t)
	m, err := New(Config{Sealer: kek, Network: devnet(t), Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr,
		Deriver: deriver(t), Indices: &counter{}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Mint(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, nk := range got {
		checkKey(t, kek, nk, deposit.ExecutionCredentials(withdrawalAddr))
	}
}

func TestNewRejects(t *testing.T) {
	kek := testKEK(t)
	net := devnet(t)
	cases := map[string]Config{
		"no sealer":               {Network: net, Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr},
		"bls without mnemonic":    {Sealer: kek, Network: net, Withdrawal: WithdrawalBLS},
		"execution without addr":  {Sealer: kek, Network: net, Withdrawal: WithdrawalExecution},
		"unknown kind":            {Sealer: kek, Network: net, Withdrawal: "sideways", WithdrawalAddress: withdrawalAddr},
		"deriver without indices": {Sealer: kek, Network: net, Withdrawal: WithdrawalBLS, Deriver: deriver(t)},
		"amount too small":        {Sealer: kek, Network: net, Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr, AmountGwei: 1},
		"no network":              {Sealer: kek, Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMintCanceled(t *testing.T) {
	m, err := New(Config{Sealer: testKEK(t), Network: devnet(t), Withdrawal: WithdrawalExecution, WithdrawalAddress: withdrawalAddr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Mint(ctx, 4); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := m.Mint(context.Background(), 0); err == nil {
		t.Fatal("Mint(0) accepted")
	}
}
