package lodestartest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/big"

	"github.com/pkmanager/pkmanager/internal/keys"
)

// blsOrder is r, the order of the BLS12-381 groups.
var blsOrder, _ = new(big.Int).SetString("52435875175126190479447740508185965837690552500527637822603658699938581184513", 10)

// InteropSecretKey returns the consensus specs' deterministic interop key i
// (the genesis validator i of `lodestar dev`): the little-endian integer
// sha256(i as 32 bytes little-endian) mod r.
func InteropSecretKey(i int) *keys.SecretKey {
	var in [32]byte
	binary.LittleEndian.PutUint64(in[:8], uint64(i))
	h := sha256.Sum256(in[:])
	for a, b := 0, len(h)-1; a < b; a, b = a+1, b-1 {
		h[a], h[b] = h[b], h[a]
	}
	n := new(big.Int).Mod(new(big.Int).SetBytes(h[:]), blsOrder)
	var be [32]byte
	n.FillBytes(be[:])
	sk, err := keys.SecretKeyFromBytes(be[:])
	if err != nil {
		panic(fmt.Sprintf("lodestartest: interop key %d: %v", i, err))
	}
	return sk
}
