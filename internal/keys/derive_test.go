package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"

	util "github.com/wealdtech/go-eth2-util"
)

func decimal(t testing.TB, s string) []byte {
	t.Helper()
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad decimal %q", s)
	}
	return v.FillBytes(make([]byte, 32))
}

// EIP-2333 test cases, verbatim from the EIP
// (https://eips.ethereum.org/EIPS/eip-2333#test-cases, ethereum/ERCs
// ERCS/erc-2333.md).
var eip2333Cases = []struct {
	seed, master string
	index        uint32
	child        string
}{
	{
		seed:   "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04",
		master: "6083874454709270928345386274498605044986640685124978867557563392430687146096",
		index:  0,
		child:  "20397789859736650942317412262472558107875392172444076792671091975210932703118",
	},
	{
		seed:   "3141592653589793238462643383279502884197169399375105820974944592",
		master: "29757020647961307431480504535336562678282505419141012933316116377660817309383",
		index:  3141592653,
		child:  "25457201688850691947727629385191704516744796114925897962676248250929345014287",
	},
	{
		seed:   "0099FF991111002299DD7744EE3355BBDD8844115566CC55663355668888CC00",
		master: "27580842291869792442942448775674722299803720648445448686099262467207037398656",
		index:  4294967295,
		child:  "29358610794459428860402234341874281240803786294062035874021252734817515685787",
	},
	{
		seed:   "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
		master: "19022158461524446591288038168518313374041767046816487870552872741050760015818",
		index:  42,
		child:  "31372231650479070279774297061823572166496564838472787488249775572789064611981",
	},
}

func TestEIP2333Vectors(t *testing.T) {
	for i, tc := range eip2333Cases {
		master, err := DeriveMasterKey(mustHex(t, tc.seed))
		if err != nil {
			t.Fatalf("case %d: DeriveMasterKey: %v", i, err)
		}
		if got, want := master.Bytes(), decimal(t, tc.master); !bytes.Equal(got, want) {
			t.Errorf("case %d: master = %x, want %x", i, got, want)
		}
		child, err := DeriveChildKey(master, tc.index)
		if err != nil {
			t.Fatalf("case %d: DeriveChildKey: %v", i, err)
		}
		if got, want := child.Bytes(), decimal(t, tc.child); !bytes.Equal(got, want) {
			t.Errorf("case %d: child = %x, want %x", i, got, want)
		}
	}
}

