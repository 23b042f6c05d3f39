package keys

import (
	"math/rand/v2"
	"testing"

	blst "github.com/supranational/blst/bindings/go"

	"github.com/pkmanager/pkmanager/internal/sha256x2"
)

// deriveChild (the Lamport hashing here, on two lanes) gives blst's
// blst_derive_child_eip2333 for random parents and indices, small and large.
func TestDeriveChildMatchesBlst(t *testing.T) {
	if !sha256x2.Available() {
		t.Skip("no SHA extensions: deriveChild is blst's own")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for n := range 200 {
		var ikm [32]byte
		for i := range ikm {
			ikm[i] = byte(rng.Uint32())
		}
		parent := blst.DeriveMasterEip2333(ikm[:])
		index := rng.Uint32()
		switch n % 4 {
		case 0:
			index = uint32(n)
		case 1:
			index = 0xffffffff - uint32(n)
		}
		got, want := deriveChild(parent, index), parent.DeriveChildEip2333(index)
		if !got.Equals(want) {
			t.Fatalf("case %d, index %d: child differs from blst's", n, index)
		}
	}
}

// BenchmarkDeriveChild is one EIP-2333 child derivation: "lanes" is
// deriveChild, "blst" blst_derive_child_eip2333.
func BenchmarkDeriveChild(b *testing.B) {
	parent := blst.DeriveMasterEip2333(make([]byte, 32))
	b.Run("lanes", func(b *testing.B) {
		var i uint32
		for b.Loop() {
			deriveChild(parent, i).Zeroize()
			i++
		}
	})
	b.Run("blst", func(b *testing.B) {
		var i uint32
		for b.Loop() {
			parent.DeriveChildEip2333(i).Zeroize()
			i++
		}
	})
}
