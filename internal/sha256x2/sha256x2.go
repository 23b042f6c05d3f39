// Package sha256x2 provides the SHA-256 compression function for callers
// that hash many short messages themselves (EIP-2333's Lamport keys): one
// digest over whole 64-byte blocks, and two independent digests of one
// block each at once. Two lanes interleaved run at 1.6 to 1.8 times the rate
// of one, because SHA-256's rounds are a chain whose latency, not the
// core's throughput, bounds a single digest.
//
// Only amd64 with the SHA extensions has an implementation; callers check
// Available and otherwise hash another way. The caller pads its messages
// (FIPS 180-4 §5.1.1); this package only compresses.
package sha256x2

// IV is SHA-256's initial hash value (FIPS 180-4 §5.3.3).
var IV = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// Available reports whether Blocks and Block2 can be used on this machine.
func Available() bool { return available }

// Blocks compresses the whole 64-byte blocks of p into h. It panics if p is
// not a multiple of 64 bytes or the package is not Available.
func Blocks(h *[8]uint32, p []byte) {
	if len(p)%64 != 0 {
		panic("sha256x2: Blocks of a partial block")
	}
	if !available {
		panic("sha256x2: not available on this machine")
	}
	if len(p) > 0 {
		blocks(h, &p[0], len(p)/64)
	}
}

// Block2 compresses block a into ha and block b into hb, interleaved. It
// panics if the package is not Available.
func Block2(ha, hb *[8]uint32, a, b *[64]byte) {
	if !available {
		panic("sha256x2: not available on this machine")
	}
	block2(ha, hb, &a[0], &b[0])
}

// Sum2 is Block2 with the results written to sa and sb as bytes (each word
// big-endian, the digest's bytes when a and b are final blocks); ha and hb
// are not changed, so a fixed starting state (an HMAC pad's) serves many
// calls. sa and sb may lie in a or b (the blocks are read before the
// results are written), not in ha or hb. It panics if the package is not
// Available.
func Sum2(ha, hb *[8]uint32, a, b *[64]byte, sa, sb *[32]byte) {
	if !available {
		panic("sha256x2: not available on this machine")
	}
	sum2(ha, hb, &a[0], &b[0], &sa[0], &sb[0])
}
