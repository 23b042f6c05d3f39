package keys

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/tyler-smith/go-bip39/wordlists"
	"golang.org/x/text/unicode/norm"
)

// ErrInvalidMnemonic is returned (wrapped) when a mnemonic is not a valid
// BIP-39 English mnemonic. The wrapping error gives the reason (word count,
// position of an unknown word, checksum) but never any word.
var ErrInvalidMnemonic = errors.New("invalid mnemonic")

// MaxMnemonicFileSize bounds what ReadMnemonicFile reads.
const MaxMnemonicFileSize = 4096

// BIP-39 parameters.
const (
	bip39Iterations = 2048
	bip39SeedSize   = 64
)

// englishIndex maps each word of the BIP-39 English list to its index. It is
// built from the word list directly rather than through go-bip39's global
// (and mutable, via SetWordList) state.
var englishIndex = sync.OnceValue(func() map[string]int {
	m := make(map[string]int, len(wordlists.English))
	for i, w := range wordlists.English {
		m[w] = i
	}
	return m
})

// normalizeMnemonic returns the NFKD form of mnemonic with words separated
// by single spaces.
func normalizeMnemonic(mnemonic string) string {
	return strings.Join(strings.Fields(norm.NFKD.String(mnemonic)), " ")
}

// validateMnemonic checks that the (normalized) words are a BIP-39 English
// mnemonic with a correct checksum.
func validateMnemonic(words []string) error {
	n := len(words)
	switch n {
	case 12, 15, 18, 21, 24:
	default:
		return fmt.Errorf("keys: %w: %d words, want 12, 15, 18, 21 or 24", ErrInvalidMnemonic, n)
	}
	idx := englishIndex()
	// n words carry n*11 bits: entropy of n*32/3 bits plus n/3 checksum bits.
	bits := make([]byte, (n*11+7)/8)
	defer clear(bits)
	pos := 0
	for i, w := range words {
		v, ok := idx[w]
		if !ok {
			return fmt.Errorf("keys: %w: word %d is not in the BIP-39 English list", ErrInvalidMnemonic, i+1)
		}
		for b := 10; b >= 0; b-- {
			if v>>b&1 == 1 {
				bits[pos/8] |= 0x80 >> (pos % 8)
			}
			pos++
		}
	}
	entBytes := n * 4 / 3 // n*32/3 bits
	csBits := n / 3
	sum := sha256.Sum256(bits[:entBytes])
	defer clear(sum[:])
	for i := 0; i < csBits; i++ {
		got := bits[(entBytes*8+i)/8] >> (7 - (entBytes*8+i)%8) & 1
		want := sum[i/8] >> (7 - i%8) & 1
		if got != want {
			return fmt.Errorf("keys: %w: checksum mismatch", ErrInvalidMnemonic)
		}
	}
	return nil
}

// SeedFromMnemonic validates mnemonic against the BIP-39 English word list
// and checksum and returns the 64-byte BIP-39 seed:
// PBKDF2-HMAC-SHA512(NFKD(mnemonic), "mnemonic"+NFKD(passphrase), 2048).
// Runs of whitespace in mnemonic are treated as single spaces. Errors never
// contain the mnemonic or passphrase.
func SeedFromMnemonic(mnemonic, passphrase string) ([]byte, error) {
	words := strings.Fields(norm.NFKD.String(mnemonic))
	if err := validateMnemonic(words); err != nil {
		return nil, err
	}
	salt := []byte("mnemonic" + norm.NFKD.String(passphrase))
	defer clear(salt)
	seed, err := pbkdf2.Key(sha512.New, strings.Join(words, " "), salt, bip39Iterations, bip39SeedSize)
	if err != nil {
		return nil, fmt.Errorf("keys: computing BIP-39 seed: %w", err)
	}
	return seed, nil
}

// ValidateMnemonic reports, as an error wrapping ErrInvalidMnemonic, whether
// mnemonic is not a valid BIP-39 English mnemonic. It is cheaper than
// SeedFromMnemonic (no PBKDF2).
func ValidateMnemonic(mnemonic string) error {
	return validateMnemonic(strings.Fields(norm.NFKD.String(mnemonic)))
}

// ReadMnemonicFile reads a mnemonic from path, normalizes it (NFKD, runs of
// whitespace, including newlines, become single spaces, leading and
// trailing whitespace removed) and returns it. It does not validate the
// words; SeedFromMnemonic does. Errors name the path, never the content.
func ReadMnemonicFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("keys: reading mnemonic file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, MaxMnemonicFileSize+1)
	defer clear(buf)
	n, err := io.ReadFull(f, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	case err != nil:
		return "", fmt.Errorf("keys: reading mnemonic file %s: %w", path, err)
	default:
		return "", fmt.Errorf("keys: mnemonic file %s is larger than %d bytes", path, MaxMnemonicFileSize)
	}
	if !utf8.Valid(buf[:n]) {
		return "", fmt.Errorf("keys: mnemonic file %s is not valid UTF-8", path)
	}
	m := normalizeMnemonic(string(buf[:n]))
	if m == "" {
		return "", fmt.Errorf("keys: mnemonic file %s is empty", path)
	}
	return m, nil
}
