package keys

import (
	"encoding/binary"
	"sync"

	blst "github.com/supranational/blst/bindings/go"

	"github.com/pkmanager/pkmanager/internal/sha256x2"
)

// deriveChild is EIP-2333's derive_child_SK(parent, index). Where the CPU
// has the SHA extensions it computes the Lamport public key here, with the
// two Lamport keys' hash chains (of IKM and of flip_bits(IKM)) interleaved
// in one core (sha256x2.Sum2), about 2.5 times blst's rate; the final
// HKDF_mod_r is blst's (blst_derive_master_eip2333 is HKDF_mod_r of its
// input, exactly the last step of blst_derive_child_eip2333). Elsewhere it
// is blst's DeriveChildEip2333. Tests hold both to the EIP-2333 vectors and
// to each other.
func deriveChild(parent *blst.SecretKey, index uint32) *blst.SecretKey {
	if !sha256x2.Available() {
		return parent.DeriveChildEip2333(index)
	}
	s := lamportPool.Get().(*lamportScratch)
	defer func() {
		*s = lamportScratch{}
		lamportPool.Put(s)
	}()
	ikm := parent.Serialize() // I2OSP(parent_SK, 32)
	copy(s.ikm[:], ikm)
	clear(ikm)
	s.lamportPK(index)
	return blst.DeriveMasterEip2333(s.pk[:])
}

// lamportScratch holds one derivation's secrets: the parent key, the
// current Lamport chunks, the HMAC states and the blocks they hash. It is
// pooled (17 KiB) and zeroed after each use. Each block keeps its padding;
// only the message bytes change from one step to the next.
type lamportScratch struct {
	ikm, notIKM                [32]byte
	kA, kB                     [64]byte                     // HMAC keys: the salt, then each lane's PRK
	hashes                     [2 * lamportChunks * 32]byte // SHA256 of every chunk of lamport_0, then of lamport_1
	inA, inB                   [64]byte                     // HMAC's inner message: T(i-1) | i, padded
	outA, outB                 [64]byte                     // HMAC's outer message: the inner digest, padded
	chA, chB                   [64]byte                     // the chunk T(i), padded
	ipadA, ipadB, opadA, opadB [8]uint32                    // HMAC states after the key's block
	h                          [8]uint32
	pk                         [32]byte // compressed_lamport_PK
}

// lamportChunks is the number of 32-byte chunks of a Lamport key: HKDF-Expand
// to L = 8160 bytes (EIP-2333 IKM_to_lamport_SK).
const lamportChunks = 255

var lamportPool = sync.Pool{New: func() any { return new(lamportScratch) }}

// SHA-256 padding of the message lengths used below: the last 8 bytes of a
// final block hold the message length in bits, big-endian (FIPS 180-4).
const (
	bitsHMAC32     = (64 + 32) * 8 // key block + a 32-byte message
	bitsHMACFirstT = (64 + 1) * 8  // key block + counter 0x01
	bitsHMACNextT  = (64 + 33) * 8 // key block + T(i-1) + counter
	bitsChunk      = 32 * 8
	bitsLamportPK  = 2 * lamportChunks * 32 * 8
)

