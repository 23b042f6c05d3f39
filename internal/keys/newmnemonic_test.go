package keys

import (
	"encoding/hex"
	"strings"
	"testing"
)

// The English vectors of the BIP-39 reference (trezor/python-mnemonic
// vectors.json).
func TestMnemonicFromEntropyVectors(t *testing.T) {
	for _, tc := range []struct{ entropy, mnemonic string }{
		{"00000000000000000000000000000000", "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"},
		{"7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f", "legal winner thank year wave sausage worth useful legal winner thank yellow"},
		{"80808080808080808080808080808080", "letter advice cage absurd amount doctor acoustic avoid letter advice cage above"},
		{"ffffffffffffffffffffffffffffffff", "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong"},
		{"000000000000000000000000000000000000000000000000", "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon agent"},
		{"0000000000000000000000000000000000000000000000000000000000000000", "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"},
		{"9e885d952ad362caeb4efe34a8e91bd2", "ozone drill grab fiber curtain grace pudding thank cruise elder eight picnic"},
		{"f585c11aec520db57dd353c69554b21a89b20fb0650966fa0a9d6f74fd989d8f", "void come effort suffer camp survey warrior heavy shoot primary clutch crush open amazing screen patrol group space point ten exist slush involve unfold"},
	} {
		e, _ := hex.DecodeString(tc.entropy)
		got, err := MnemonicFromEntropy(e)
		if err != nil || got != tc.mnemonic {
			t.Errorf("MnemonicFromEntropy(%s) = %q, %v; want %q", tc.entropy, got, err, tc.mnemonic)
		}
	}
	if _, err := MnemonicFromEntropy(make([]byte, 17)); err == nil {
		t.Error("17 bytes of entropy accepted")
	}
}

func TestNewMnemonic(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range []int{12, 15, 18, 21, 24} {
		m, err := NewMnemonic(n)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(strings.Fields(m)); got != n {
			t.Errorf("NewMnemonic(%d) has %d words", n, got)
		}
		if err := ValidateMnemonic(m); err != nil {
			t.Errorf("NewMnemonic(%d) does not validate: %v", n, err)
		}
		if seen[m] {
			t.Errorf("NewMnemonic repeated a mnemonic")
		}
		seen[m] = true
	}
	if _, err := NewMnemonic(13); err == nil {
		t.Error("13 words accepted")
	}
}
