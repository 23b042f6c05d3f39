package keys

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	blst "github.com/supranational/blst/bindings/go"
)

// EIP-2334 path components: m / purpose / coin_type / account / use.
const (
	purpose  = 12381
	coinType = 3600
)

// MinSeedSize is the shortest seed EIP-2333 accepts (256 bits). A BIP-39
// seed is 64 bytes.
const MinSeedSize = 32

// ErrDeriverZeroed is returned by a Deriver after Zero.
var ErrDeriverZeroed = errors.New("keys: deriver has been zeroed")

// SigningPath returns the EIP-2334 path of validator index's signing key,
// "m/12381/3600/<index>/0/0".
func SigningPath(index uint32) string {
	return "m/12381/3600/" + strconv.FormatUint(uint64(index), 10) + "/0/0"
}

// WithdrawalPath returns the EIP-2334 path of validator index's withdrawal
// key, "m/12381/3600/<index>/0".
func WithdrawalPath(index uint32) string {
	return "m/12381/3600/" + strconv.FormatUint(uint64(index), 10) + "/0"
}

// ParseSigningPath is the inverse of SigningPath. It accepts only the
// canonical form: decimal index without sign or leading zeros, fitting in
// uint32, so that SigningPath(index) == path whenever ok is true.
func ParseSigningPath(path string) (index uint32, ok bool) {
	rest, found := strings.CutPrefix(path, "m/12381/3600/")
	if !found {
		return 0, false
	}
	num, found := strings.CutSuffix(rest, "/0/0")
	if !found || num == "" || (len(num) > 1 && num[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(v), true
}

// DeriveMasterKey returns the EIP-2333 master secret key of seed (at least
// MinSeedSize bytes).
func DeriveMasterKey(seed []byte) (*SecretKey, error) {
	if len(seed) < MinSeedSize {
		return nil, fmt.Errorf("keys: seed is %d bytes, EIP-2333 requires at least %d", len(seed), MinSeedSize)
	}
	master := blst.DeriveMasterEip2333(seed)
	if master == nil {
		return nil, errors.New("keys: deriving master key failed")
	}
	return wrap(master), nil
}

// DeriveChildKey returns the EIP-2333 child index of parent.
func DeriveChildKey(parent *SecretKey, index uint32) (*SecretKey, error) {
	if !parent.usable() {
		return nil, fmt.Errorf("keys: %w: parent key is nil or zeroed", ErrInvalidSecretKey)
	}
	return wrap(deriveChild(&parent.sk, index)), nil
}

// Deriver derives EIP-2334 validator keys from a seed (EIP-2333 tree). It
// keeps only the node m/12381/3600, so each key costs three child
// derivations. It is safe for concurrent use; Zero wipes the cached node.
//
// The master key is blst's (blst_derive_master_eip2333); each child is
// deriveChild's (lamport.go: the Lamport hashing on two SHA-256 lanes where
// the CPU has the SHA extensions, its secrets in a pooled buffer zeroed after
// use; blst_derive_child_eip2333 elsewhere). Tests check it against the
// EIP-2333 vectors, go-eth2-util's big.Int implementation and blst.
type Deriver struct {
	mu   sync.RWMutex
	base *blst.SecretKey // m/12381/3600; nil once zeroed

	fpMu sync.Mutex
	fp   *[PublicKeySize]byte
}

// NewDeriver derives m/12381/3600 from seed (normally SeedFromMnemonic's
// output) and returns a Deriver for it. The seed is not retained.
func NewDeriver(seed []byte) (*Deriver, error) {
	if len(seed) < MinSeedSize {
		return nil, fmt.Errorf("keys: seed is %d bytes, EIP-2333 requires at least %d", len(seed), MinSeedSize)
	}
	master := blst.DeriveMasterEip2333(seed)
	if master == nil {
		return nil, errors.New("keys: deriving master key failed")
	}
	defer master.Zeroize()
	p := deriveChild(master, purpose)
	defer p.Zeroize()
	base := deriveChild(p, coinType)
	return &Deriver{base: base}, nil
}

// derive walks from m/12381/3600 down the given child indices.
func (d *Deriver) derive(indices ...uint32) (*SecretKey, error) {
	if d == nil {
		return nil, ErrDeriverZeroed
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.base == nil {
		return nil, ErrDeriverZeroed
	}
	if len(indices) == 0 {
		return nil, errors.New("keys: empty derivation path")
	}
	node := d.base
	for _, idx := range indices {
		child := deriveChild(node, idx)
		if node != d.base {
			node.Zeroize()
		}
		node = child
	}
	// EIP-2333's HKDF_mod_r never yields zero, and the result is reduced
	// mod r; check anyway rather than hand out an unusable key.
	if !node.Valid() {
		node.Zeroize()
		return nil, errors.New("keys: derived an invalid key")
	}
	return wrap(node), nil
}

// SigningKey returns the signing key of validator index, at
// m/12381/3600/<index>/0/0.
func (d *Deriver) SigningKey(index uint32) (*SecretKey, error) {
	sk, err := d.derive(index, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("deriving %s: %w", SigningPath(index), err)
	}
	return sk, nil
}

// WithdrawalKey returns the withdrawal key of validator index, at
// m/12381/3600/<index>/0.
func (d *Deriver) WithdrawalKey(index uint32) (*SecretKey, error) {
	sk, err := d.derive(index, 0)
	if err != nil {
		return nil, fmt.Errorf("deriving %s: %w", WithdrawalPath(index), err)
	}
	return sk, nil
}

// ValidatorKeys returns both keys of validator index, deriving their common
// node m/12381/3600/<index>/0 (the withdrawal key) once: three child
// derivations instead of SigningKey's three plus WithdrawalKey's two. The
// caller zeroes both.
func (d *Deriver) ValidatorKeys(index uint32) (signing, withdrawal *SecretKey, err error) {
	withdrawal, err = d.WithdrawalKey(index)
	if err != nil {
		return nil, nil, err
	}
	signing, err = DeriveChildKey(withdrawal, 0)
	if err == nil && !signing.sk.Valid() {
		signing.Zero()
		err = errors.New("keys: derived an invalid key")
	}
	if err != nil {
		withdrawal.Zero()
		return nil, nil, fmt.Errorf("deriving %s: %w", SigningPath(index), err)
	}
	return signing, withdrawal, nil
}

// Fingerprint returns the public key at m/12381/3600/0/0/0. It identifies
// the mnemonic (and passphrase) without revealing it, so a store can refuse
// to be used with another mnemonic. The value is computed once and cached.
func (d *Deriver) Fingerprint() ([PublicKeySize]byte, error) {
	if d == nil {
		return [PublicKeySize]byte{}, ErrDeriverZeroed
	}
	d.fpMu.Lock()
	defer d.fpMu.Unlock()
	if d.fp != nil {
		return *d.fp, nil
	}
	sk, err := d.SigningKey(0)
	if err != nil {
		return [PublicKeySize]byte{}, fmt.Errorf("keys: fingerprint: %w", err)
	}
	defer sk.Zero()
	fp := sk.PublicKey()
	d.fp = &fp
	return fp, nil
}

// Zero wipes the cached m/12381/3600 node. Later derivations fail with
// ErrDeriverZeroed. It waits for derivations in progress.
func (d *Deriver) Zero() {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.base != nil {
		d.base.Zeroize()
		d.base = nil
	}
}

// Format implements fmt.Formatter so that no verb ever prints key material.
func (d *Deriver) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "keys.Deriver{REDACTED}")
}
