package deposit

// BLS helpers for the tests, on blst directly: a Signer, the verify function
// Verify takes, and (to reproduce the published vectors' keys) BIP-39 seeds
// and EIP-2333 key derivation, checked here against those standards' own
// test vectors.

import (
	"crypto/hkdf"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"testing"

	blst "github.com/supranational/blst/bindings/go"
)

// popDST is the Ethereum consensus BLS ciphersuite (proof of possession).
var popDST = []byte("BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_")

// blstSigner is a Signer over a blst secret key.
type blstSigner struct {
	sk  *blst.SecretKey
	pub [48]byte
}

func newBLSTSigner(sk *blst.SecretKey) *blstSigner {
	s := &blstSigner{sk: sk}
	copy(s.pub[:], new(blst.P1Affine).From(sk).Compress())
	return s
}

func (s *blstSigner) PublicKey() [48]byte { return s.pub }

func (s *blstSigner) Sign(msg []byte) [96]byte {
	var out [96]byte
	copy(out[:], new(blst.P2Affine).Sign(s.sk, msg, popDST).Compress())
	return out
}

// randomSigner returns a signer over a fresh random key.
func randomSigner(tb testing.TB) *blstSigner {
	tb.Helper()
	ikm := make([]byte, 32)
	if _, err := rand.Read(ikm); err != nil {
		tb.Fatal(err)
	}
	sk := blst.KeyGen(ikm)
	if sk == nil {
		tb.Fatal("blst.KeyGen failed")
	}
	return newBLSTSigner(sk)
}

// signerFromBig returns a signer for a secret key given as an integer < r.
func signerFromBig(tb testing.TB, k *big.Int) *blstSigner {
	tb.Helper()
	var b [32]byte
	k.FillBytes(b[:])
	sk := new(blst.SecretKey).Deserialize(b[:])
	if sk == nil {
		tb.Fatalf("secret key %v is not a valid scalar", k)
	}
	return newBLSTSigner(sk)
}

// blstVerify is the verify function Verify takes: BLS POP verification with
// public key and signature group checks.
func blstVerify(pub [48]byte, msg []byte, sig [96]byte) bool {
	pk := new(blst.P1Affine).Uncompress(pub[:])
	if pk == nil {
		return false
	}
	s := new(blst.P2Affine).Uncompress(sig[:])
	if s == nil {
		return false
	}
	return s.Verify(true, pk, true, msg, popDST)
}

// blsR is the order of the BLS12-381 groups.
var blsR, _ = new(big.Int).SetString("52435875175126190479447740508185965837690552500527637822603658699938581184513", 10)

// bip39Seed is the BIP-39 seed of an ASCII mnemonic.
func bip39Seed(tb testing.TB, mnemonic, passphrase string) []byte {
	tb.Helper()
	seed, err := pbkdf2.Key(sha512.New, mnemonic, []byte("mnemonic"+passphrase), 2048, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return seed
}

// hkdfModR is EIP-2333's HKDF_mod_r with empty key_info.
func hkdfModR(tb testing.TB, ikm []byte) *big.Int {
	tb.Helper()
	salt := []byte("BLS-SIG-KEYGEN-SALT-")
	sk := new(big.Int)
	for sk.Sign() == 0 {
		h := sha256.Sum256(salt)
		salt = h[:]
		prk, err := hkdf.Extract(sha256.New, append(append([]byte{}, ikm...), 0), salt)
		if err != nil {
			tb.Fatal(err)
		}
		// key_info (empty) || I2OSP(L = 48, 2)
		okm, err := hkdf.Expand(sha256.New, prk, string([]byte{0, 48}), 48)
		if err != nil {
			tb.Fatal(err)
		}
		sk.SetBytes(okm).Mod(sk, blsR)
	}
	return sk
}

// ikmToLamportSK is EIP-2333's IKM_to_lamport_SK: 255 chunks of 32 bytes.
func ikmToLamportSK(tb testing.TB, ikm, salt []byte) []byte {
	tb.Helper()
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		tb.Fatal(err)
	}
	okm, err := hkdf.Expand(sha256.New, prk, "", 32*255)
	if err != nil {
		tb.Fatal(err)
	}
	return okm
}

