package deposit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Independent SSZ hash_tree_root of the deposit containers, written from the
// SSZ spec with sha256 only, to cross-check the go-eth2-client roots.

func hashPair(a, b []byte) [32]byte {
	return sha256.Sum256(append(append([]byte{}, a...), b...))
}

func sszPubkeyRoot(pub [48]byte) [32]byte {
	var hi [32]byte
	copy(hi[:], pub[32:])
	return hashPair(pub[:32], hi[:])
}

func sszSignatureRoot(sig [96]byte) [32]byte {
	var zero [32]byte
	l := hashPair(sig[:32], sig[32:64])
	r := hashPair(sig[64:], zero[:])
	return hashPair(l[:], r[:])
}

func sszUint64(v uint64) [32]byte {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return b
}

func sszMessageRoot(pub [48]byte, wc [32]byte, amount uint64) [32]byte {
	var zero [32]byte
	pk, am := sszPubkeyRoot(pub), sszUint64(amount)
	l := hashPair(pk[:], wc[:])
	r := hashPair(am[:], zero[:])
	return hashPair(l[:], r[:])
}

func sszDataRoot(pub [48]byte, wc [32]byte, amount uint64, sig [96]byte) [32]byte {
	pk, am, sg := sszPubkeyRoot(pub), sszUint64(amount), sszSignatureRoot(sig)
	l := hashPair(pk[:], wc[:])
	r := hashPair(am[:], sg[:])
	return hashPair(l[:], r[:])
}

