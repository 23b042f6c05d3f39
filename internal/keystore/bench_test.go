package keystore

import (
	"testing"
)

func benchmarkEncrypt(b *testing.B, opts Options) {
	secret := make([]byte, 32)
	secret[31] = 1
	pk := [48]byte{0x80}
	for b.Loop() {
		if _, err := Encrypt(secret, "benchmark password", pk, "m/12381/3600/0/0/0", opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptScryptStandard: scrypt n=262144 r=8 p=1 (256 MiB).
func BenchmarkEncryptScryptStandard(b *testing.B) {
	benchmarkEncrypt(b, Options{KDF: Scrypt})
}

// BenchmarkEncryptPBKDF2Standard: PBKDF2-HMAC-SHA256, c=262144.
func BenchmarkEncryptPBKDF2Standard(b *testing.B) {
	benchmarkEncrypt(b, Options{KDF: PBKDF2})
}

// BenchmarkEncryptInsecure: the devnet/test cost (n=1024 / c=1024).
func BenchmarkEncryptInsecure(b *testing.B) {
	b.Run("scrypt", func(b *testing.B) { benchmarkEncrypt(b, Options{KDF: Scrypt, Insecure: true}) })
	b.Run("pbkdf2", func(b *testing.B) { benchmarkEncrypt(b, Options{KDF: PBKDF2, Insecure: true}) })
}

// BenchmarkDecryptInsecure measures Parse-free decryption through
// keystorev4 at the insecure cost.
func BenchmarkDecryptInsecure(b *testing.B) {
	pk := [48]byte{0x80}
	ks, err := Encrypt(make([]byte, 32), "benchmark password", pk, "", Options{Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ks.Decrypt("benchmark password"); err != nil {
			b.Fatal(err)
		}
	}
}
