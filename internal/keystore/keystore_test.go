package keystore

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	keystorev4 "github.com/wealdtech/go-eth2-wallet-encryptor-keystorev4"

	"github.com/pkmanager/pkmanager/internal/keys"
)

// EIP-2335 test vectors (https://eips.ethereum.org/EIPS/eip-2335#test-cases),
// stored in testdata/eip2335.
func eipVector(t testing.TB, kdf KDF) (data []byte, password string, secret []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "eip2335")
	data, err := os.ReadFile(filepath.Join(dir, "keystores", "keystore-"+string(kdf)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(filepath.Join(dir, "password.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := os.ReadFile(filepath.Join(dir, "secret.hex"))
	if err != nil {
		t.Fatal(err)
	}
	secret, err = hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(string(sh)), "0x"))
	if err != nil {
		t.Fatal(err)
	}
	return data, string(pw), secret
}

var testPubkey = func() [48]byte {
	var pk [48]byte
	b, _ := hex.DecodeString("9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07")
	copy(pk[:], b)
	return pk
}()

func TestEIP2335Vectors(t *testing.T) {
	for _, kdf := range []KDF{Scrypt, PBKDF2} {
		t.Run(string(kdf), func(t *testing.T) {
			data, password, secret := eipVector(t, kdf)
			ks, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := ks.Decrypt(password)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("secret = %x, want %x", got, secret)
			}
			if ks.KDF() != kdf {
				t.Errorf("KDF() = %q", ks.KDF())
			}
			if ks.Insecure() {
				t.Error("standard-cost vector reported insecure")
			}
			if pk, ok := ks.Pubkey(); !ok || pk != testPubkey {
				t.Errorf("Pubkey() = %x, %v", pk, ok)
			}
			wantPath := map[KDF]string{Scrypt: "m/12381/60/3141592653/589793238", PBKDF2: "m/12381/60/0/0"}[kdf]
			if ks.Path() != wantPath {
				t.Errorf("Path() = %q, want %q", ks.Path(), wantPath)
			}
			if !strings.HasPrefix(ks.Description(), "This is a test keystore") {
				t.Errorf("Description() = %q", ks.Description())
			}
			// The EIP's secret is also a BLS key whose public key is the
			// vector's pubkey.
			sk, err := keys.SecretKeyFromBytes(got)
			if err != nil {
				t.Fatal(err)
			}
			if sk.PublicKey() != testPubkey {
				t.Error("decrypted secret does not match the pubkey")
			}
		})
	}
}

func TestNormalizePasswordEIPVector(t *testing.T) {
	_, password, _ := eipVector(t, Scrypt)
	want, _ := hex.DecodeString("7465737470617373776f7264f09f9491")
	if got := []byte(NormalizePassword(password)); !bytes.Equal(got, want) {
		t.Fatalf("NormalizePassword = %x, want %x", got, want)
	}
}

func TestNormalizePassword(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain ascii", "plain ascii"},
		{"tab\there\nnl\r\x00nul\x1fus", "tabherenlnulus"},
		{"del\x7fete", "delete"},
		{"c1\u0080\u0085\u009fend", "c1end"},
		{"keep\u00a0nbsp", "keep nbsp"}, // NFKD maps U+00A0 to a space
		{"gr\u00fcn", "gru\u0308n"},     // NFKD decomposes ü
		{"\ufb01le", "file"},            // NFKD expands the ﬁ ligature
		{"  spaces  ", "  spaces  "},
		{"bad\xffutf8", "bad\xffutf8"},
		{"", ""},
	}
	for _, tc := range cases {
		got := NormalizePassword(tc.in)
		if got != tc.want {
			t.Errorf("NormalizePassword(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if again := NormalizePassword(got); again != got {
			t.Errorf("NormalizePassword not idempotent on %q", tc.in)
		}
	}
}

func TestRandomPassword(t *testing.T) {
	a, err := RandomPassword()
	if err != nil {
		t.Fatal(err)
	}
	b, err := RandomPassword()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a) {
		t.Fatalf("RandomPassword = %q, want 64 lower-case hex characters", a)
	}
	if a == b {
		t.Fatal("two random passwords are equal")
	}
	if NormalizePassword(a) != a {
		t.Fatal("normalization changes a random password")
	}
}

