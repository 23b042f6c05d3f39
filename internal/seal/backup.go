package seal

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

const (
	backupKDF     = "pkmanager backup v1"
	backupFileKDF = "pkmanager backup file key v1"
)

// BackupKey returns the 32-byte key that encrypts one backup file, derived
// from the KEK (through its own label, so it is independent of the key that
// seals secrets) and the file's random salt. The salt makes every file's key
// unique, so a file may number its nonces from zero.
func (k *KEK) BackupKey(salt []byte) ([]byte, error) {
	if len(salt) < 16 {
		return nil, errors.New("backup key: salt shorter than 16 bytes")
	}
	key, err := hkdf.Key(sha256.New, k.backupRoot, salt, backupFileKDF, 32)
	if err != nil {
		return nil, fmt.Errorf("derive backup file key: %w", err)
	}
	return key, nil
}

// String shows only the KEK's public ID, so printing a KEK never shows key
// material.
func (k *KEK) String() string { return "KEK(id " + k.id + ")" }

// GoString is String, for %#v.
func (k *KEK) GoString() string { return k.String() }
