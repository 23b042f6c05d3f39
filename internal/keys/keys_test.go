package keys

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

func mustPub(t testing.TB, s string) [PublicKeySize]byte {
	t.Helper()
	var pk [PublicKeySize]byte
	if b := mustHex(t, s); copy(pk[:], b) != PublicKeySize || len(b) != PublicKeySize {
		t.Fatalf("bad pubkey length in test")
	}
	return pk
}

func mustSig(t testing.TB, s string) [SignatureSize]byte {
	t.Helper()
	var sig [SignatureSize]byte
	if b := mustHex(t, s); copy(sig[:], b) != SignatureSize || len(b) != SignatureSize {
		t.Fatalf("bad signature length in test")
	}
	return sig
}

// Private keys, public keys and signatures of the Ethereum BLS test suite
// (ethereum/bls12-381-tests v0.1.2, shipped in consensus-spec-tests as
// tests/general/phase0/bls/{sign,verify}/small/*; values as reproduced in
// commonwarexyz/monorepo cryptography/src/bls12381/scheme.rs).
var (
	specSK = []string{
		"263dbd792f5b1be47ed85f8938c0f29586af0d3ac7b977f21c278fe1462040e3",
		"47b8192d77bf871b62e87859d653922725724a5c031afeabc60bcef5ff665138",
		"328388aff0d4a5b7dc9205abd374e7e98f3cd9f3418edb4eafda5fb16473d216",
	}
	specPK = []string{
		"a491d1b0ecd9bb917989f0e74f0dea0422eac4a873e5e2644f368dffb9a6e20fd6e10c1b77654d067c0618f6e5a7f79a",
		"b301803f8b5ac4a1133581fc676dfedc60d891dd5fa99028805e5ea5b08d3491af75d0707adab3b70c6a6a580217bf81",
		"b53d21a4cfd562c469cc81514d4ce5a6b577d8403d32a394dc265dd190b47fa9f829fdd7963afdf972e5e77854051f6f",
	}
	msg00 = strings.Repeat("00", 32)
	msg56 = strings.Repeat("56", 32)
	msgAB = strings.Repeat("ab", 32)
)

