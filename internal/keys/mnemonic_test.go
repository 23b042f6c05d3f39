package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tyler-smith/go-bip39"
)

// BIP-39 vectors (passphrase "TREZOR") from trezor/python-mnemonic
// vectors.json, as carried in go-bip39 v1.1.0's bip39_test.go.
var bip39Vectors = []struct{ mnemonic, seed string }{
	{"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
		"c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"},
	{"legal winner thank year wave sausage worth useful legal winner thank yellow",
		"2e8905819b8723fe2c1d161860e5ee1830318dbf49a83bd451cfb8440c28bd6fa457fe1296106559a3c80937a1c1069be3a3a5bd381ee6260e8d9739fce1f607"},
	{"zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
		"ac27495480225222079d7be181583751e86f571027b0497b5b5d11218e0a8a13332572917f0f8e5a589620c6f15b11c61dee327651a14c34e18231052e48c069"},
	{"legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title",
		"bc09fca1804f7e69da93c2f2028eb238c227f2e9dda30cd63699232578480a4021b146ad717fbb7e451ce9eb835f43620bf5c514db0f8add49f5d121449d3e87"},
	{"zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote",
		"dd48c104698c30cfe2b6142103248622fb7bb0ff692eebb00089b32d22484e1613912f0a5b694407be899ffd31ed3992c456cdf60f5d4564b8ba3f05a69890ad"},
}

func TestSeedFromMnemonicVectors(t *testing.T) {
	for _, v := range bip39Vectors {
		seed, err := SeedFromMnemonic(v.mnemonic, "TREZOR")
		if err != nil {
			t.Fatalf("%d words: %v", len(strings.Fields(v.mnemonic)), err)
		}
		if !bytes.Equal(seed, mustHex(t, v.seed)) {
			t.Errorf("%d words: seed %x, want %s", len(strings.Fields(v.mnemonic)), seed, v.seed)
		}
	}
}

// SeedFromMnemonic agrees with go-bip39 on random mnemonics of every length.
func TestSeedFromMnemonicMatchesGoBIP39(t *testing.T) {
	for _, bits := range []int{128, 160, 192, 224, 256} {
		ent, err := bip39.NewEntropy(bits)
		if err != nil {
			t.Fatal(err)
		}
		m, err := bip39.NewMnemonic(ent)
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateMnemonic(m); err != nil {
			t.Fatalf("%d bits: ValidateMnemonic: %v", bits, err)
		}
		got, err := SeedFromMnemonic(m, "pass phrase")
		if err != nil {
			t.Fatalf("%d bits: %v", bits, err)
		}
		if want := bip39.NewSeed(m, "pass phrase"); !bytes.Equal(got, want) {
			t.Errorf("%d bits: seed differs from go-bip39", bits)
		}
	}
}

func TestSeedFromMnemonicNormalization(t *testing.T) {
	m := bip39Vectors[0].mnemonic
	base, err := SeedFromMnemonic(m, "TREZOR")
	if err != nil {
		t.Fatal(err)
	}
	spaced, err := SeedFromMnemonic("  "+strings.ReplaceAll(m, " ", " \t\n ")+"\n", "TREZOR")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(base, spaced) {
		t.Error("extra whitespace changed the seed")
	}
	// NFKD of the passphrase: precomposed ü (U+00FC) and u + combining
	// diaeresis (U+0308) give the same seed, equal to BIP-39 over the
	// decomposed form.
	pre, err := SeedFromMnemonic(m, "gr\u00fcn")
	if err != nil {
		t.Fatal(err)
	}
	dec, err := SeedFromMnemonic(m, "gru\u0308n")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pre, dec) {
		t.Error("passphrase is not NFKD-normalized")
	}
	if want := bip39.NewSeed(m, "gru\u0308n"); !bytes.Equal(pre, want) {
		t.Error("seed differs from BIP-39 over the NFKD passphrase")
	}
	if bytes.Equal(pre, base) {
		t.Error("passphrase ignored")
	}
}

func TestSeedFromMnemonicRejects(t *testing.T) {
	valid := strings.Fields(bip39Vectors[1].mnemonic)
	badChecksum := append([]string(nil), valid...)
	badChecksum[11] = "abandon" // "yellow" -> "abandon" breaks the checksum
	unknown := append([]string(nil), valid...)
	unknown[4] = "wavez"
	cases := map[string][]string{
		"bad checksum":     badChecksum,
		"unknown word":     unknown,
		"11 words":         valid[:11],
		"13 words":         append(append([]string(nil), valid...), "legal"),
		"empty":            nil,
		"upper case":       strings.Fields(strings.ToUpper(bip39Vectors[1].mnemonic)),
		"all abandon (12)": strings.Fields(strings.Repeat("abandon ", 12)),
	}
	for name, words := range cases {
		m := strings.Join(words, " ")
		_, err := SeedFromMnemonic(m, "secret passphrase")
		if !errors.Is(err, ErrInvalidMnemonic) {
			t.Errorf("%s: error %v, want ErrInvalidMnemonic", name, err)
			continue
		}
		if err2 := ValidateMnemonic(m); !errors.Is(err2, ErrInvalidMnemonic) {
			t.Errorf("%s: ValidateMnemonic error %v", name, err2)
		}
		assertNoWords(t, err.Error(), words)
		if strings.Contains(err.Error(), "secret passphrase") {
			t.Errorf("%s: error contains the passphrase", name)
		}
	}
}

// assertNoWords fails if msg contains any of the mnemonic's words.
func assertNoWords(t *testing.T, msg string, words []string) {
	t.Helper()
	lower := strings.ToLower(msg)
	for _, w := range words {
		if strings.Contains(lower, strings.ToLower(w)) {
			t.Errorf("message %q contains mnemonic word %q", msg, w)
		}
	}
}

func TestReadMnemonicFile(t *testing.T) {
	dir := t.TempDir()
	want := bip39Vectors[1].mnemonic
	path := filepath.Join(dir, "mnemonic")
	content := "\n  " + strings.ReplaceAll(want, " ", "\t \n") + "  \r\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMnemonicFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("ReadMnemonicFile = %q, want %q", got, want)
	}
	if _, err := SeedFromMnemonic(got, ""); err != nil {
		t.Fatalf("mnemonic read from file is invalid: %v", err)
	}
}

func TestReadMnemonicFileErrors(t *testing.T) {
	dir := t.TempDir()
	words := strings.Fields(bip39Vectors[1].mnemonic)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	huge := bytes.Repeat([]byte(bip39Vectors[1].mnemonic+"\n"), MaxMnemonicFileSize/len(bip39Vectors[1].mnemonic)+2)
	badUTF8 := append([]byte(bip39Vectors[1].mnemonic), 0xff, 0xfe)
	cases := map[string]string{
		"missing":  filepath.Join(dir, "does-not-exist"),
		"empty":    write("empty", nil),
		"blank":    write("blank", []byte(" \n\t\n")),
		"too big":  write("huge", huge),
		"bad utf8": write("badutf8", badUTF8),
		"dir":      dir,
	}
	for name, p := range cases {
		m, err := ReadMnemonicFile(p)
		if err == nil {
			t.Errorf("%s: no error (got %d chars)", name, len(m))
			continue
		}
		assertNoWords(t, err.Error(), words)
	}
}
