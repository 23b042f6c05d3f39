// Package keystore reads and writes EIP-2335 (BLS12-381 keystore, version
// 4) files.
//
// Encryption is implemented here from the EIP's definition so that the KDF
// cost can be chosen; decryption goes through wealdtech's keystorev4, which
// also understands its older password normalization. Parse bounds the KDF
// parameters it accepts, so a hostile file cannot make Decrypt exhaust
// memory or CPU.
//
// Errors never contain passwords or secrets.
package keystore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	keystorev4 "github.com/wealdtech/go-eth2-wallet-encryptor-keystorev4"
	"golang.org/x/crypto/scrypt"
	"golang.org/x/text/unicode/norm"
)

// KDF names a key derivation function of EIP-2335.
type KDF string

// The KDFs of EIP-2335.
const (
	Scrypt KDF = "scrypt"
	PBKDF2 KDF = "pbkdf2"
)

// Cost parameters. The standard cost is what staking-deposit-cli and the
// EIP's test vectors use.
//
// The insecure cost exists ONLY for devnets and tests: a keystore written
// with it can be brute-forced about 256 times faster than a standard one.
// Never use it for keys that protect real funds.
const (
	StandardScryptN = 1 << 18 // 262144
	InsecureScryptN = 1 << 10 // 1024
	ScryptR         = 8
	ScryptP         = 1
	StandardPBKDF2C = 1 << 18 // 262144
	InsecurePBKDF2C = 1 << 10 // 1024
	// DKLen is the length of the derived decryption key: 16 bytes of AES-128
	// key and 16 bytes of checksum key.
	DKLen = 32
)

// Limits enforced on parsed keystores.
const (
	// MaxScryptN is the largest scrypt n accepted (4 times the standard n).
	MaxScryptN = 1 << 20
	// MaxScryptR and MaxScryptP bound scrypt r and p.
	MaxScryptR = 32
	MaxScryptP = 16
	// MaxScryptWork bounds n*r*p. Memory is 128*n*r bytes, so this also
	// caps memory at 512 MiB; CPU is at most twice the standard cost.
	MaxScryptWork = 1 << 22
	// MaxPBKDF2C is the largest PBKDF2 iteration count accepted (16 times
	// the standard).
	MaxPBKDF2C = 1 << 22
	// MaxSaltSize and MaxSecretSize bound the salt and the ciphertext.
	MaxSaltSize   = 1024
	MaxSecretSize = 1024
	// MaxKeystoreSize bounds the JSON that Parse accepts.
	MaxKeystoreSize = 64 << 10
)

const (
	version      = 4
	prfSHA256    = "hmac-sha256"
	checksumFunc = "sha256"
	cipherFunc   = "aes-128-ctr"
	saltSize     = 32
	ivSize       = aes.BlockSize
	checksumSize = sha256.Size
)

var (
	// ErrWrongPassword is returned by Decrypt when the checksum does not
	// match: the password is wrong, or the ciphertext or checksum has been
	// altered (the two cannot be told apart).
	ErrWrongPassword = errors.New("keystore: wrong password or corrupted keystore")
	// ErrInvalidKeystore is wrapped by errors about malformed or
	// unsupported keystores.
	ErrInvalidKeystore = errors.New("keystore: invalid keystore")
)

// Options chooses how Encrypt protects the secret. The zero value means
// scrypt at the standard cost.
type Options struct {
	// KDF is Scrypt (the default when empty) or PBKDF2.
	KDF KDF
	// Insecure selects a cost 256 times lower than the standard (scrypt
	// n=1024, PBKDF2 c=1024). FOR DEVNETS AND TESTS ONLY: such a keystore
	// offers little protection against password guessing.
	Insecure bool
}

// Keystore is a parsed or freshly encrypted EIP-2335 keystore. It holds only
// ciphertext; the zero value is not a valid keystore.
type Keystore struct {
	kdf   KDF
	dkLen int
	n     int // scrypt
	r     int // scrypt
	p     int // scrypt
	c     int // pbkdf2
	salt  []byte

	checksum   []byte
	iv         []byte
	ciphertext []byte

	description string
	pubkey      string // lower-case hex without 0x, or ""
	path        string
	uuid        string
}