// lamportPK sets s.pk to parent_SK_to_lamport_PK(s.ikm, index). Lane A
// computes lamport_0 (from IKM), lane B lamport_1 (from flip_bits(IKM)).
func (s *lamportScratch) lamportPK(index uint32) {
	// HKDF-Extract(salt = I2OSP(index, 4), IKM): HMAC keyed with the salt.
	binary.BigEndian.PutUint32(s.kA[:], index)
	s.kB = s.kA
	s.pads()
	for i, b := range s.ikm {
		s.notIKM[i] = ^b
	}
	s.inA, s.inB = padded(32, bitsHMAC32), padded(32, bitsHMAC32)
	copy(s.inA[:], s.ikm[:])
	copy(s.inB[:], s.notIKM[:])
	s.outA, s.outB = padded(32, bitsHMAC32), padded(32, bitsHMAC32)
	sha256x2.Sum2(&s.ipadA, &s.ipadB, &s.inA, &s.inB, head(&s.outA), head(&s.outB))
	// The PRKs, each the HMAC key of its lane's HKDF-Expand.
	clear(s.kA[:])
	clear(s.kB[:])
	sha256x2.Sum2(&s.opadA, &s.opadB, &s.outA, &s.outB, head(&s.kA), head(&s.kB))
	s.pads()
	s.outA, s.outB = padded(32, bitsHMAC32), padded(32, bitsHMAC32)
	// HKDF-Expand(PRK, "", 8160): T(1) = HMAC(PRK, 0x01), T(i) =
	// HMAC(PRK, T(i-1) | i); each T(i) is a Lamport chunk, hashed at once
	// into its place in lamport_PK.
	s.inA, s.inB = padded(1, bitsHMACFirstT), padded(1, bitsHMACFirstT)
	s.inA[0], s.inB[0] = 1, 1
	s.chA, s.chB = padded(32, bitsChunk), padded(32, bitsChunk)
	for i := 1; i <= lamportChunks; i++ {
		if i == 2 {
			s.inA, s.inB = padded(33, bitsHMACNextT), padded(33, bitsHMACNextT)
		}
		if i >= 2 {
			copy(s.inA[:32], s.chA[:32])
			copy(s.inB[:32], s.chB[:32])
			s.inA[32], s.inB[32] = byte(i), byte(i)
		}
		sha256x2.Sum2(&s.ipadA, &s.ipadB, &s.inA, &s.inB, head(&s.outA), head(&s.outB))
		sha256x2.Sum2(&s.opadA, &s.opadB, &s.outA, &s.outB, head(&s.chA), head(&s.chB))
		sha256x2.Sum2(&sha256x2.IV, &sha256x2.IV, &s.chA, &s.chB,
			(*[32]byte)(s.hashes[32*(i-1):]), (*[32]byte)(s.hashes[32*(lamportChunks+i-1):]))
	}
	// compressed_lamport_PK = SHA256(lamport_PK): 16320 bytes, 255 whole
	// blocks and one of padding.
	s.h = sha256x2.IV
	sha256x2.Blocks(&s.h, s.hashes[:])
	s.chA = padded(0, bitsLamportPK)
	sha256x2.Blocks(&s.h, s.chA[:])
	for i, v := range s.h {
		binary.BigEndian.PutUint32(s.pk[4*i:], v)
	}
}

// pads sets each lane's HMAC states after the key's block (FIPS 198-1,
// the key zero-padded to 64 bytes): ipad for K^0x36.., opad for K^0x5c..,
// with the keys s.kA and s.kB. It uses the message blocks as scratch.
func (s *lamportScratch) pads() {
	for i := range s.kA {
		s.inA[i], s.inB[i] = s.kA[i]^0x36, s.kB[i]^0x36
		s.outA[i], s.outB[i] = s.kA[i]^0x5c, s.kB[i]^0x5c
	}
	s.ipadA, s.ipadB, s.opadA, s.opadB = sha256x2.IV, sha256x2.IV, sha256x2.IV, sha256x2.IV
	sha256x2.Block2(&s.ipadA, &s.ipadB, &s.inA, &s.inB)
	sha256x2.Block2(&s.opadA, &s.opadB, &s.outA, &s.outB)
}

// padded returns a final block with room for n message bytes (left zero
// for the caller): 0x80 after them, and the length of the whole message in
// bits in the last 8 bytes (FIPS 180-4 §5.1.1).
func padded(n int, bits uint64) (blk [64]byte) {
	blk[n] = 0x80
	binary.BigEndian.PutUint64(blk[56:], bits)
	return blk
}

// head is a block's first 32 bytes, where Sum2 writes a digest.
func head(blk *[64]byte) *[32]byte { return (*[32]byte)(blk[:32]) }
