// Package seal encrypts validator secret keys at rest with a key-encryption
// key (KEK) and an AEAD (AES-256-GCM). A sealed secret is bound to its public
// key, so a ciphertext moved to another key record fails to open.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// KEKSize is the size of a key-encryption key in bytes; on disk and in PKM_KEK
// it is written as 2*KEKSize hex characters.
const KEKSize = 32

const (
	formatV1   = 0x01
	nonceSize  = 12
	aadPrefix  = "pkmanager sealed secret v1\x00"
	idLabel    = "pkmanager kek id v1"
	sealingKDF = "pkmanager secret sealing v1"
)

// ErrOpen is returned when a sealed secret cannot be opened: wrong KEK, a
// corrupted ciphertext, or a ciphertext that belongs to another public key.
var ErrOpen = errors.New("cannot open sealed secret (wrong key-encryption key or corrupted data)")

// KEK is a loaded key-encryption key.
type KEK struct {
	aead cipher.AEAD
	id   string
	// backupRoot is the root of backup file keys (backup.go), derived
	// from the KEK with its own label.
	backupRoot []byte
}

// ParseKEK reads a KEK written as 64 hex characters; surrounding white space
// is ignored. The error never contains the input.
func ParseKEK(text string) (*KEK, error) {
	raw, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil || len(raw) != KEKSize {
		return nil, fmt.Errorf("key-encryption key must be %d hex characters (%d random bytes)", 2*KEKSize, KEKSize)
	}
	return newKEK(raw)
}

func newKEK(raw []byte) (*KEK, error) {
	sealKey, err := hkdf.Key(sha256.New, raw, nil, sealingKDF, 32)
	if err != nil {
		return nil, fmt.Errorf("derive sealing key: %w", err)
	}
	block, err := aes.NewCipher(sealKey)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte(idLabel))
	backupRoot, err := hkdf.Key(sha256.New, raw, nil, backupKDF, 32)
	if err != nil {
		return nil, fmt.Errorf("derive backup key: %w", err)
	}
	return &KEK{aead: aead, id: hex.EncodeToString(mac.Sum(nil)[:8]), backupRoot: backupRoot}, nil
}

// LoadKEKFile reads a KEK file. It reports insecure permissions through the
// returned warning (empty when the file is private to its owner).
func LoadKEKFile(path string) (kek *KEK, warning string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("key-encryption key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("key-encryption key file %s has mode %04o; it should be readable by its owner only (0600 or 0400)", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("key-encryption key file: %w", err)
	}
	kek, err = ParseKEK(string(b))
	if err != nil {
		return nil, "", fmt.Errorf("key-encryption key file %s: %w", path, err)
	}
	return kek, warning, nil
}

// GenerateKEKFile writes a new random KEK to path with mode 0600. It fails if
// the file exists, so an existing key is never overwritten.
func GenerateKEKFile(path string) (*KEK, error) {
	raw := make([]byte, KEKSize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("random key-encryption key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key-encryption key file: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write key-encryption key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync key-encryption key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close key-encryption key file: %w", err)
	}
	return newKEK(raw)
}

// LoadOrGenerateKEKFile loads path, or creates it when it does not exist.
// created reports whether a new key was written.
func LoadOrGenerateKEKFile(path string) (kek *KEK, created bool, warning string, err error) {
	kek, warning, err = LoadKEKFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return kek, false, warning, err
	}
	kek, err = GenerateKEKFile(path)
	return kek, err == nil, "", err
}

// ID is a short public fingerprint of the KEK (an HMAC of a fixed label). It
// identifies which KEK a store or backup needs without revealing it.
func (k *KEK) ID() string { return k.id }

// Seal encrypts secret for the key record identified by pubkey.
func (k *KEK) Seal(secret, pubkey []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(secret)+k.aead.Overhead())
	out[0] = formatV1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	return k.aead.Seal(out, out[1:1+nonceSize], secret, aad(pubkey)), nil
}

// Open decrypts a sealed secret of the key record identified by pubkey.
func (k *KEK) Open(sealed, pubkey []byte) ([]byte, error) {
	if len(sealed) < 1+nonceSize+k.aead.Overhead() || sealed[0] != formatV1 {
		return nil, ErrOpen
	}
	secret, err := k.aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], aad(pubkey))
	if err != nil {
		return nil, ErrOpen
	}
	return secret, nil
}

func aad(pubkey []byte) []byte {
	return append([]byte(aadPrefix), pubkey...)
}