// JSON layout, field order as in the EIP.
type (
	jsonKeystore struct {
		Crypto      *jsonCrypto `json:"crypto"`
		Description string      `json:"description"`
		Pubkey      string      `json:"pubkey"`
		Path        *string     `json:"path"`
		UUID        *string     `json:"uuid"`
		Version     int         `json:"version"`
	}
	jsonCrypto struct {
		KDF      *jsonKDF      `json:"kdf"`
		Checksum *jsonChecksum `json:"checksum"`
		Cipher   *jsonCipher   `json:"cipher"`
	}
	jsonKDF struct {
		Function string         `json:"function"`
		Params   *jsonKDFParams `json:"params"`
		Message  string         `json:"message"`
	}
	jsonKDFParams struct {
		DKLen int    `json:"dklen"`
		C     int    `json:"c,omitempty"`
		PRF   string `json:"prf,omitempty"`
		N     int    `json:"n,omitempty"`
		R     int    `json:"r,omitempty"`
		P     int    `json:"p,omitempty"`
		Salt  string `json:"salt"`
	}
	jsonChecksum struct {
		Function string    `json:"function"`
		Params   *struct{} `json:"params"`
		Message  string    `json:"message"`
	}
	jsonCipher struct {
		Function string            `json:"function"`
		Params   *jsonCipherParams `json:"params"`
		Message  string            `json:"message"`
	}
	jsonCipherParams struct {
		IV string `json:"iv"`
	}
)

// NormalizePassword applies EIP-2335's password rules: NFKD, then removal of
// the C0 (U+0000-U+001F), Delete (U+007F) and C1 (U+0080-U+009F) control
// characters. Bytes that are not valid UTF-8 are kept as they are.
func NormalizePassword(p string) string {
	s := norm.NFKD.String(p)
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !(r <= 0x1f || (r >= 0x7f && r <= 0x9f)) || (r == utf8.RuneError && size == 1) {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// RandomPassword returns 32 random bytes, hex-encoded: 64 ASCII characters
// that every client accepts and that normalization leaves unchanged.
func RandomPassword() (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return "", fmt.Errorf("keystore: reading randomness: %w", err)
	}
	defer clear(b[:])
	return hex.EncodeToString(b[:]), nil
}

// bigScrypt is the size of scrypt's buffer (128 x r x n bytes) from which
// deriveKey collects it at once.
const bigScrypt = 64 << 20

// deriveKey runs the keystore's KDF over the normalized password.
func (ks *Keystore) deriveKey(password []byte) ([]byte, error) {
	switch ks.kdf {
	case Scrypt:
		dk, err := scrypt.Key(password, ks.salt, ks.n, ks.r, ks.p, ks.dkLen)
		if 128*ks.r*ks.n >= bigScrypt {
			// scrypt's buffer (256 MiB at the standard cost) is garbage
			// now: collect it before the next derivation allocates
			// another, so that concurrent derivations need one buffer each
			// and not the two each that the collector's pacing (GOGC)
			// would let accumulate. A cycle costs little next to the
			// derivation: the buffers hold no pointers.
			runtime.GC()
		}
		if err != nil {
			return nil, fmt.Errorf("keystore: scrypt: %w", err)
		}
		return dk, nil
	case PBKDF2:
		dk, err := pbkdf2.Key(sha256.New, string(password), ks.salt, ks.c, ks.dkLen)
		if err != nil {
			return nil, fmt.Errorf("keystore: pbkdf2: %w", err)
		}
		return dk, nil
	default:
		return nil, fmt.Errorf("%w: unsupported kdf %q", ErrInvalidKeystore, ks.kdf)
	}
}

// Encrypt encrypts secret under password and returns the keystore, with
// pubkey and path recorded in its clear fields. The password is normalized
// with NormalizePassword and must not be empty afterwards. Salt (32 bytes),
// IV (16 bytes) and UUID (v4) are random.
func Encrypt(secret []byte, password string, pubkey [48]byte, path string, opts Options) (*Keystore, error) {
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return nil, fmt.Errorf("keystore: secret must be 1 to %d bytes, got %d", MaxSecretSize, len(secret))
	}
	if pubkey == ([48]byte{}) {
		return nil, errors.New("keystore: pubkey is required")
	}
	pw := []byte(NormalizePassword(password))
	defer clear(pw)
	if len(pw) == 0 {
		return nil, errors.New("keystore: password is empty after normalization")
	}

	ks := &Keystore{
		dkLen:  DKLen,
		pubkey: hex.EncodeToString(pubkey[:]),
		path:   path,
	}
	switch opts.KDF {
	case Scrypt, "":
		ks.kdf, ks.n, ks.r, ks.p = Scrypt, StandardScryptN, ScryptR, ScryptP
		if opts.Insecure {
			ks.n = InsecureScryptN
		}
	case PBKDF2:
		ks.kdf, ks.c = PBKDF2, StandardPBKDF2C
		if opts.Insecure {
			ks.c = InsecurePBKDF2C
		}
	default:
		return nil, fmt.Errorf("keystore: unsupported kdf %q", opts.KDF)
	}

	id, err := uuid.NewRandom()
	if err != nil {
		return nil, fmt.Errorf("keystore: generating uuid: %w", err)
	}
	ks.uuid = id.String()
	ks.salt = make([]byte, saltSize)
	ks.iv = make([]byte, ivSize)
	if _, err := io.ReadFull(rand.Reader, ks.salt); err != nil {
		return nil, fmt.Errorf("keystore: reading randomness: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, ks.iv); err != nil {
		return nil, fmt.Errorf("keystore: reading randomness: %w", err)
	}

	dk, err := ks.deriveKey(pw)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	block, err := aes.NewCipher(dk[:16])
	if err != nil {
		return nil, fmt.Errorf("keystore: aes: %w", err)
	}
	ks.ciphertext = make([]byte, len(secret))
	cipher.NewCTR(block, ks.iv).XORKeyStream(ks.ciphertext, secret)
	h := sha256.New()
	h.Write(dk[16:32])
	h.Write(ks.ciphertext)
	ks.checksum = h.Sum(nil)
	return ks, nil
}

// Decrypt returns the secret. A wrong password (or altered ciphertext or
// checksum) gives ErrWrongPassword. The password is normalized per EIP-2335;
// keystores written by wealdtech tools with their older normalization are
// also accepted.
//
// EIP-2335's checksum covers neither the IV nor the clear fields (pubkey,
// path): a tampered IV decrypts to a wrong secret without error. Callers
// must check the secret against the expected public key.
func (ks *Keystore) Decrypt(password string) ([]byte, error) {
	if err := ks.validate(); err != nil {
		return nil, err
	}
	normalized := NormalizePassword(password)
	secret, err := ks.decryptV4(normalized)
	if errors.Is(err, ErrWrongPassword) && containsC1(password) {
		// keystorev4 (and tools built on it) strip C0 and Delete but not
		// the C1 controls; let it normalize the raw password itself.
		secret, err = ks.decryptV4(password)
	}
	if err != nil {
		return nil, err
	}
	return secret, nil
}

func containsC1(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 && r <= 0x9f })
}