// sszDepositDomain is compute_domain(0x03000000, fork, zero root) from the
// spec: domain type || hash_tree_root(ForkData{fork, zero})[:28].
func sszDepositDomain(fork [4]byte) [32]byte {
	var version, gvr [32]byte
	copy(version[:], fork[:])
	fdr := hashPair(version[:], gvr[:])
	var d [32]byte
	copy(d[:], []byte{0x03, 0, 0, 0})
	copy(d[4:], fdr[:28])
	return d
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func devnet(t testing.TB, fork [4]byte) Network {
	t.Helper()
	n, err := CustomNetwork("devnet", fork)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDepositDomain(t *testing.T) {
	// Published values: the mainnet deposit domain is the DEPOSIT_DOMAIN
	// constant of Lighthouse's chain spec and of deposit contracts that
	// check signatures; the hoodi one from a deposit-signature test suite.
	published := map[string]string{
		"mainnet": "03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9",
		"hoodi":   "03000000719103511efa4f1362ff2a50996cccf329cc84cb410c5e5c7d351d03",
	}
	for name, want := range published {
		n, err := LookupNetwork(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := DepositDomain(n.GenesisForkVersion); hex.EncodeToString(got[:]) != want {
			t.Errorf("%s deposit domain = %x, want %s", name, got, want)
		}
	}
	forks := [][4]byte{{}, {0x10, 0x00, 0x00, 0x38}, {0xff, 0xff, 0xff, 0xff}}
	for _, name := range NetworkNames() {
		n, _ := LookupNetwork(name)
		forks = append(forks, n.GenesisForkVersion)
	}
	domains := map[[32]byte][4]byte{}
	for _, f := range forks {
		got := DepositDomain(f)
		if want := sszDepositDomain(f); got != want {
			t.Errorf("DepositDomain(%x) = %x, spec computation gives %x", f, got, want)
		}
		if prev, ok := domains[got]; ok && prev != f {
			t.Errorf("DepositDomain(%x) = %x, same as for fork %x", f, got, prev)
		}
		domains[got] = f
	}
}

func TestRootsMatchSpecComputation(t *testing.T) {
	for i := 0; i < 20; i++ {
		pub := [48]byte(randomBytes(t, 48))
		wc := [32]byte(randomBytes(t, 32))
		sig := [96]byte(randomBytes(t, 96))
		fork := [4]byte(randomBytes(t, 4))
		amount := binary.LittleEndian.Uint64(randomBytes(t, 8))

		msgRoot, err := MessageRoot(pub, wc, amount)
		if err != nil {
			t.Fatal(err)
		}
		if want := sszMessageRoot(pub, wc, amount); msgRoot != want {
			t.Fatalf("MessageRoot = %x, spec computation %x", msgRoot, want)
		}
		dataRoot, err := DataRoot(pub, wc, amount, sig)
		if err != nil {
			t.Fatal(err)
		}
		if want := sszDataRoot(pub, wc, amount, sig); dataRoot != want {
			t.Fatalf("DataRoot = %x, spec computation %x", dataRoot, want)
		}
		signingRoot, err := SigningRoot(msgRoot, fork)
		if err != nil {
			t.Fatal(err)
		}
		domain := sszDepositDomain(fork)
		if want := hashPair(msgRoot[:], domain[:]); signingRoot != want {
			t.Fatalf("SigningRoot = %x, spec computation %x", signingRoot, want)
		}
	}
}

// TestMakeVerifyRoundTrip: Make with a random blst key, for every network
// and credential type, gives deposits that Verify accepts, whose roots match
// the spec computation, whose signature blst verifies over the spec signing
// root, and that survive the deposit_data file round trip.
func TestMakeVerifyRoundTrip(t *testing.T) {
	signer := randomSigner(t)
	addr := [20]byte(randomBytes(t, 20))
	withdrawal := randomSigner(t)
	creds := map[string][32]byte{
		"0x00": BLSCredentials(withdrawal.PublicKey()),
		"0x01": ExecutionCredentials(addr),
		"0x02": CompoundingCredentials(addr),
	}
	var networks []Network
	for _, name := range NetworkNames() {
		n, _ := LookupNetwork(name)
		networks = append(networks, n)
	}
	networks = append(networks, devnet(t, [4]byte{0x10, 0x00, 0x00, 0x38}))
	var entries []CLIEntry
	for _, n := range networks {
		for credName, wc := range creds {
			for _, amount := range []uint64{MinAmountGwei, DefaultAmountGwei, 2048 * GweiPerETH} {
				d, err := Make(signer, Params{Network: n, WithdrawalCredentials: wc, AmountGwei: amount})
				if err != nil {
					t.Fatalf("%s %s %d: Make: %v", n, credName, amount, err)
				}
				pub := signer.PublicKey()
				if d.WithdrawalCredentials != wc || d.AmountGwei != amount || d.ForkVersion != n.GenesisForkVersion || d.NetworkName != n.Name {
					t.Fatalf("Make copied params wrong: %+v", d)
				}
				if want := sszMessageRoot(pub, wc, amount); d.DepositMessageRoot != want {
					t.Errorf("deposit_message_root %x, want %x", d.DepositMessageRoot, want)
				}
				if want := sszDataRoot(pub, wc, amount, d.Signature); d.DepositDataRoot != want {
					t.Errorf("deposit_data_root %x, want %x", d.DepositDataRoot, want)
				}
				domain := sszDepositDomain(n.GenesisForkVersion)
				signingRoot := hashPair(d.DepositMessageRoot[:], domain[:])
				if !blstVerify(pub, signingRoot[:], d.Signature) {
					t.Errorf("%s %s: signature does not verify over the spec signing root", n, credName)
				}
				if err := Verify(pub, d, blstVerify); err != nil {
					t.Errorf("%s %s: Verify: %v", n, credName, err)
				}
				if amount == DefaultAmountGwei && credName == "0x01" {
					entries = append(entries, ToCLIEntry(pub, d))
				}
			}
		}
	}
	// One pubkey per file: write each deposit alone and read it back.
	for _, e := range entries {
		data, err := MarshalCLI([]CLIEntry{e})
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCLI(data)
		if err != nil {
			t.Fatalf("ParseCLI(MarshalCLI): %v\n%s", err, data)
		}
		if len(back) != 1 || back[0] != e {
			t.Fatalf("round trip changed the entry:\n got %+v\nwant %+v", back, e)
		}
		pub, d, err := back[0].Deposit()
		if err != nil {
			t.Fatal(err)
		}
		if pub != signer.PublicKey() {
			t.Errorf("pubkey %x, want %x", pub, signer.PublicKey())
		}
		if err := Verify(pub, d, blstVerify); err != nil {
			t.Errorf("Verify after file round trip: %v", err)
		}
	}
}

// TestVerifyFlips changes one field at a time of a good deposit: Verify must
// fail with the matching error, whose text names the field.
func TestVerifyFlips(t *testing.T) {
	signer := randomSigner(t)
	net := devnet(t, [4]byte{0x10, 0x00, 0x00, 0x38})
	good, err := Make(signer, Params{Network: net, WithdrawalCredentials: ExecutionCredentials([20]byte{1, 2, 3}), AmountGwei: DefaultAmountGwei})
	if err != nil {
		t.Fatal(err)
	}
	pub := signer.PublicKey()
	if err := Verify(pub, good, blstVerify); err != nil {
		t.Fatalf("good deposit: %v", err)
	}
	other := randomSigner(t)
	otherSig := other.Sign([]byte("not a deposit"))
	hoodi, _ := LookupNetwork("hoodi")

	cases := []struct {
		name     string
		pubkey   [48]byte
		change   func(d *store.DepositData)
		want     error
		mentions string
	}{
		{"pubkey", other.PublicKey(), func(*store.DepositData) {}, ErrMessageRoot, "pubkey"},
		{"withdrawal_credentials", pub, func(d *store.DepositData) { d.WithdrawalCredentials[31] ^= 1 }, ErrMessageRoot, "withdrawal_credentials"},
		{"amount", pub, func(d *store.DepositData) { d.AmountGwei++ }, ErrMessageRoot, "amount"},
		{"deposit_message_root", pub, func(d *store.DepositData) { d.DepositMessageRoot[0] ^= 1 }, ErrMessageRoot, "deposit_message_root"},
		{"signature (valid point, wrong key and message)", pub, func(d *store.DepositData) { d.Signature = otherSig }, ErrSignature, "signature"},
		{"signature (not a point)", pub, func(d *store.DepositData) { d.Signature[95] ^= 1 }, ErrSignature, "signature"},
		{"deposit_data_root", pub, func(d *store.DepositData) { d.DepositDataRoot[31] ^= 1 }, ErrDataRoot, "deposit_data_root"},
		{"fork_version", pub, func(d *store.DepositData) { d.ForkVersion = [4]byte{0x10, 0x00, 0x00, 0x39} }, ErrSignature, "fork version"},
		{"network_name", pub, func(d *store.DepositData) { d.NetworkName = "hoodi" }, ErrNetwork, "network_name"},
		{"fork_version and network_name", pub, func(d *store.DepositData) {
			d.ForkVersion, d.NetworkName = hoodi.GenesisForkVersion, hoodi.Name
		}, ErrSignature, "signature"},
		{"amount below 1 ETH", pub, func(d *store.DepositData) { d.AmountGwei = MinAmountGwei - 1 }, ErrAmount, "amount"},
		{"withdrawal_credentials prefix", pub, func(d *store.DepositData) { d.WithdrawalCredentials[0] = 0x07 }, ErrWithdrawalCredentials, "withdrawal_credentials"},
	}
	for _, c := range cases {
		d := good
		c.change(&d)
		err := Verify(c.pubkey, d, blstVerify)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.mentions) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.mentions)
		}
	}
}

