package deposit

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestCredentialLayouts(t *testing.T) {
	addr, err := ParseExecutionAddress("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		got  [32]byte
		want string
	}{
		{"0x01", ExecutionCredentials(addr), "010000000000000000000000" + "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"},
		{"0x02", CompoundingCredentials(addr), "020000000000000000000000" + "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"},
	}
	for _, c := range cases {
		if got := hex.EncodeToString(c.got[:]); got != c.want {
			t.Errorf("%s credentials = %s, want %s", c.name, got, c.want)
		}
		if err := ValidateWithdrawalCredentials(c.got); err != nil {
			t.Errorf("%s credentials rejected: %v", c.name, err)
		}
	}

	pub := [48]byte(randomBytes(t, 48))
	wc := BLSCredentials(pub)
	h := sha256.Sum256(pub[:])
	if wc[0] != 0x00 || string(wc[1:]) != string(h[1:]) {
		t.Errorf("BLSCredentials = %x, want 00 || %x", wc, h[1:])
	}
	if err := ValidateWithdrawalCredentials(wc); err != nil {
		t.Errorf("0x00 credentials rejected: %v", err)
	}
}

func TestValidateWithdrawalCredentialsRejects(t *testing.T) {
	good := ExecutionCredentials([20]byte{1})
	padded := good
	padded[11] = 1
	cases := map[string][32]byte{
		"all zero":          {},
		"unknown prefix":    {0x03, 11: 0, 31: 1},
		"0xff prefix":       {0xff, 31: 1},
		"padding not zero":  padded,
		"0x01 zero address": ExecutionCredentials([20]byte{}),
		"0x02 zero address": CompoundingCredentials([20]byte{}),
	}
	for name, wc := range cases {
		if err := ValidateWithdrawalCredentials(wc); err == nil {
			t.Errorf("%s (%x): accepted", name, wc)
		}
	}
}

// TestEIP55 uses the test addresses of EIP-55 itself.
func TestEIP55(t *testing.T) {
	checksummed := []string{
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
		"0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
		"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
	}
	// EIP-55's "all caps" and "all lower" examples.
	singleCase := []string{
		"0x52908400098527886E0F7030069857D2E4169EE7",
		"0x8617E340B3D01FA5F11F306F4090FD50E238070D",
		"0xde709f2102306220921060314715629080e2fb77",
		"0x27b1fdb04752bbc536007a920d24acb045561c26",
	}
	for _, s := range checksummed {
		a, err := ParseExecutionAddress(s)
		if err != nil {
			t.Errorf("ParseExecutionAddress(%s): %v", s, err)
			continue
		}
		if got := ChecksumAddress(a); got != s {
			t.Errorf("ChecksumAddress = %s, want %s", got, s)
		}
		if want := strings.ToLower(s[2:]); hex.EncodeToString(a[:]) != want {
			t.Errorf("ParseExecutionAddress(%s) = %x", s, a)
		}
		// Lower and upper case forms carry no checksum and are accepted.
		for _, form := range []string{"0x" + strings.ToLower(s[2:]), "0x" + strings.ToUpper(s[2:])} {
			b, err := ParseExecutionAddress(form)
			if err != nil || b != a {
				t.Errorf("ParseExecutionAddress(%s) = %x, %v; want %x", form, b, err, a)
			}
		}
		// Swapping the case of any one letter breaks the checksum.
		for i := 2; i < len(s); i++ {
			c := s[i]
			var swapped byte
			switch {
			case c >= 'a' && c <= 'f':
				swapped = c - 'a' + 'A'
			case c >= 'A' && c <= 'F':
				swapped = c - 'A' + 'a'
			default:
				continue
			}
			bad := s[:i] + string(swapped) + s[i+1:]
			if _, err := ParseExecutionAddress(bad); err == nil || !strings.Contains(err.Error(), "EIP-55") {
				t.Errorf("ParseExecutionAddress(%s) with case of position %d swapped: err = %v, want EIP-55 checksum error", bad, i, err)
			}
		}
	}
	for _, s := range singleCase {
		a, err := ParseExecutionAddress(s)
		if err != nil {
			t.Errorf("ParseExecutionAddress(%s): %v", s, err)
			continue
		}
		if got := ChecksumAddress(a); !strings.EqualFold(got, s) {
			t.Errorf("ChecksumAddress(%s) = %s", s, got)
		}
	}
}

func TestParseExecutionAddressErrors(t *testing.T) {
	cases := map[string]string{
		"5aaeb6053f3e94c9b9a09f33669435e7ef1beaed":     "0x",
		"0X5aaeb6053f3e94c9b9a09f33669435e7ef1beaed":   "0x",
		"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae":    "40 hex digits",
		"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00": "40 hex digits",
		"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg":   "not hex",
		"":   "0x",
		"0x": "40 hex digits",
	}
	for in, want := range cases {
		_, err := ParseExecutionAddress(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseExecutionAddress(%q): err = %v, want one mentioning %q", in, err, want)
		}
	}
}