// decryptV4 decrypts through keystorev4, which normalizes password again
// (a no-op for an already normalized password) and, failing that, tries its
// legacy normalization.
func (ks *Keystore) decryptV4(password string) ([]byte, error) {
	params := map[string]any{
		"dklen": ks.dkLen,
		"salt":  hex.EncodeToString(ks.salt),
	}
	switch ks.kdf {
	case Scrypt:
		params["n"], params["r"], params["p"] = ks.n, ks.r, ks.p
	case PBKDF2:
		params["c"], params["prf"] = ks.c, prfSHA256
	}
	module := map[string]any{
		"kdf": map[string]any{
			"function": string(ks.kdf),
			"params":   params,
			"message":  "",
		},
		"checksum": map[string]any{
			"function": checksumFunc,
			"params":   map[string]any{},
			"message":  hex.EncodeToString(ks.checksum),
		},
		"cipher": map[string]any{
			"function": cipherFunc,
			"params":   map[string]any{"iv": hex.EncodeToString(ks.iv)},
			"message":  hex.EncodeToString(ks.ciphertext),
		},
	}
	secret, err := keystorev4.New().Decrypt(module, password)
	if err != nil {
		// Parameters were validated, so the remaining failure is the
		// checksum. keystorev4's errors carry no secret material.
		if strings.Contains(err.Error(), "checksum") {
			return nil, ErrWrongPassword
		}
		return nil, fmt.Errorf("keystore: decrypt: %w", err)
	}
	return secret, nil
}