// deriveChildSK is EIP-2333's derive_child_SK.
func deriveChildSK(tb testing.TB, parent *big.Int, index uint32) *big.Int {
	tb.Helper()
	var salt [4]byte
	binary.BigEndian.PutUint32(salt[:], index)
	ikm := parent.FillBytes(make([]byte, 32))
	notIKM := make([]byte, 32)
	for i, b := range ikm {
		notIKM[i] = ^b
	}
	var lamportPK []byte
	for _, chunks := range [][]byte{ikmToLamportSK(tb, ikm, salt[:]), ikmToLamportSK(tb, notIKM, salt[:])} {
		for i := 0; i < 255; i++ {
			h := sha256.Sum256(chunks[32*i : 32*i+32])
			lamportPK = append(lamportPK, h[:]...)
		}
	}
	compressed := sha256.Sum256(lamportPK)
	return hkdfModR(tb, compressed[:])
}

// deriveMasterSK is EIP-2333's derive_master_SK.
func deriveMasterSK(tb testing.TB, seed []byte) *big.Int {
	tb.Helper()
	return hkdfModR(tb, seed)
}

// derivePath derives the EIP-2334 path m/indices... from seed.
func derivePath(tb testing.TB, seed []byte, indices ...uint32) *big.Int {
	tb.Helper()
	sk := deriveMasterSK(tb, seed)
	for _, i := range indices {
		sk = deriveChildSK(tb, sk, i)
	}
	return sk
}

func decimal(tb testing.TB, s string) *big.Int {
	tb.Helper()
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		tb.Fatalf("bad decimal %q", s)
	}
	return v
}

// TestEIP2333Vectors checks the test helpers' BIP-39 and EIP-2333 code with
// EIP-2333's published test cases 0-2 (test case 0's seed is the BIP-39
// seed of "abandon ... about" with passphrase "TREZOR").
func TestEIP2333Vectors(t *testing.T) {
	seed0 := bip39Seed(t, "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about", "TREZOR")
	if got, want := hex.EncodeToString(seed0), "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"; got != want {
		t.Fatalf("BIP-39 seed = %s, want %s", got, want)
	}
	cases := []struct {
		seed      string
		master    string
		index     uint32
		childSK   string
		seedBytes []byte
	}{
		{seedBytes: seed0, master: "6083874454709270928345386274498605044986640685124978867557563392430687146096", index: 0, childSK: "20397789859736650942317412262472558107875392172444076792671091975210932703118"},
		{seed: "3141592653589793238462643383279502884197169399375105820974944592", master: "29757020647961307431480504535336562678282505419141012933316116377660817309383", index: 3141592653, childSK: "25457201688850691947727629385191704516744796114925897962676248250929345014287"},
		{seed: "0099FF991111002299DD7744EE3355BBDD8844115566CC55663355668888CC00", master: "27580842291869792442942448775674722299803720648445448686099262467207037398656", index: 4294967295, childSK: "29358610794459428860402234341874281240803786294062035874021252734817515685787"},
	}
	for i, c := range cases {
		seed := c.seedBytes
		if seed == nil {
			var err error
			if seed, err = hex.DecodeString(c.seed); err != nil {
				t.Fatal(err)
			}
		}
		master := deriveMasterSK(t, seed)
		if master.Cmp(decimal(t, c.master)) != 0 {
			t.Errorf("case %d: master SK = %v, want %s", i, master, c.master)
			continue
		}
		if child := deriveChildSK(t, master, c.index); child.Cmp(decimal(t, c.childSK)) != 0 {
			t.Errorf("case %d: child SK = %v, want %s", i, child, c.childSK)
		}
	}
}