func randomSecret(t testing.TB) ([]byte, [48]byte) {
	t.Helper()
	sk, err := keys.GenerateRandom()
	if err != nil {
		t.Fatal(err)
	}
	return sk.Bytes(), sk.PublicKey()
}

func roundTrip(t *testing.T, opts Options, password string) {
	t.Helper()
	secret, pk := randomSecret(t)
	path := keys.SigningPath(7)
	ks, err := Encrypt(secret, password, pk, path, opts)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	data, err := ks.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	parsed, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got, err := parsed.Decrypt(password)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("round trip changed the secret")
	}
	wantKDF := opts.KDF
	if wantKDF == "" {
		wantKDF = Scrypt
	}
	if parsed.KDF() != wantKDF {
		t.Errorf("KDF() = %q, want %q", parsed.KDF(), wantKDF)
	}
	if parsed.Insecure() != opts.Insecure {
		t.Errorf("Insecure() = %v, want %v", parsed.Insecure(), opts.Insecure)
	}
	if p, ok := parsed.Pubkey(); !ok || p != pk {
		t.Error("pubkey not preserved")
	}
	if parsed.Path() != path {
		t.Errorf("Path() = %q", parsed.Path())
	}
	if u, err := uuid.Parse(parsed.UUID()); err != nil || u.Version() != 4 {
		t.Errorf("UUID() = %q, not a v4 UUID", parsed.UUID())
	}
	again, err := parsed.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Error("Marshal(Parse(Marshal())) differs")
	}

	// The KDF parameters in the JSON are the ones promised.
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	params := m["crypto"].(map[string]any)["kdf"].(map[string]any)["params"].(map[string]any)
	want := map[string]any{"dklen": 32.0}
	switch {
	case wantKDF == Scrypt && opts.Insecure:
		want["n"], want["r"], want["p"] = 1024.0, 8.0, 1.0
	case wantKDF == Scrypt:
		want["n"], want["r"], want["p"] = 262144.0, 8.0, 1.0
	case opts.Insecure:
		want["c"], want["prf"] = 1024.0, "hmac-sha256"
	default:
		want["c"], want["prf"] = 262144.0, "hmac-sha256"
	}
	for k, v := range want {
		if params[k] != v {
			t.Errorf("kdf params %s = %v, want %v", k, params[k], v)
		}
	}
	salt, err := hex.DecodeString(params["salt"].(string))
	if err != nil || len(salt) != 32 {
		t.Errorf("salt %q is not 32 bytes of hex", params["salt"])
	}
}

func TestRoundTripInsecure(t *testing.T) {
	for _, kdf := range []KDF{"", Scrypt, PBKDF2} {
		t.Run("kdf="+string(kdf), func(t *testing.T) {
			roundTrip(t, Options{KDF: kdf, Insecure: true}, "correct horse battery staple")
		})
	}
	t.Run("unicode password", func(t *testing.T) {
		roundTrip(t, Options{Insecure: true}, "𝔱𝔢𝔰𝔱🔑 grün")
	})
}

func TestRoundTripStandard(t *testing.T) {
	if testing.Short() {
		t.Skip("standard cost is slow")
	}
	for _, kdf := range []KDF{Scrypt, PBKDF2} {
		t.Run(string(kdf), func(t *testing.T) {
			roundTrip(t, Options{KDF: kdf}, "standard cost password")
		})
	}
}

// Passwords are normalized on both sides: equivalent forms decrypt, and
// control characters are ignored as EIP-2335 requires.
func TestPasswordNormalizationAppliesToBothSides(t *testing.T) {
	secret, pk := randomSecret(t)
	ks, err := Encrypt(secret, "gr\u00fcn\x7f\u0085", pk, "", Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"gr\u00fcn", "gru\u0308n", "\x00gr\u00fcn\n"} {
		got, err := ks.Decrypt(pw)
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("Decrypt(%q) failed: %v", pw, err)
		}
	}
	if _, err := ks.Decrypt("grun"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("Decrypt(grun) = %v, want ErrWrongPassword", err)
	}
}