// Marshal returns the keystore as indented JSON laid out exactly as in
// EIP-2335: lower-case hex without 0x, "params": {} for the checksum.
func (ks *Keystore) Marshal() ([]byte, error) {
	if err := ks.validate(); err != nil {
		return nil, err
	}
	params := &jsonKDFParams{DKLen: ks.dkLen, Salt: hex.EncodeToString(ks.salt)}
	switch ks.kdf {
	case Scrypt:
		params.N, params.R, params.P = ks.n, ks.r, ks.p
	case PBKDF2:
		params.C, params.PRF = ks.c, prfSHA256
	}
	path, id := ks.path, ks.uuid
	v := jsonKeystore{
		Crypto: &jsonCrypto{
			KDF: &jsonKDF{Function: string(ks.kdf), Params: params, Message: ""},
			Checksum: &jsonChecksum{
				Function: checksumFunc,
				Params:   &struct{}{},
				Message:  hex.EncodeToString(ks.checksum),
			},
			Cipher: &jsonCipher{
				Function: cipherFunc,
				Params:   &jsonCipherParams{IV: hex.EncodeToString(ks.iv)},
				Message:  hex.EncodeToString(ks.ciphertext),
			},
		},
		Description: ks.description,
		Pubkey:      ks.pubkey,
		Path:        &path,
		UUID:        &id,
		Version:     version,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("keystore: marshal: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Parse reads an EIP-2335 keystore. It requires version 4, the modules
// scrypt or pbkdf2 (hmac-sha256), sha256 and aes-128-ctr, well-formed hex,
// and KDF parameters within the Max* limits. Unknown fields are ignored.
func Parse(data []byte) (*Keystore, error) {
	if len(data) > MaxKeystoreSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidKeystore, MaxKeystoreSize)
	}
	var v jsonKeystore
	if err := json.Unmarshal(data, &v); err != nil {
		// json errors quote at most a type or field name, never values.
		return nil, fmt.Errorf("%w: %w", ErrInvalidKeystore, err)
	}
	if v.Version != version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrInvalidKeystore, v.Version, version)
	}
	c := v.Crypto
	switch {
	case c == nil:
		return nil, fmt.Errorf("%w: missing crypto", ErrInvalidKeystore)
	case c.KDF == nil || c.KDF.Params == nil:
		return nil, fmt.Errorf("%w: missing crypto.kdf or its params", ErrInvalidKeystore)
	case c.Checksum == nil:
		return nil, fmt.Errorf("%w: missing crypto.checksum", ErrInvalidKeystore)
	case c.Cipher == nil || c.Cipher.Params == nil:
		return nil, fmt.Errorf("%w: missing crypto.cipher or its params", ErrInvalidKeystore)
	case v.Path == nil:
		return nil, fmt.Errorf("%w: missing path", ErrInvalidKeystore)
	case v.UUID == nil || *v.UUID == "":
		return nil, fmt.Errorf("%w: missing uuid", ErrInvalidKeystore)
	}
	if c.Checksum.Function != checksumFunc {
		return nil, fmt.Errorf("%w: unsupported checksum function %q", ErrInvalidKeystore, c.Checksum.Function)
	}
	if c.Cipher.Function != cipherFunc {
		return nil, fmt.Errorf("%w: unsupported cipher function %q", ErrInvalidKeystore, c.Cipher.Function)
	}

	p := c.KDF.Params
	ks := &Keystore{
		kdf:         KDF(c.KDF.Function),
		dkLen:       p.DKLen,
		description: v.Description,
		path:        *v.Path,
		uuid:        *v.UUID,
	}
	switch ks.kdf {
	case Scrypt:
		ks.n, ks.r, ks.p = p.N, p.R, p.P
	case PBKDF2:
		if p.PRF != prfSHA256 {
			return nil, fmt.Errorf("%w: unsupported pbkdf2 prf %q", ErrInvalidKeystore, p.PRF)
		}
		ks.c = p.C
	default:
		return nil, fmt.Errorf("%w: unsupported kdf function %q", ErrInvalidKeystore, c.KDF.Function)
	}
	var err error
	if ks.salt, err = decodeHex("kdf salt", p.Salt); err != nil {
		return nil, err
	}
	if ks.checksum, err = decodeHex("checksum message", c.Checksum.Message); err != nil {
		return nil, err
	}
	if ks.iv, err = decodeHex("cipher iv", c.Cipher.Params.IV); err != nil {
		return nil, err
	}
	if ks.ciphertext, err = decodeHex("cipher message", c.Cipher.Message); err != nil {
		return nil, err
	}
	if v.Pubkey != "" {
		pk, err := decodeHex("pubkey", v.Pubkey)
		if err != nil {
			return nil, err
		}
		if len(pk) != 48 {
			return nil, fmt.Errorf("%w: pubkey is %d bytes, want 48", ErrInvalidKeystore, len(pk))
		}
		ks.pubkey = hex.EncodeToString(pk)
	}
	if err := ks.validate(); err != nil {
		return nil, err
	}
	return ks, nil
}

