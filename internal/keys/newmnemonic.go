package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/tyler-smith/go-bip39/wordlists"
)

// MnemonicFromEntropy returns the BIP-39 English mnemonic of entropy (16,
// 20, 24, 28 or 32 bytes: 12 to 24 words): the entropy followed by the
// first len*8/32 bits of its SHA-256, read as 11-bit word indices.
func MnemonicFromEntropy(entropy []byte) (string, error) {
	switch len(entropy) {
	case 16, 20, 24, 28, 32:
	default:
		return "", fmt.Errorf("keys: BIP-39 entropy of %d bytes, want 16, 20, 24, 28 or 32", len(entropy))
	}
	sum := sha256.Sum256(entropy)
	defer clear(sum[:])
	bits := append(append([]byte{}, entropy...), sum[0]) // the checksum is at most 8 bits
	defer clear(bits)
	n := len(entropy) * 8 * 33 / 32 / 11 // words
	words := make([]string, n)
	for i := range n {
		v := 0
		for b := i * 11; b < i*11+11; b++ {
			v = v<<1 | int(bits[b/8]>>(7-b%8)&1)
		}
		words[i] = wordlists.English[v]
	}
	return strings.Join(words, " "), nil
}

// NewMnemonic returns a new random BIP-39 English mnemonic of words words
// (12, 15, 18, 21 or 24) from crypto/rand.
func NewMnemonic(words int) (string, error) {
	switch words {
	case 12, 15, 18, 21, 24:
	default:
		return "", fmt.Errorf("keys: a mnemonic of %d words: want 12, 15, 18, 21 or 24", words)
	}
	entropy := make([]byte, words*4/3)
	defer clear(entropy)
	if _, err := rand.Read(entropy); err != nil {
		return "", fmt.Errorf("keys: random entropy: %w", err)
	}
	return MnemonicFromEntropy(entropy)
}