var signCases = []struct {
	name     string
	sk, msg  string
	expected string
}{
	{"sign_case_c82df61aa3ee60fb", specSK[0], msg00, "b6ed936746e01f8ecf281f020953fbf1f01debd5657c4a383940b020b26507f6076334f91e2366c96e9ab279fb5158090352ea1c5b0c9274504f4f0e7053af24802e51e4568d164fe986834f41e55c8e850ce1f98458c0cfc9ab380b55285a55"},
	{"sign_case_d0e28d7e76eb6e9c", specSK[0], msg56, "882730e5d03f6b42c3abc26d3372625034e1d871b65a8a6b900a56dae22da98abbe1b68f85e49fe7652a55ec3d0591c20767677e33e5cbb1207315c41a9ac03be39c2e7668edc043d6cb1d9fd93033caa8a1c5b0e84bedaeb6c64972503a43eb"},
	{"sign_case_f2ae1097e7d0e18b", specSK[0], msgAB, "91347bccf740d859038fcdcaf233eeceb2a436bcaaee9b2aa3bfb70efe29dfb2677562ccbea1c8e061fb9971b0753c240622fab78489ce96768259fc01360346da5b9f579e5da0d941e4c6ba18a0e64906082375394f337fa1af2b7127b0d121"},
	{"sign_case_11b8c7cad5238946", specSK[1], msg00, "b23c46be3a001c63ca711f87a005c200cc550b9429d5f4eb38d74322144f1b63926da3388979e5321012fb1a0526bcd100b5ef5fe72628ce4cd5e904aeaa3279527843fae5ca9ca675f4f51ed8f83bbf7155da9ecc9663100a885d5dc6df96d9"},
	{"sign_case_142f678a8d05fcd1", specSK[1], msg56, "af1390c3c47acdb37131a51216da683c509fce0e954328a59f93aebda7e4ff974ba208d9a4a2a2389f892a9d418d618418dd7f7a6bc7aa0da999a9d3a5b815bc085e14fd001f6a1948768a3f4afefc8b8240dda329f984cb345c6363272ba4fe"},
	{"sign_case_37286e1a6d1f6eb3", specSK[1], msgAB, "9674e2228034527f4c083206032b020310face156d4a4685e2fcaec2f6f3665aa635d90347b6ce124eb879266b1e801d185de36a0a289b85e9039662634f2eea1e02e670bc7ab849d006a70b2f93b84597558a05b879c8d445f387a5d5b653df"},
	{"sign_case_7055381f640f2c1d", specSK[2], msg00, "948a7cb99f76d616c2c564ce9bf4a519f1bea6b0a624a02276443c245854219fabb8d4ce061d255af5330b078d5380681751aa7053da2c98bae898edc218c75f07e24d8802a17cd1f6833b71e58f5eb5b94208b4d0bb3848cecb075ea21be115"},
	{"sign_case_8cd3d4d0d9a5b265", specSK[2], msg56, "a4efa926610b8bd1c8330c918b7a5e9bf374e53435ef8b7ec186abf62e1b1f65aeaaeb365677ac1d1172a1f5b44b4e6d022c252c58486c0a759fbdc7de15a756acc4d343064035667a594b4c2a6f0b0b421975977f297dba63ee2f63ffe47bb6"},
	{"sign_case_84d45c9c7cca6b92", specSK[2], msgAB, "ae82747ddeefe4fd64cf9cedb9b04ae3e8a43420cd255e3c7cd06a8d88b7c7f8638543719981c5d16fa3527c468c25f0026704a6951bde891360c7e8d12ddee0559004ccdbe6046b55bae1b257ee97f7cdb955773d7cf29adf3ccbb9975e4eb9"},
}

func TestSignKnownAnswer(t *testing.T) {
	for _, tc := range signCases {
		t.Run(tc.name, func(t *testing.T) {
			sk, err := SecretKeyFromBytes(mustHex(t, tc.sk))
			if err != nil {
				t.Fatalf("SecretKeyFromBytes: %v", err)
			}
			msg := mustHex(t, tc.msg)
			want := mustSig(t, tc.expected)
			if got := sk.Sign(msg); got != want {
				t.Fatalf("Sign = %x, want %x", got, want)
			}
			if !Verify(sk.PublicKey(), msg, want) {
				t.Fatal("Verify rejected the spec signature")
			}
		})
	}
}

func TestPublicKeyKnownAnswer(t *testing.T) {
	for i := range specSK {
		sk, err := SecretKeyFromBytes(mustHex(t, specSK[i]))
		if err != nil {
			t.Fatalf("SecretKeyFromBytes(%d): %v", i, err)
		}
		if got, want := sk.PublicKey(), mustPub(t, specPK[i]); got != want {
			t.Errorf("PublicKey(%d) = %x, want %x", i, got, want)
		}
		if got := sk.Bytes(); !bytes.Equal(got, mustHex(t, specSK[i])) {
			t.Errorf("Bytes(%d) did not round-trip", i)
		}
	}
	// sk = 1 gives the standard compressed G1 generator.
	one := make([]byte, 32)
	one[31] = 1
	sk, err := SecretKeyFromBytes(one)
	if err != nil {
		t.Fatalf("SecretKeyFromBytes(1): %v", err)
	}
	g1 := mustPub(t, "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb")
	if got := sk.PublicKey(); got != g1 {
		t.Errorf("PublicKey(1) = %x, want the G1 generator", got)
	}
}