// decodeHex decodes hex (either case, no 0x prefix) without quoting the
// input in errors.
func decodeHex(field, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not valid hex", ErrInvalidKeystore, field)
	}
	return b, nil
}

// validate checks the invariants that make Decrypt safe: known functions,
// bounded KDF cost, and sizes that cannot make keystorev4 fail or panic.
func (ks *Keystore) validate() error {
	if ks == nil {
		return fmt.Errorf("%w: nil keystore", ErrInvalidKeystore)
	}
	if ks.dkLen != DKLen {
		return fmt.Errorf("%w: kdf dklen %d, want %d", ErrInvalidKeystore, ks.dkLen, DKLen)
	}
	switch ks.kdf {
	case Scrypt:
		n, r, p := ks.n, ks.r, ks.p
		switch {
		case n < 2 || n > MaxScryptN || n&(n-1) != 0:
			return fmt.Errorf("%w: scrypt n %d must be a power of two between 2 and %d", ErrInvalidKeystore, n, MaxScryptN)
		case r < 1 || r > MaxScryptR:
			return fmt.Errorf("%w: scrypt r %d must be between 1 and %d", ErrInvalidKeystore, r, MaxScryptR)
		case p < 1 || p > MaxScryptP:
			return fmt.Errorf("%w: scrypt p %d must be between 1 and %d", ErrInvalidKeystore, p, MaxScryptP)
		case n*r*p > MaxScryptWork:
			return fmt.Errorf("%w: scrypt n*r*p = %d exceeds %d", ErrInvalidKeystore, n*r*p, MaxScryptWork)
		}
	case PBKDF2:
		if ks.c < 1 || ks.c > MaxPBKDF2C {
			return fmt.Errorf("%w: pbkdf2 c %d must be between 1 and %d", ErrInvalidKeystore, ks.c, MaxPBKDF2C)
		}
	default:
		return fmt.Errorf("%w: unsupported kdf %q", ErrInvalidKeystore, ks.kdf)
	}
	switch {
	case len(ks.salt) > MaxSaltSize:
		return fmt.Errorf("%w: kdf salt is %d bytes, max %d", ErrInvalidKeystore, len(ks.salt), MaxSaltSize)
	case len(ks.checksum) != checksumSize:
		return fmt.Errorf("%w: checksum is %d bytes, want %d", ErrInvalidKeystore, len(ks.checksum), checksumSize)
	case len(ks.iv) != ivSize:
		return fmt.Errorf("%w: cipher iv is %d bytes, want %d", ErrInvalidKeystore, len(ks.iv), ivSize)
	case len(ks.ciphertext) == 0 || len(ks.ciphertext) > MaxSecretSize:
		return fmt.Errorf("%w: cipher message is %d bytes, want 1 to %d", ErrInvalidKeystore, len(ks.ciphertext), MaxSecretSize)
	}
	return nil
}

// Pubkey returns the public key recorded in the keystore; ok is false when
// the keystore has none. It is not authenticated: check it against the
// decrypted secret before trusting it.
func (ks *Keystore) Pubkey() ([48]byte, bool) {
	var pk [48]byte
	if ks == nil || ks.pubkey == "" {
		return pk, false
	}
	b, err := hex.DecodeString(ks.pubkey)
	if err != nil || len(b) != len(pk) {
		return pk, false
	}
	copy(pk[:], b)
	return pk, true
}

// Path returns the EIP-2334 path recorded in the keystore ("" if unknown).
func (ks *Keystore) Path() string {
	if ks == nil {
		return ""
	}
	return ks.path
}

// UUID returns the keystore's UUID.
func (ks *Keystore) UUID() string {
	if ks == nil {
		return ""
	}
	return ks.uuid
}

// Description returns the keystore's free-form description.
func (ks *Keystore) Description() string {
	if ks == nil {
		return ""
	}
	return ks.description
}

// KDF returns the keystore's key derivation function.
func (ks *Keystore) KDF() KDF {
	if ks == nil {
		return ""
	}
	return ks.kdf
}

// Insecure reports whether the KDF cost is below the standard: scrypt with
// n*r below 262144*8 (less memory-hard than the standard), or PBKDF2 with
// fewer than 262144 iterations.
func (ks *Keystore) Insecure() bool {
	if ks == nil {
		return true
	}
	switch ks.kdf {
	case Scrypt:
		return ks.n*ks.r < StandardScryptN*ScryptR
	case PBKDF2:
		return ks.c < StandardPBKDF2C
	default:
		return true
	}
}