// TestForkVersionBindsSignature: a deposit signed for one fork version does
// not verify under any other.
func TestForkVersionBindsSignature(t *testing.T) {
	signer := randomSigner(t)
	a, b := [4]byte{0x10, 0x00, 0x00, 0x38}, [4]byte{0x10, 0x00, 0x00, 0x39}
	d, err := Make(signer, Params{Network: devnet(t, a), WithdrawalCredentials: CompoundingCredentials([20]byte{9}), AmountGwei: DefaultAmountGwei})
	if err != nil {
		t.Fatal(err)
	}
	for _, fork := range [][4]byte{a, b, {}, {0x10, 0x00, 0x09, 0x10}} {
		root, err := SigningRoot(d.DepositMessageRoot, fork)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := blstVerify(signer.PublicKey(), root[:], d.Signature), fork == a; got != want {
			t.Errorf("signature made for %x verifies under %x: %v, want %v", a, fork, got, want)
		}
	}
	d.ForkVersion = b
	if err := Verify(signer.PublicKey(), d, blstVerify); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify with fork version %x: %v, want ErrSignature", b, err)
	}
}

// countingSigner records whether Make asked for a signature.
type countingSigner struct {
	*blstSigner
	signed int
}

func (c *countingSigner) Sign(msg []byte) [96]byte {
	c.signed++
	return c.blstSigner.Sign(msg)
}