// Our output decrypts with keystorev4 directly.
func TestKeystorev4DecryptsOurOutput(t *testing.T) {
	for _, kdf := range []KDF{Scrypt, PBKDF2} {
		secret, pk := randomSecret(t)
		password := "𝔱𝔢𝔰𝔱 password"
		ks, err := Encrypt(secret, password, pk, "m/12381/3600/0/0/0", Options{KDF: kdf, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		data, err := ks.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		got, err := keystorev4.New().Decrypt(m["crypto"].(map[string]any), password)
		if err != nil {
			t.Fatalf("%s: keystorev4 Decrypt: %v", kdf, err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("%s: keystorev4 decrypted another secret", kdf)
		}
	}
}

// A keystore written by keystorev4 (as ethdo does) with a password holding a
// C1 control character, which keystorev4 does not strip, still decrypts.
func TestDecryptsKeystorev4OutputWithC1Password(t *testing.T) {
	secret, pk := randomSecret(t)
	password := "pass\u0085word"
	crypto, err := keystorev4.New(keystorev4.WithCost(t, 10), keystorev4.WithCipher("scrypt")).Encrypt(secret, password)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]any{
		"crypto":  crypto,
		"pubkey":  hex.EncodeToString(pk[:]),
		"path":    "",
		"uuid":    uuid.NewString(),
		"version": 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ks.Decrypt(password)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("wrong secret")
	}
}

// keySet returns the set of JSON key paths of v, e.g. "crypto.kdf.params.n".
func keySet(prefix string, v any, out map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		out[p] = true
		keySet(p, sub, out)
	}
}

func sortedKeys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

func TestMarshalMatchesEIPLayout(t *testing.T) {
	for _, kdf := range []KDF{Scrypt, PBKDF2} {
		t.Run(string(kdf), func(t *testing.T) {
			vector, _, _ := eipVector(t, kdf)
			var want map[string]any
			if err := json.Unmarshal(vector, &want); err != nil {
				t.Fatal(err)
			}
			secret, pk := randomSecret(t)
			ks, err := Encrypt(secret, "password", pk, "m/12381/3600/0/0/0", Options{KDF: kdf, Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			data, err := ks.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			wk, gk := map[string]bool{}, map[string]bool{}
			keySet("", want, wk)
			keySet("", got, gk)
			if !slices.Equal(sortedKeys(wk), sortedKeys(gk)) {
				t.Fatalf("key sets differ:\n got  %v\n want %v", sortedKeys(gk), sortedKeys(wk))
			}
			c := got["crypto"].(map[string]any)
			if p := c["checksum"].(map[string]any)["params"]; p == nil || len(p.(map[string]any)) != 0 {
				t.Errorf(`checksum params = %v, want {}`, p)
			}
			if got["version"] != 4.0 {
				t.Errorf("version = %v", got["version"])
			}
			for _, f := range []string{"kdf", "checksum", "cipher"} {
				if w, g := want["crypto"].(map[string]any)[f].(map[string]any)["function"], c[f].(map[string]any)["function"]; w != g {
					t.Errorf("%s function = %v, want %v", f, g, w)
				}
			}
			// Every hex field is lower-case without 0x.
			hexRE := regexp.MustCompile(`^[0-9a-f]+$`)
			for name, s := range map[string]any{
				"pubkey":   got["pubkey"],
				"salt":     c["kdf"].(map[string]any)["params"].(map[string]any)["salt"],
				"checksum": c["checksum"].(map[string]any)["message"],
				"iv":       c["cipher"].(map[string]any)["params"].(map[string]any)["iv"],
				"cipher":   c["cipher"].(map[string]any)["message"],
			} {
				if str, _ := s.(string); !hexRE.MatchString(str) {
					t.Errorf("%s = %q, want lower-case hex", name, s)
				}
			}
			// Indented, like the EIP.
			if !bytes.Contains(data, []byte("\n    \"crypto\": {\n        \"kdf\": {")) {
				t.Errorf("output is not indented as expected:\n%s", data)
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	secret, pk := randomSecret(t)
	const password = "the right password"
	ks, err := Encrypt(secret, password, pk, "", Options{KDF: PBKDF2, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, wrong := range []string{"the wrong password", "", "the right password!", "the right passwor"} {
		got, err := ks.Decrypt(wrong)
		if !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("Decrypt(%q) error = %v, want ErrWrongPassword", wrong, err)
		}
		if got != nil {
			t.Fatal("secret returned with error")
		}
		assertNoSecret(t, err.Error(), secret, password, wrong)
	}
}

func assertNoSecret(t *testing.T, msg string, secret []byte, passwords ...string) {
	t.Helper()
	if strings.Contains(strings.ToLower(msg), hex.EncodeToString(secret[:4])) {
		t.Errorf("error %q contains secret bytes", msg)
	}
	for _, p := range passwords {
		if p != "" && strings.Contains(msg, p) {
			t.Errorf("error %q contains a password", msg)
		}
	}
}

func TestTamperedKeystoreRejected(t *testing.T) {
	secret, pk := randomSecret(t)
	const password = "password"
	ks, err := Encrypt(secret, password, pk, "", Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	data, err := ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	flipHex := func(s string, i int) string {
		b, _ := hex.DecodeString(s)
		b[i] ^= 0x01
		return hex.EncodeToString(b)
	}
	tamper := func(f func(c map[string]any)) *Keystore {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		f(m["crypto"].(map[string]any))
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		k, err := Parse(out)
		if err != nil {
			t.Fatalf("tampered keystore no longer parses: %v", err)
		}
		return k
	}
	module := func(c map[string]any, name string) map[string]any { return c[name].(map[string]any) }
	cases := map[string]func(c map[string]any){
		"ciphertext": func(c map[string]any) {
			module(c, "cipher")["message"] = flipHex(module(c, "cipher")["message"].(string), 5)
		},
		"checksum": func(c map[string]any) {
			module(c, "checksum")["message"] = flipHex(module(c, "checksum")["message"].(string), 0)
		},
		"salt": func(c map[string]any) {
			p := module(c, "kdf")["params"].(map[string]any)
			p["salt"] = flipHex(p["salt"].(string), 31)
		},
		"scrypt n": func(c map[string]any) {
			module(c, "kdf")["params"].(map[string]any)["n"] = 2048
		},
	}
	for name, f := range cases {
		if _, err := tamper(f).Decrypt(password); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("tampered %s: error = %v, want ErrWrongPassword", name, err)
		}
	}
	// EIP-2335's checksum does not cover the IV: a tampered IV decrypts to
	// garbage without error. Callers must check the secret against the
	// pubkey (as the server does).
	got, err := tamper(func(c map[string]any) {
		p := module(c, "cipher")["params"].(map[string]any)
		p["iv"] = flipHex(p["iv"].(string), 15)
	}).Decrypt(password)
	if err != nil || bytes.Equal(got, secret) {
		t.Errorf("tampered IV: err %v, secret unchanged %v", err, bytes.Equal(got, secret))
	}
}

// validKeystoreJSON returns the EIP scrypt vector as a map to mutate.
func validKeystoreMap(t *testing.T) map[string]any {
	t.Helper()
	data, _, _ := eipVector(t, Scrypt)
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseRejectsHostileOrMalformed(t *testing.T) {
	kdfParams := func(m map[string]any) map[string]any {
		return m["crypto"].(map[string]any)["kdf"].(map[string]any)["params"].(map[string]any)
	}
	toPBKDF2 := func(m map[string]any, c any) {
		kdf := m["crypto"].(map[string]any)["kdf"].(map[string]any)
		kdf["function"] = "pbkdf2"
		kdf["params"] = map[string]any{"dklen": 32, "c": c, "prf": "hmac-sha256", "salt": "00"}
	}
	cases := map[string]func(m map[string]any){
		"scrypt n 2^30":          func(m map[string]any) { kdfParams(m)["n"] = 1 << 30 },
		"scrypt n 2^21":          func(m map[string]any) { kdfParams(m)["n"] = 1 << 21 },
		"scrypt n not pow2":      func(m map[string]any) { kdfParams(m)["n"] = 262143 },
		"scrypt n 1":             func(m map[string]any) { kdfParams(m)["n"] = 1 },
		"scrypt n 0":             func(m map[string]any) { kdfParams(m)["n"] = 0 },
		"scrypt n negative":      func(m map[string]any) { kdfParams(m)["n"] = -262144 },
		"scrypt n 1e100":         func(m map[string]any) { kdfParams(m)["n"] = 1e100 },
		"scrypt n string":        func(m map[string]any) { kdfParams(m)["n"] = "262144" },
		"scrypt n fraction":      func(m map[string]any) { kdfParams(m)["n"] = 1024.5 },
		"scrypt r 0":             func(m map[string]any) { kdfParams(m)["r"] = 0 },
		"scrypt r huge":          func(m map[string]any) { kdfParams(m)["r"] = 1 << 20 },
		"scrypt p 0":             func(m map[string]any) { kdfParams(m)["p"] = 0 },
		"scrypt p huge":          func(m map[string]any) { kdfParams(m)["p"] = 1 << 20 },
		"scrypt n*r*p too large": func(m map[string]any) { kdfParams(m)["n"], kdfParams(m)["r"], kdfParams(m)["p"] = 1<<20, 8, 1 },
		"scrypt memory too big":  func(m map[string]any) { kdfParams(m)["n"], kdfParams(m)["r"] = 1<<18, 32 },
		"dklen 16":               func(m map[string]any) { kdfParams(m)["dklen"] = 16 },
		"dklen huge":             func(m map[string]any) { kdfParams(m)["dklen"] = 1 << 30 },
		"dklen missing":          func(m map[string]any) { delete(kdfParams(m), "dklen") },
		"salt huge":              func(m map[string]any) { kdfParams(m)["salt"] = strings.Repeat("ab", 2000) },
		"salt bad hex":           func(m map[string]any) { kdfParams(m)["salt"] = "zz" },
		"salt 0x prefix":         func(m map[string]any) { kdfParams(m)["salt"] = "0xd4e5" },
		"pbkdf2 c 2^31":          func(m map[string]any) { toPBKDF2(m, 1<<31) },
		"pbkdf2 c 2^23":          func(m map[string]any) { toPBKDF2(m, 1<<23) },
		"pbkdf2 c 0":             func(m map[string]any) { toPBKDF2(m, 0) },
		"pbkdf2 prf sha512": func(m map[string]any) {
			toPBKDF2(m, 1024)
			kdfParams(m)["prf"] = "hmac-sha512"
		},
		"kdf argon2":         func(m map[string]any) { m["crypto"].(map[string]any)["kdf"].(map[string]any)["function"] = "argon2id" },
		"kdf missing":        func(m map[string]any) { delete(m["crypto"].(map[string]any), "kdf") },
		"kdf params missing": func(m map[string]any) { delete(m["crypto"].(map[string]any)["kdf"].(map[string]any), "params") },
		"checksum keccak": func(m map[string]any) {
			m["crypto"].(map[string]any)["checksum"].(map[string]any)["function"] = "keccak256"
		},
		"checksum short": func(m map[string]any) {
			m["crypto"].(map[string]any)["checksum"].(map[string]any)["message"] = "d2217f"
		},
		"checksum missing": func(m map[string]any) { delete(m["crypto"].(map[string]any), "checksum") },
		"cipher aes-256-gcm": func(m map[string]any) {
			m["crypto"].(map[string]any)["cipher"].(map[string]any)["function"] = "aes-256-gcm"
		},
		"cipher missing": func(m map[string]any) { delete(m["crypto"].(map[string]any), "cipher") },
		"cipher empty":   func(m map[string]any) { m["crypto"].(map[string]any)["cipher"].(map[string]any)["message"] = "" },
		"cipher huge": func(m map[string]any) {
			m["crypto"].(map[string]any)["cipher"].(map[string]any)["message"] = strings.Repeat("00", 2000)
		},
		"iv 15 bytes": func(m map[string]any) {
			m["crypto"].(map[string]any)["cipher"].(map[string]any)["params"] = map[string]any{"iv": strings.Repeat("00", 15)}
		},
		"iv 17 bytes": func(m map[string]any) {
			m["crypto"].(map[string]any)["cipher"].(map[string]any)["params"] = map[string]any{"iv": strings.Repeat("00", 17)}
		},
		"iv missing": func(m map[string]any) {
			m["crypto"].(map[string]any)["cipher"].(map[string]any)["params"] = map[string]any{}
		},
		"crypto missing":      func(m map[string]any) { delete(m, "crypto") },
		"crypto not object":   func(m map[string]any) { m["crypto"] = "x" },
		"version 3":           func(m map[string]any) { m["version"] = 3 },
		"version missing":     func(m map[string]any) { delete(m, "version") },
		"version string":      func(m map[string]any) { m["version"] = "4" },
		"path missing":        func(m map[string]any) { delete(m, "path") },
		"uuid missing":        func(m map[string]any) { delete(m, "uuid") },
		"uuid empty":          func(m map[string]any) { m["uuid"] = "" },
		"pubkey 47 bytes":     func(m map[string]any) { m["pubkey"] = strings.Repeat("ab", 47) },
		"pubkey not hex":      func(m map[string]any) { m["pubkey"] = strings.Repeat("zz", 48) },
		"description non-str": func(m map[string]any) { m["description"] = 5 },
	}
	for name, mutate := range cases {
		m := validKeystoreMap(t)
		mutate(m)
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := Parse(data)
		if err == nil {
			t.Errorf("%s: Parse accepted", name)
			continue
		}
		if ks != nil {
			t.Errorf("%s: Parse returned a keystore with the error", name)
		}
		if !errors.Is(err, ErrInvalidKeystore) {
			t.Errorf("%s: error %v does not wrap ErrInvalidKeystore", name, err)
		}
	}

	for name, data := range map[string][]byte{
		"not json":  []byte("not json"),
		"empty":     nil,
		"array":     []byte("[]"),
		"too large": append(append([]byte(`{"description": "`), bytes.Repeat([]byte("a"), MaxKeystoreSize)...), `"}`...),
	} {
		if _, err := Parse(data); !errors.Is(err, ErrInvalidKeystore) {
			t.Errorf("%s: error %v", name, err)
		}
	}

	// Sanity: the unmodified vector parses, and the limits admit the
	// boundaries.
	if _, err := Parse(mustMarshal(t, validKeystoreMap(t))); err != nil {
		t.Fatalf("valid vector rejected: %v", err)
	}
	m := validKeystoreMap(t)
	kdfParams(m)["n"], kdfParams(m)["r"] = 1<<19, 8 // n*r*p = 2^22
	if _, err := Parse(mustMarshal(t, m)); err != nil {
		t.Errorf("n=2^19 r=8 rejected: %v", err)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAcceptsVariants(t *testing.T) {
	// Upper-case hex and a missing description or pubkey are accepted; the
	// output is canonical.
	m := validKeystoreMap(t)
	c := m["crypto"].(map[string]any)
	cipherModule := c["cipher"].(map[string]any)
	cipherModule["message"] = strings.ToUpper(cipherModule["message"].(string))
	m["pubkey"] = strings.ToUpper(m["pubkey"].(string))
	delete(m, "description")
	m["unknown_field"] = true
	ks, err := Parse(mustMarshal(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if pk, ok := ks.Pubkey(); !ok || pk != testPubkey {
		t.Error("upper-case pubkey not decoded")
	}
	out, err := ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("06AE90D5")) || !bytes.Contains(out, []byte("06ae90d5")) {
		t.Error("Marshal did not write lower-case hex")
	}

	delete(m, "pubkey")
	ks, err = Parse(mustMarshal(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ks.Pubkey(); ok {
		t.Error("Pubkey() ok without a pubkey")
	}
}

func TestDecryptInvalidKeystoreDoesNotPanic(t *testing.T) {
	var nilKS *Keystore
	for name, ks := range map[string]*Keystore{"nil": nilKS, "zero": {}} {
		if _, err := ks.Decrypt("x"); !errors.Is(err, ErrInvalidKeystore) {
			t.Errorf("%s: Decrypt error %v", name, err)
		}
		if _, err := ks.Marshal(); !errors.Is(err, ErrInvalidKeystore) {
			t.Errorf("%s: Marshal error %v", name, err)
		}
		if _, ok := ks.Pubkey(); ok {
			t.Errorf("%s: Pubkey ok", name)
		}
		if !ks.Insecure() || ks.Path() != "" || ks.KDF() != "" {
			t.Errorf("%s: getters misbehave", name)
		}
	}
}

func TestEncryptRejects(t *testing.T) {
	secret, pk := randomSecret(t)
	cases := map[string]func() (*Keystore, error){
		"empty secret": func() (*Keystore, error) { return Encrypt(nil, "pw", pk, "", Options{Insecure: true}) },
		"huge secret":  func() (*Keystore, error) { return Encrypt(make([]byte, 2000), "pw", pk, "", Options{Insecure: true}) },
		"empty pw":     func() (*Keystore, error) { return Encrypt(secret, "", pk, "", Options{Insecure: true}) },
		"control pw":   func() (*Keystore, error) { return Encrypt(secret, "\x00\n\x7f\u0085", pk, "", Options{Insecure: true}) },
		"zero pubkey":  func() (*Keystore, error) { return Encrypt(secret, "pw", [48]byte{}, "", Options{Insecure: true}) },
		"unknown kdf": func() (*Keystore, error) {
			return Encrypt(secret, "pw", pk, "", Options{KDF: "argon2id", Insecure: true})
		},
		"kdf wrong case": func() (*Keystore, error) {
			return Encrypt(secret, "pw", pk, "", Options{KDF: "SCRYPT", Insecure: true})
		},
	}
	for name, f := range cases {
		ks, err := f()
		if err == nil || ks != nil {
			t.Errorf("%s: Encrypt = %v, %v; want an error", name, ks, err)
			continue
		}
		assertNoSecret(t, err.Error(), secret, "\x00\n\x7f\u0085")
	}
}

// Encryption is randomized: same inputs, different salt, IV, UUID and
// ciphertext.
func TestEncryptIsRandomized(t *testing.T) {
	secret, pk := randomSecret(t)
	a, err := Encrypt(secret, "pw", pk, "", Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encrypt(secret, "pw", pk, "", Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.salt, b.salt) || bytes.Equal(a.iv, b.iv) || a.uuid == b.uuid || bytes.Equal(a.ciphertext, b.ciphertext) {
		t.Fatal("two encryptions share salt, IV, UUID or ciphertext")
	}
	if bytes.Contains(a.ciphertext, secret) {
		t.Fatal("ciphertext contains the secret")
	}
}

// A staking-deposit-cli 2.7.0 keystore (see testdata/interop/README.md)
// parses and decrypts to the key its pubkey names.
func TestInteropStakingDepositCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("standard-cost scrypt is slow")
	}
	data, err := os.ReadFile(filepath.Join("testdata", "interop", "keystore-m_12381_3600_0_0_0-1668613231.json"))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Path() != "m/12381/3600/0/0/0" || ks.KDF() != Scrypt || ks.Insecure() {
		t.Errorf("path %q kdf %q insecure %v", ks.Path(), ks.KDF(), ks.Insecure())
	}
	secret, err := ks.Decrypt("testtest")
	if err != nil {
		t.Fatal(err)
	}
	sk, err := keys.SecretKeyFromBytes(secret)
	if err != nil {
		t.Fatal(err)
	}
	want, ok := ks.Pubkey()
	if !ok || sk.PublicKey() != want {
		t.Fatalf("decrypted key's pubkey %x, keystore says %x", sk.PublicKey(), want)
	}
	// And it is the key EIP-2334 derives from the mnemonic.
	seed, err := keys.SeedFromMnemonic("ski interest capable knee usual ugly duty exercise tattoo subway delay upper bid forget say", "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	derived, err := d.SigningKey(0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(derived.Bytes(), secret) {
		t.Fatal("keystore secret differs from the derived key")
	}
}