// EIP-2333 test case 0 extended to the whole mnemonic-to-child stack, as the
// EIP describes: its seed is BIP-39 of "abandon ... about" with passphrase
// "TREZOR".
func TestEIP2333FromMnemonic(t *testing.T) {
	seed, err := SeedFromMnemonic("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about", "TREZOR")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(seed, mustHex(t, eip2333Cases[0].seed)) {
		t.Fatalf("seed = %x", seed)
	}
	master, err := DeriveMasterKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	child, err := DeriveChildKey(master, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(child.Bytes(), decimal(t, eip2333Cases[0].child)) {
		t.Fatalf("child = %x", child.Bytes())
	}
}

// EIP-2334 vectors: mnemonic -> validator public keys as produced by
// staking-deposit-cli 2.7.0, from ChorusOne/eth-staking-smith test data:
// tests/e2e/existing_mnemonic.rs with
// tests/e2e/expected_testdata/multiple_validators/deposit_data-1670231001.json
// and tests/e2e/expected_testdata/withdrawal_credentials_bls/deposit_data-1668613231.json
// (plus tests/e2e/expected_testdata/testcase1/keystore-m_12381_3600_0_0_0-1668613231.json).
// (eip2334Vectors; TestEIP2334KnownPubkeys and TestValidatorKeys use them.)
var eip2334Vectors = []struct {
	mnemonic string
	pubkeys  []string // signing keys of validators 0, 1, ...
}{
	{
		mnemonic: "window lottery throw arrange visit play gate open scare strategy sadness fame soul bronze soap",
		pubkeys: []string{
			"8c239d313e3f4efb1ed937e7560dfaabeb6def6b88001357d5e9a3c33fdb022f7b028085c09451667f06b6b849c71ce8",
			"80145bdb454a8f55f7275903108f516ade8747efff0906616febb11c6e307667431ee286d1a1a919ea22739e0e7f6e9a",
			"a759ea6450a376507bebc596b8e52981a70467fd7a33c6a66e45b51afb388078eb1dd7e9a751a91d65fba793ab2430fd",
		},
	},
	{
		mnemonic: "ski interest capable knee usual ugly duty exercise tattoo subway delay upper bid forget say",
		pubkeys: []string{
			"8844cebb34d10e0e57f3c29ada375dafe14762ab85b2e408c3d6d55ce6d03317660bca9f2c2d17d8fbe14a2529ada1ea",
		},
	},
}

func TestEIP2334KnownPubkeys(t *testing.T) {
	for _, tc := range eip2334Vectors {
		seed, err := SeedFromMnemonic(tc.mnemonic, "")
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDeriver(seed)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range tc.pubkeys {
			sk, err := d.SigningKey(uint32(i))
			if err != nil {
				t.Fatal(err)
			}
			if got := sk.PublicKey(); got != mustPub(t, want) {
				t.Errorf("validator %d: pubkey %x, want %s", i, got, want)
			}
		}
		fp, err := d.Fingerprint()
		if err != nil {
			t.Fatal(err)
		}
		if fp != mustPub(t, tc.pubkeys[0]) {
			t.Errorf("Fingerprint = %x, want validator 0's pubkey", fp)
		}
	}
}

// The "ski interest ..." deposit uses BLS withdrawal credentials
// 0x00 || SHA-256(withdrawal pubkey)[1:], with the withdrawal key at
// m/12381/3600/0/0.
func TestEIP2334WithdrawalKey(t *testing.T) {
	seed, err := SeedFromMnemonic("ski interest capable knee usual ugly duty exercise tattoo subway delay upper bid forget say", "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := d.WithdrawalKey(0)
	if err != nil {
		t.Fatal(err)
	}
	pk := wk.PublicKey()
	h := sha256.Sum256(pk[:])
	h[0] = 0x00
	want := mustHex(t, "0045b91b2f60b88e7392d49ae1364b55e713d06f30e563f9f99e10994b26221d")
	if !bytes.Equal(h[:], want) {
		t.Fatalf("withdrawal credentials = %x, want %x", h, want)
	}
}

// utilPath derives along path components from the master key with
// go-eth2-util's independent big.Int implementation.
func utilPath(t testing.TB, seed []byte, path ...uint32) []byte {
	t.Helper()
	sk, err := util.DeriveMasterSK(seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range path {
		if sk, err = util.DeriveChildSK(sk, idx); err != nil {
			t.Fatal(err)
		}
	}
	return sk.FillBytes(make([]byte, 32))
}

// The Deriver (blst) agrees with go-eth2-util on random seeds and indices.
func TestDeriverMatchesGoEth2Util(t *testing.T) {
	for trial := 0; trial < 3; trial++ {
		seed := make([]byte, 64)
		if _, err := rand.Read(seed); err != nil {
			t.Fatal(err)
		}
		d, err := NewDeriver(seed)
		if err != nil {
			t.Fatal(err)
		}
		var idx [4]byte
		if _, err := rand.Read(idx[:]); err != nil {
			t.Fatal(err)
		}
		for _, i := range []uint32{0, uint32(trial) + 1, uint32(idx[0])<<24 | uint32(idx[1])<<16 | uint32(idx[2])<<8 | uint32(idx[3])} {
			sk, err := d.SigningKey(i)
			if err != nil {
				t.Fatal(err)
			}
			if want := utilPath(t, seed, 12381, 3600, i, 0, 0); !bytes.Equal(sk.Bytes(), want) {
				t.Errorf("signing key %d differs from go-eth2-util", i)
			}
			wk, err := d.WithdrawalKey(i)
			if err != nil {
				t.Fatal(err)
			}
			if want := utilPath(t, seed, 12381, 3600, i, 0); !bytes.Equal(wk.Bytes(), want) {
				t.Errorf("withdrawal key %d differs from go-eth2-util", i)
			}
		}
	}
}

func TestDeriverConcurrent(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 64)
	d, err := NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	want := make([][PublicKeySize]byte, n)
	for i := range want {
		sk, err := d.SigningKey(uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = sk.PublicKey()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := 0; k < n; k++ {
				i := (k + g*5) % n
				sk, err := d.SigningKey(uint32(i))
				if err != nil {
					errs <- err
					return
				}
				if sk.PublicKey() != want[i] {
					errs <- fmt.Errorf("goroutine %d: key %d differs", g, i)
				}
				if _, err := d.Fingerprint(); err != nil {
					errs <- err
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Distinct indices give distinct keys.
	seen := map[[PublicKeySize]byte]bool{}
	for _, pk := range want {
		if seen[pk] {
			t.Fatal("two indices derived the same key")
		}
		seen[pk] = true
	}
}

func TestDeriverZero(t *testing.T) {
	d, err := NewDeriver(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SigningKey(0); err != nil {
		t.Fatal(err)
	}
	d.Zero()
	if _, err := d.SigningKey(0); !errors.Is(err, ErrDeriverZeroed) {
		t.Errorf("SigningKey after Zero: %v", err)
	}
	if _, err := d.WithdrawalKey(0); !errors.Is(err, ErrDeriverZeroed) {
		t.Errorf("WithdrawalKey after Zero: %v", err)
	}
	if _, err := d.Fingerprint(); !errors.Is(err, ErrDeriverZeroed) {
		t.Errorf("Fingerprint after Zero: %v", err)
	}
	var nilD *Deriver
	if _, err := nilD.SigningKey(0); !errors.Is(err, ErrDeriverZeroed) {
		t.Errorf("nil Deriver: %v", err)
	}
	if s := fmt.Sprintf("%v %+v %x", d, d, d); !bytes.Contains([]byte(s), []byte("REDACTED")) {
		t.Errorf("Deriver printed %q", s)
	}
}

func TestDeriverRejectsShortSeed(t *testing.T) {
	for _, n := range []int{0, 16, 31} {
		if _, err := NewDeriver(make([]byte, n)); err == nil {
			t.Errorf("NewDeriver accepted a %d-byte seed", n)
		}
		if _, err := DeriveMasterKey(make([]byte, n)); err == nil {
			t.Errorf("DeriveMasterKey accepted a %d-byte seed", n)
		}
	}
}

func TestPaths(t *testing.T) {
	if got := SigningPath(0); got != "m/12381/3600/0/0/0" {
		t.Errorf("SigningPath(0) = %q", got)
	}
	if got := SigningPath(4294967295); got != "m/12381/3600/4294967295/0/0" {
		t.Errorf("SigningPath(max) = %q", got)
	}
	if got := WithdrawalPath(17); got != "m/12381/3600/17/0" {
		t.Errorf("WithdrawalPath(17) = %q", got)
	}
	for _, i := range []uint32{0, 1, 9, 10, 12345, 4294967295} {
		got, ok := ParseSigningPath(SigningPath(i))
		if !ok || got != i {
			t.Errorf("ParseSigningPath(SigningPath(%d)) = %d, %v", i, got, ok)
		}
	}
	for _, p := range []string{
		"", "m", "m/12381/3600/0/0", "m/12381/3600/0/0/0/0", "m/12381/3600//0/0",
		"m/12381/3600/01/0/0", "m/12381/3600/+1/0/0", "m/12381/3600/-1/0/0",
		"m/12381/3600/4294967296/0/0", "m/12381/3600/1a/0/0", "m/12381/3600/0/0/1",
		"m/12381/60/0/0/0", "M/12381/3600/0/0/0", " m/12381/3600/0/0/0", "m/12381/3600/0/0/0 ",
		"m/12381/3600/0x1/0/0", "m/12381/3600/１/0/0",
	} {
		if i, ok := ParseSigningPath(p); ok {
			t.Errorf("ParseSigningPath(%q) = %d, true", p, i)
		}
	}
}

// ValidatorKeys derives both keys of a validator along the EIP-2334 paths:
// the signing keys and the BLS withdrawal credentials of the vectors above.
func TestValidatorKeys(t *testing.T) {
	// The "ski interest ..." deposit's BLS withdrawal credentials.
	withdrawal := mustHex(t, "0045b91b2f60b88e7392d49ae1364b55e713d06f30e563f9f99e10994b26221d")
	for vi, tc := range eip2334Vectors {
		seed, err := SeedFromMnemonic(tc.mnemonic, "")
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDeriver(seed)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range tc.pubkeys {
			sk, wk, err := d.ValidatorKeys(uint32(i))
			if err != nil {
				t.Fatal(err)
			}
			if got := sk.PublicKey(); got != mustPub(t, want) {
				t.Errorf("vector %d, validator %d: signing pubkey %x, want %s", vi, i, got, want)
			}
			ref, err := d.WithdrawalKey(uint32(i))
			if err != nil {
				t.Fatal(err)
			}
			if wk.PublicKey() != ref.PublicKey() {
				t.Errorf("validator %d: withdrawal key is not the one at %s", i, WithdrawalPath(uint32(i)))
			}
			if i == 0 && strings.HasPrefix(tc.mnemonic, "ski interest ") {
				pk := wk.PublicKey()
				h := sha256.Sum256(pk[:])
				h[0] = 0x00
				if !bytes.Equal(h[:], withdrawal) {
					t.Errorf("withdrawal credentials = %x, want %x", h, withdrawal)
				}
			}
			sk.Zero()
			wk.Zero()
			ref.Zero()
		}
	}
}
