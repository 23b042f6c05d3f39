// Package keys holds Ethereum consensus-layer validator keys: BLS12-381
// secret keys (backed by blst), signing and verification with the Ethereum
// ciphersuite, and EIP-2333/EIP-2334 derivation of validator keys from a
// BIP-39 mnemonic.
//
// Secret material never appears in errors, and SecretKey refuses to print
// itself through fmt or log/slog.
package keys

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	blst "github.com/supranational/blst/bindings/go"
)

const (
	// SecretKeySize is the length of a serialized secret key: a big-endian
	// scalar.
	SecretKeySize = 32
	// PublicKeySize is the length of a compressed G1 public key.
	PublicKeySize = 48
	// SignatureSize is the length of a compressed G2 signature.
	SignatureSize = 96

	// SignatureDST is the domain separation tag of the Ethereum consensus
	// ciphersuite (proof-of-possession scheme, signatures in G2).
	SignatureDST = "BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
)

var dst = []byte(SignatureDST)

// curveOrder is r, the order of the BLS12-381 G1/G2 subgroups, big-endian.
var curveOrder = [SecretKeySize]byte{
	0x73, 0xed, 0xa7, 0x53, 0x29, 0x9d, 0x7d, 0x48,
	0x33, 0x39, 0xd8, 0x08, 0x09, 0xa1, 0xd8, 0x05,
	0x53, 0xbd, 0xa4, 0x02, 0xff, 0xfe, 0x5b, 0xfe,
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01,
}

// ErrInvalidSecretKey is returned (wrapped) when bytes do not encode a valid
// secret key. The wrapping error says why, never what the bytes were.
var ErrInvalidSecretKey = errors.New("invalid BLS secret key")

// SecretKey is a BLS12-381 secret key. Use it through a pointer; do not copy.
// Its methods may be called concurrently, except Zero.
type SecretKey struct {
	sk blst.SecretKey

	pkOnce sync.Once
	pk     [PublicKeySize]byte
}

// GenerateRandom returns a fresh secret key: blst KeyGen (the IETF BLS
// KeyGen, as EIP-2333's HKDF_mod_r) over 32 bytes from crypto/rand.
func GenerateRandom() (*SecretKey, error) {
	var ikm [32]byte
	defer clear(ikm[:])
	if _, err := io.ReadFull(rand.Reader, ikm[:]); err != nil {
		return nil, fmt.Errorf("keys: reading randomness: %w", err)
	}
	k := blst.KeyGen(ikm[:])
	if k == nil {
		return nil, errors.New("keys: blst KeyGen failed")
	}
	return wrap(k), nil
}

// wrap moves a blst key into a new SecretKey and wipes the source.
func wrap(k *blst.SecretKey) *SecretKey {
	sk := &SecretKey{sk: *k}
	k.Zeroize()
	return sk
}

// SecretKeyFromBytes parses a 32-byte big-endian secret key. It rejects a
// wrong length, zero, and values not below the curve order r.
func SecretKeyFromBytes(b []byte) (*SecretKey, error) {
	if len(b) != SecretKeySize {
		return nil, fmt.Errorf("keys: %w: length %d, want %d", ErrInvalidSecretKey, len(b), SecretKeySize)
	}
	if subtle.ConstantTimeCompare(b, make([]byte, SecretKeySize)) == 1 {
		return nil, fmt.Errorf("keys: %w: zero", ErrInvalidSecretKey)
	}
	if !lessThanOrder(b) {
		return nil, fmt.Errorf("keys: %w: not below the curve order", ErrInvalidSecretKey)
	}
	sk := new(SecretKey)
	if sk.sk.Deserialize(b) == nil {
		sk.sk.Zeroize()
		return nil, fmt.Errorf("keys: %w: rejected by blst", ErrInvalidSecretKey)
	}
	return sk, nil
}

// lessThanOrder reports whether the 32-byte big-endian b is < r. It runs in
// constant time: it computes the borrow of b - r.
func lessThanOrder(b []byte) bool {
	borrow := 0
	for i := SecretKeySize - 1; i >= 0; i-- {
		d := int(b[i]) - int(curveOrder[i]) - borrow
		borrow = (d >> 8) & 1
	}
	return borrow == 1
}

// usable reports whether sk holds a key (not nil, not zeroed).
func (sk *SecretKey) usable() bool {
	return sk != nil && sk.sk.Valid()
}

// Bytes returns the key as 32 bytes big-endian: the format Prysm's legacy
// keymanager API sends and EIP-2335 encrypts. The caller owns the slice and
// should clear it when done. A nil or zeroed key yields 32 zero bytes.
func (sk *SecretKey) Bytes() []byte {
	if !sk.usable() {
		return make([]byte, SecretKeySize)
	}
	return sk.sk.Serialize()
}

// PublicKey returns the compressed G1 public key. It is computed once and
// cached. A nil or zeroed key yields all zeros (never a valid public key).
func (sk *SecretKey) PublicKey() [PublicKeySize]byte {
	if !sk.usable() {
		return [PublicKeySize]byte{}
	}
	sk.pkOnce.Do(func() {
		copy(sk.pk[:], new(blst.P1Affine).From(&sk.sk).Compress())
	})
	return sk.pk
}

// Sign signs msg with the Ethereum ciphersuite
// (BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_) and returns the compressed
// G2 signature. A nil or zeroed key yields all zeros (never a valid
// signature).
func (sk *SecretKey) Sign(msg []byte) [SignatureSize]byte {
	var out [SignatureSize]byte
	if !sk.usable() {
		return out
	}
	sig := new(blst.P2Affine).Sign(&sk.sk, msg, dst)
	if sig == nil {
		return out
	}
	copy(out[:], sig.Compress())
	return out
}

// Zero wipes the key. Afterwards Bytes, PublicKey and Sign return zeros. It
// must not run concurrently with other methods of sk.
func (sk *SecretKey) Zero() {
	if sk == nil {
		return
	}
	sk.sk.Zeroize()
	sk.pk = [PublicKeySize]byte{}
}

// Format implements fmt.Formatter so that no verb ever prints key material.
func (sk *SecretKey) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "keys.SecretKey{REDACTED}")
}

// LogValue implements slog.LogValuer so that structured logs never contain
// key material.
func (sk *SecretKey) LogValue() slog.Value {
	return slog.StringValue("REDACTED")
}

// Verify reports whether sig is a valid signature of msg by pubkey under the
// Ethereum ciphersuite. It performs the full checks: the public key must
// decompress, be in the G1 subgroup and not be the point at infinity; the
// signature must decompress, be in the G2 subgroup and not be infinity.
func Verify(pubkey [PublicKeySize]byte, msg []byte, sig [SignatureSize]byte) bool {
	pk := new(blst.P1Affine).Uncompress(pubkey[:])
	if pk == nil || !pk.KeyValidate() {
		return false
	}
	s := new(blst.P2Affine).Uncompress(sig[:])
	if s == nil || !s.SigValidate(true) {
		return false
	}
	// Both points are validated above, so blst need not check them again.
	return s.Verify(false, pk, false, msg, dst)
}

// ValidPublicKey reports whether pubkey is a compressed G1 point in the
// correct subgroup and not the point at infinity.
func ValidPublicKey(pubkey [PublicKeySize]byte) bool {
	pk := new(blst.P1Affine).Uncompress(pubkey[:])
	return pk != nil && pk.KeyValidate()
}