func TestVerifyRejects(t *testing.T) {
	sk, err := SecretKeyFromBytes(mustHex(t, specSK[0]))
	if err != nil {
		t.Fatal(err)
	}
	pk := sk.PublicKey()
	msg := mustHex(t, msg56)
	good := sk.Sign(msg)
	if !Verify(pk, msg, good) {
		t.Fatal("Verify rejected a good signature")
	}

	otherPK := mustPub(t, specPK[1])
	infPK := [PublicKeySize]byte{0xc0}
	infSig := [SignatureSize]byte{0xc0}
	// verify_tampered_signature_case_2ea479adf8c40300: last 4 bytes 0xff.
	tampered := mustSig(t, "882730e5d03f6b42c3abc26d3372625034e1d871b65a8a6b900a56dae22da98abbe1b68f85e49fe7652a55ec3d0591c20767677e33e5cbb1207315c41a9ac03be39c2e7668edc043d6cb1d9fd93033caa8a1c5b0e84bedaeb6c64972ffffffff")
	flipped := good
	flipped[50] ^= 0x01
	notOnCurvePK := pk
	notOnCurvePK[47] ^= 0x01

	cases := []struct {
		name string
		pk   [PublicKeySize]byte
		msg  []byte
		sig  [SignatureSize]byte
	}{
		{"wrong message", pk, mustHex(t, msg00), good},
		{"wrong pubkey", otherPK, msg, good},
		{"tampered signature (spec case)", pk, msg, tampered},
		{"flipped signature bit", pk, msg, flipped},
		{"pubkey not on curve", notOnCurvePK, msg, good},
		{"infinity pubkey and signature (spec case)", infPK, mustHex(t, strings.Repeat("12", 32)), infSig},
		{"infinity signature", pk, msg, infSig},
		{"zero pubkey", [PublicKeySize]byte{}, msg, good},
		{"zero signature", pk, msg, [SignatureSize]byte{}},
	}
	for _, tc := range cases {
		if Verify(tc.pk, tc.msg, tc.sig) {
			t.Errorf("%s: Verify accepted", tc.name)
		}
	}
	if ValidPublicKey(infPK) || ValidPublicKey(notOnCurvePK) || ValidPublicKey([PublicKeySize]byte{}) {
		t.Error("ValidPublicKey accepted an invalid key")
	}
	if !ValidPublicKey(pk) {
		t.Error("ValidPublicKey rejected a valid key")
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for i := 0; i < 5; i++ {
		sk, err := GenerateRandom()
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte(fmt.Sprintf("message %d", i))
		sig := sk.Sign(msg)
		if !Verify(sk.PublicKey(), msg, sig) {
			t.Fatalf("round trip %d failed", i)
		}
		if Verify(sk.PublicKey(), append(msg, 0), sig) {
			t.Fatalf("round trip %d: signature valid for another message", i)
		}
	}
}

func TestGenerateRandom(t *testing.T) {
	a, err := GenerateRandom()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateRandom()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), b.Bytes()) || a.PublicKey() == b.PublicKey() {
		t.Fatal("two random keys are equal")
	}
	if !ValidPublicKey(a.PublicKey()) {
		t.Fatal("random key has an invalid public key")
	}
	// Bytes round-trips through SecretKeyFromBytes.
	c, err := SecretKeyFromBytes(a.Bytes())
	if err != nil {
		t.Fatalf("SecretKeyFromBytes(Bytes()): %v", err)
	}
	if c.PublicKey() != a.PublicKey() {
		t.Fatal("round-tripped key has another public key")
	}
}

func TestSecretKeyFromBytesRejects(t *testing.T) {
	r := mustHex(t, "73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001")
	rPlus1 := mustHex(t, "73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000002")
	rMinus1 := mustHex(t, "73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000000")
	cases := map[string][]byte{
		"nil":      nil,
		"31 bytes": bytes.Repeat([]byte{1}, 31),
		"33 bytes": bytes.Repeat([]byte{1}, 33),
		"48 bytes": bytes.Repeat([]byte{1}, 48),
		"zero":     make([]byte, 32),
		"r":        r,
		"r+1":      rPlus1,
		"all ff":   bytes.Repeat([]byte{0xff}, 32),
		"r with top byte +1": func() []byte {
			b := bytes.Clone(rMinus1)
			b[0]++
			return b
		}(),
	}
	for name, b := range cases {
		sk, err := SecretKeyFromBytes(b)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if sk != nil {
			t.Errorf("%s: returned a key with the error", name)
		}
		if !errors.Is(err, ErrInvalidSecretKey) {
			t.Errorf("%s: error %v does not wrap ErrInvalidSecretKey", name, err)
		}
		assertNoSecret(t, err.Error(), b)
	}
	if _, err := SecretKeyFromBytes(rMinus1); err != nil {
		t.Errorf("r-1 rejected: %v", err)
	}
}

