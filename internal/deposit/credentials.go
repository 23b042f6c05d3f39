package deposit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/sha3"
)

// Withdrawal credential prefixes (consensus spec, phase0 and electra).
const (
	// BLSWithdrawalPrefix: 0x00 || sha256(withdrawal BLS pubkey)[1:].
	BLSWithdrawalPrefix = 0x00
	// ExecutionWithdrawalPrefix: 0x01 || 11 zero bytes || execution address.
	ExecutionWithdrawalPrefix = 0x01
	// CompoundingWithdrawalPrefix: 0x02 || 11 zero bytes || execution
	// address (EIP-7251, Electra).
	CompoundingWithdrawalPrefix = 0x02
)

// ParseExecutionAddress reads a 20-byte execution-layer address written as
// 0x followed by 40 hex digits. An all-lower-case or all-upper-case address
// is taken as it is; a mixed-case one must carry a valid EIP-55 checksum,
// which catches most typing errors.
func ParseExecutionAddress(s string) ([20]byte, error) {
	var a [20]byte
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		return a, fmt.Errorf("execution address %q must start with 0x", s)
	}
	if len(h) != 2*len(a) {
		return a, fmt.Errorf("execution address %q: want 40 hex digits after 0x, got %d", s, len(h))
	}
	if _, err := hex.Decode(a[:], []byte(h)); err != nil {
		return a, fmt.Errorf("execution address %q is not hex: %w", s, err)
	}
	if h != strings.ToLower(h) && h != strings.ToUpper(h) && ChecksumAddress(a) != "0x"+h {
		return a, fmt.Errorf("execution address %q is mixed-case but its EIP-55 checksum is wrong: check it for a typo", s)
	}
	return a, nil
}

// ChecksumAddress writes addr in EIP-55 mixed-case checksum form: the hex
// letter at position i is upper case when nibble i of
// Keccak-256(lower-case hex address) is 8 or more.
func ChecksumAddress(addr [20]byte) string {
	out := []byte(hex.EncodeToString(addr[:]))
	h := sha3.NewLegacyKeccak256()
	h.Write(out)
	sum := h.Sum(nil)
	for i, c := range out {
		nibble := sum[i/2] >> 4
		if i%2 == 1 {
			nibble = sum[i/2] & 0x0f
		}
		if c >= 'a' && c <= 'f' && nibble >= 8 {
			out[i] = c - 'a' + 'A'
		}
	}
	return "0x" + string(out)
}

// ExecutionCredentials returns 0x01 withdrawal credentials for addr:
// 0x01 || 11 zero bytes || addr.
func ExecutionCredentials(addr [20]byte) [32]byte {
	return addressCredentials(ExecutionWithdrawalPrefix, addr)
}

// CompoundingCredentials returns EIP-7251 0x02 (compounding) withdrawal
// credentials for addr: 0x02 || 11 zero bytes || addr.
func CompoundingCredentials(addr [20]byte) [32]byte {
	return addressCredentials(CompoundingWithdrawalPrefix, addr)
}

func addressCredentials(prefix byte, addr [20]byte) [32]byte {
	var wc [32]byte
	wc[0] = prefix
	copy(wc[12:], addr[:])
	return wc
}

// BLSCredentials returns 0x00 withdrawal credentials for a BLS withdrawal
// public key: 0x00 || sha256(withdrawalPubkey)[1:].
func BLSCredentials(withdrawalPubkey [48]byte) [32]byte {
	wc := sha256.Sum256(withdrawalPubkey[:])
	wc[0] = BLSWithdrawalPrefix
	return wc
}

// ValidateWithdrawalCredentials rejects withdrawal credentials that would
// lock or burn a deposit: an unknown prefix, a 0x01/0x02 value whose padding
// is not zero, a 0x01/0x02 value naming the zero address, and the all-zero
// value (the zero value of [32]byte: a BLS credential nobody holds the key for).
func ValidateWithdrawalCredentials(wc [32]byte) error {
	switch wc[0] {
	case BLSWithdrawalPrefix:
		if wc == ([32]byte{}) {
			return errors.New("withdrawal credentials are all zero (not set?)")
		}
		return nil
	case ExecutionWithdrawalPrefix, CompoundingWithdrawalPrefix:
		for _, b := range wc[1:12] {
			if b != 0 {
				return fmt.Errorf("withdrawal credentials 0x%x: bytes 1-11 must be zero for prefix 0x%02x", wc[:], wc[0])
			}
		}
		if [20]byte(wc[12:]) == ([20]byte{}) {
			return fmt.Errorf("withdrawal credentials 0x%x name the zero address", wc[:])
		}
		return nil
	default:
		return fmt.Errorf("withdrawal credentials 0x%x: unknown prefix 0x%02x (want 0x00, 0x01 or 0x02)", wc[:], wc[0])
	}
}
