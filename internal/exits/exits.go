// Package exits signs voluntary exits as the consensus spec defines them and
// writes them in the signed-exit file format of staking-deposit-cli and
// ethdo.
//
// Since Deneb (EIP-7044) a voluntary exit is signed over
// compute_domain(DOMAIN_VOLUNTARY_EXIT, CAPELLA_FORK_VERSION,
// genesis_validators_root), whatever fork the chain is in, so a signed exit
// stays valid for ever. The message is VoluntaryExit{epoch,
// validator_index}; the exit can be included from that epoch on.
package exits

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/attestantio/go-eth2-client/spec/phase0"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/keys"
)

// DomainVoluntaryExit is the consensus spec's DOMAIN_VOLUNTARY_EXIT.
var DomainVoluntaryExit = phase0.DomainType{0x04, 0x00, 0x00, 0x00}

// Domain returns compute_domain(DOMAIN_VOLUNTARY_EXIT, capella fork
// version, genesis validators root).
func Domain(capella [4]byte, genesisValidatorsRoot [32]byte) (phase0.Domain, error) {
	fd := phase0.ForkData{CurrentVersion: capella, GenesisValidatorsRoot: genesisValidatorsRoot}
	root, err := fd.HashTreeRoot()
	if err != nil {
		return phase0.Domain{}, fmt.Errorf("hash_tree_root(ForkData): %w", err)
	}
	var d phase0.Domain
	copy(d[:4], DomainVoluntaryExit[:])
	copy(d[4:], root[:28])
	return d, nil
}

// SigningRoot returns compute_signing_root(VoluntaryExit{epoch, index},
// Domain(chain)).
func SigningRoot(c beacon.Chain, epoch, index uint64) ([32]byte, error) {
	if c.CapellaForkVersion == ([4]byte{}) {
		return [32]byte{}, errors.New("the beacon node's config has no CAPELLA_FORK_VERSION: voluntary exits are signed with it (EIP-7044)")
	}
	d, err := Domain(c.CapellaForkVersion, c.GenesisValidatorsRoot)
	if err != nil {
		return [32]byte{}, err
	}
	msg := phase0.VoluntaryExit{Epoch: phase0.Epoch(epoch), ValidatorIndex: phase0.ValidatorIndex(index)}
	objectRoot, err := msg.HashTreeRoot()
	if err != nil {
		return [32]byte{}, fmt.Errorf("hash_tree_root(VoluntaryExit): %w", err)
	}
	sd := phase0.SigningData{ObjectRoot: objectRoot, Domain: d}
	return sd.HashTreeRoot()
}

// Sign signs the voluntary exit of validator index at epoch with sk.
func Sign(sk *keys.SecretKey, c beacon.Chain, epoch, index uint64) (*phase0.SignedVoluntaryExit, error) {
	root, err := SigningRoot(c, epoch, index)
	if err != nil {
		return nil, err
	}
	return &phase0.SignedVoluntaryExit{
		Message:   &phase0.VoluntaryExit{Epoch: phase0.Epoch(epoch), ValidatorIndex: phase0.ValidatorIndex(index)},
		Signature: phase0.BLSSignature(sk.Sign(root[:])),
	}, nil
}

// Verify checks e's signature against pubkey.
func Verify(c beacon.Chain, pubkey [48]byte, e *phase0.SignedVoluntaryExit) (bool, error) {
	root, err := SigningRoot(c, uint64(e.Message.Epoch), uint64(e.Message.ValidatorIndex))
	if err != nil {
		return false, err
	}
	return keys.Verify(pubkey, root[:], [96]byte(e.Signature)), nil
}

// File is the signed-exit file of staking-deposit-cli
// (signed_exit_transaction-<index>-<unix time>.json) and of ethdo
// (validator exit --json): the beacon API's SignedVoluntaryExit, numbers as
// strings, the signature 0x-prefixed.
type File struct {
	Message struct {
		Epoch          string `json:"epoch"`
		ValidatorIndex string `json:"validator_index"`
	} `json:"message"`
	Signature string `json:"signature"`
}

// FileOf is e as a File.
func FileOf(e *phase0.SignedVoluntaryExit) File {
	var f File
	f.Message.Epoch = fmt.Sprint(uint64(e.Message.Epoch))
	f.Message.ValidatorIndex = fmt.Sprint(uint64(e.Message.ValidatorIndex))
	f.Signature = fmt.Sprintf("%#x", e.Signature[:])
	return f
}

// FileName is staking-deposit-cli's name of the file of validator index's
// exit written at t.
func FileName(index uint64, t time.Time) string {
	return fmt.Sprintf("signed_exit_transaction-%d-%d.json", index, t.Unix())
}

// WriteFile writes e into dir under FileName, 0600 (whoever has the file
// can exit the validator), atomically, and returns its path. An existing
// file is not replaced.
func WriteFile(dir string, e *phase0.SignedVoluntaryExit, t time.Time) (string, error) {
	b, err := json.Marshal(FileOf(e))
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, FileName(uint64(e.Message.ValidatorIndex), t))
	tmp, err := os.CreateTemp(dir, ".exit-*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}