func TestMakeRejects(t *testing.T) {
	mainnet, _ := LookupNetwork("mainnet")
	goodWC := ExecutionCredentials([20]byte{0xaa})
	badPadding := goodWC
	badPadding[5] = 1
	unknownPrefix := goodWC
	unknownPrefix[0] = 0x03
	cases := []struct {
		name string
		p    Params
		want error
	}{
		{"zero amount", Params{Network: mainnet, WithdrawalCredentials: goodWC}, ErrAmount},
		{"1 gwei under 1 ETH", Params{Network: mainnet, WithdrawalCredentials: goodWC, AmountGwei: MinAmountGwei - 1}, ErrAmount},
		{"1 gwei over 2048 ETH", Params{Network: mainnet, WithdrawalCredentials: goodWC, AmountGwei: MaxAmountGwei + 1}, ErrAmount},
		{"32 ETH in wei", Params{Network: mainnet, WithdrawalCredentials: goodWC, AmountGwei: 32_000_000_000_000_000_000 / 1000}, ErrAmount},
		{"unset withdrawal credentials", Params{Network: mainnet, AmountGwei: DefaultAmountGwei}, ErrWithdrawalCredentials},
		{"0x01 with non-zero padding", Params{Network: mainnet, WithdrawalCredentials: badPadding, AmountGwei: DefaultAmountGwei}, ErrWithdrawalCredentials},
		{"0x01 to the zero address", Params{Network: mainnet, WithdrawalCredentials: ExecutionCredentials([20]byte{}), AmountGwei: DefaultAmountGwei}, ErrWithdrawalCredentials},
		{"0x02 to the zero address", Params{Network: mainnet, WithdrawalCredentials: CompoundingCredentials([20]byte{}), AmountGwei: DefaultAmountGwei}, ErrWithdrawalCredentials},
		{"unknown prefix", Params{Network: mainnet, WithdrawalCredentials: unknownPrefix, AmountGwei: DefaultAmountGwei}, ErrWithdrawalCredentials},
		{"zero network", Params{WithdrawalCredentials: goodWC, AmountGwei: DefaultAmountGwei}, nil},
		{"mainnet name, hoodi fork", Params{Network: Network{Name: "mainnet", GenesisForkVersion: [4]byte{0x10, 0x00, 0x09, 0x10}}, WithdrawalCredentials: goodWC, AmountGwei: DefaultAmountGwei}, nil},
		{"devnet name, mainnet fork", Params{Network: Network{Name: "devnet"}, WithdrawalCredentials: goodWC, AmountGwei: DefaultAmountGwei}, nil},
	}
	for _, c := range cases {
		s := &countingSigner{blstSigner: randomSigner(t)}
		d, err := Make(s, c.p)
		if err == nil {
			t.Errorf("%s: Make succeeded: %+v", c.name, d)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		if s.signed != 0 {
			t.Errorf("%s: Make signed before rejecting", c.name)
		}
	}
	// The bounds themselves are accepted.
	for _, amount := range []uint64{MinAmountGwei, MaxAmountGwei} {
		if _, err := Make(randomSigner(t), Params{Network: mainnet, WithdrawalCredentials: goodWC, AmountGwei: amount}); err != nil {
			t.Errorf("amount %d: %v", amount, err)
		}
	}
}

func BenchmarkMake(b *testing.B) {
	signer := randomSigner(b)
	net, err := LookupNetwork("mainnet")
	if err != nil {
		b.Fatal(err)
	}
	p := Params{Network: net, WithdrawalCredentials: ExecutionCredentials([20]byte{0x42}), AmountGwei: DefaultAmountGwei}
	for b.Loop() {
		if _, err := Make(signer, p); err != nil {
			b.Fatal(err)
		}
	}
}
