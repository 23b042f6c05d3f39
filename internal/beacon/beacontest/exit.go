package beacontest

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/store"
)

// VerifyExit checks a voluntary exit's BLS signature the way the consensus
// spec's process_voluntary_exit does after EIP-7044: the signing root of
// VoluntaryExit{epoch, validator_index} under compute_domain(
// DOMAIN_VOLUNTARY_EXIT, CAPELLA_FORK_VERSION, genesis_validators_root).
// It hashes the SSZ containers by hand, from the spec's definitions, so
// that it checks code that uses a library's SSZ independently.
func VerifyExit(c beacon.Chain, pk store.Pubkey, epoch, index uint64, sig [96]byte) bool {
	root := SigningRootOfExit(c, epoch, index)
	return keys.Verify(pk, root[:], sig)
}

// SigningRootOfExit is compute_signing_root(VoluntaryExit{epoch, index},
// domain) for c (see VerifyExit).
func SigningRootOfExit(c beacon.Chain, epoch, index uint64) [32]byte {
	// hash_tree_root of a container of two uint64: the root of its two
	// 32-byte chunks, each a little-endian uint64 padded with zeros.
	var chunks [64]byte
	binary.LittleEndian.PutUint64(chunks[0:], epoch)
	binary.LittleEndian.PutUint64(chunks[32:], index)
	objectRoot := sha256.Sum256(chunks[:])
	// ForkData{current_version: Bytes4, genesis_validators_root: Bytes32}.
	var fd [64]byte
	copy(fd[:4], c.CapellaForkVersion[:])
	copy(fd[32:], c.GenesisValidatorsRoot[:])
	forkDataRoot := sha256.Sum256(fd[:])
	// Domain: DOMAIN_VOLUNTARY_EXIT (0x04000000) + fork_data_root[:28].
	var domain [32]byte
	copy(domain[:4], []byte{0x04, 0x00, 0x00, 0x00})
	copy(domain[4:], forkDataRoot[:28])
	// SigningData{object_root, domain}.
	var sd [64]byte
	copy(sd[:32], objectRoot[:])
	copy(sd[32:], domain[:])
	return sha256.Sum256(sd[:])
}