func TestLessThanOrder(t *testing.T) {
	r := curveOrder[:]
	if lessThanOrder(r) {
		t.Error("r < r")
	}
	for i := 0; i < 32; i++ {
		b := bytes.Clone(r)
		if b[i] > 0 {
			b[i]--
			// Lowering any byte of r (with no borrow needed elsewhere
			// since we only decrement non-zero bytes) gives a value < r.
			if !lessThanOrder(b) {
				t.Errorf("decrementing byte %d: not < r", i)
			}
		}
		b = bytes.Clone(r)
		if b[i] < 0xff {
			b[i]++
			if lessThanOrder(b) {
				t.Errorf("incrementing byte %d: < r", i)
			}
		}
	}
}

// assertNoSecret fails if msg contains secret in any common rendering.
func assertNoSecret(t *testing.T, msg string, secret []byte) {
	t.Helper()
	if len(secret) < 4 {
		return
	}
	lower := strings.ToLower(msg)
	for _, s := range []string{
		hex.EncodeToString(secret),
		hex.EncodeToString(secret[:4]),
		fmt.Sprint(secret),
		fmt.Sprint(secret[:4])[1:], // "[a b c d" without the bracket
	} {
		if s != "" && strings.Contains(lower, strings.ToLower(s)) {
			t.Errorf("message %q contains secret material", msg)
		}
	}
	if bytes.Contains([]byte(msg), secret) {
		t.Errorf("message %q contains raw secret bytes", msg)
	}
}

func TestSecretKeyNeverPrints(t *testing.T) {
	sk, err := SecretKeyFromBytes(mustHex(t, specSK[0]))
	if err != nil {
		t.Fatal(err)
	}
	secret := sk.Bytes()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		out := fmt.Sprintf(verb, sk)
		assertNoSecret(t, out, secret)
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("%s printed %q, want a redacted form", verb, out)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("key", "sk", sk)
	assertNoSecret(t, buf.String(), secret)
	if !strings.Contains(buf.String(), "REDACTED") {
		t.Errorf("slog printed %q", buf.String())
	}
}

func TestZero(t *testing.T) {
	sk, err := GenerateRandom()
	if err != nil {
		t.Fatal(err)
	}
	pk := sk.PublicKey()
	msg := []byte("msg")
	sk.Zero()
	if !bytes.Equal(sk.Bytes(), make([]byte, 32)) {
		t.Error("Bytes after Zero is not zero")
	}
	if sk.PublicKey() != ([PublicKeySize]byte{}) {
		t.Error("PublicKey after Zero is not zero")
	}
	sig := sk.Sign(msg)
	if sig != ([SignatureSize]byte{}) {
		t.Error("Sign after Zero is not zero")
	}
	if Verify(pk, msg, sig) {
		t.Error("signature of a zeroed key verifies")
	}
	if _, err := DeriveChildKey(sk, 0); !errors.Is(err, ErrInvalidSecretKey) {
		t.Errorf("DeriveChildKey(zeroed) error = %v", err)
	}

	var nilKey *SecretKey
	nilKey.Zero()
	if nilKey.Sign(msg) != ([SignatureSize]byte{}) || nilKey.PublicKey() != ([PublicKeySize]byte{}) || len(nilKey.Bytes()) != 32 {
		t.Error("nil key methods misbehave")
	}
}
