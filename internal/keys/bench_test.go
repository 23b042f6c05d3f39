package keys

import (
	"bytes"
	"sync/atomic"
	"testing"
)

// BenchmarkSign measures blst signing (hash-to-G2, scalar multiplication,
// compression) of a 32-byte message: the reference rate for the other
// benchmarks of the service.
func BenchmarkSign(b *testing.B) {
	sk, err := GenerateRandom()
	if err != nil {
		b.Fatal(err)
	}
	msg := bytes.Repeat([]byte{0x5a}, 32)
	var sink byte
	for b.Loop() {
		sig := sk.Sign(msg)
		sink ^= sig[0]
	}
	_ = sink
}

// BenchmarkSignParallel is BenchmarkSign on all GOMAXPROCS cores, one key
// shared by all goroutines.
func BenchmarkSignParallel(b *testing.B) {
	sk, err := GenerateRandom()
	if err != nil {
		b.Fatal(err)
	}
	msg := bytes.Repeat([]byte{0x5a}, 32)
	b.RunParallel(func(pb *testing.PB) {
		var sink byte
		for pb.Next() {
			sig := sk.Sign(msg)
			sink ^= sig[0]
		}
		_ = sink
	})
}

// BenchmarkVerify measures full verification (subgroup checks + pairing).
func BenchmarkVerify(b *testing.B) {
	sk, err := GenerateRandom()
	if err != nil {
		b.Fatal(err)
	}
	msg := bytes.Repeat([]byte{0x5a}, 32)
	pk, sig := sk.PublicKey(), sk.Sign(msg)
	for b.Loop() {
		if !Verify(pk, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkGenerateRandom measures a fresh random key including its public
// key.
func BenchmarkGenerateRandom(b *testing.B) {
	var sink byte
	for b.Loop() {
		sk, err := GenerateRandom()
		if err != nil {
			b.Fatal(err)
		}
		pk := sk.PublicKey()
		sink ^= pk[0]
		sk.Zero()
	}
	_ = sink
}

// BenchmarkDeriveSigningKey measures one EIP-2334 signing key (three
// EIP-2333 child derivations from the cached m/12381/3600 node), without its
// public key.
func BenchmarkDeriveSigningKey(b *testing.B) {
	d, err := NewDeriver(bytes.Repeat([]byte{3}, 64))
	if err != nil {
		b.Fatal(err)
	}
	var i uint32
	for b.Loop() {
		sk, err := d.SigningKey(i)
		if err != nil {
			b.Fatal(err)
		}
		sk.Zero()
		i++
	}
}

// BenchmarkDeriveSigningKeyParallel is BenchmarkDeriveSigningKey on all
// GOMAXPROCS cores sharing one Deriver, as minting does.
func BenchmarkDeriveSigningKeyParallel(b *testing.B) {
	d, err := NewDeriver(bytes.Repeat([]byte{3}, 64))
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sk, err := d.SigningKey(next.Add(1))
			if err != nil {
				b.Error(err)
				return
			}
			sk.Zero()
		}
	})
}
