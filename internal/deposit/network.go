package deposit

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Network is a consensus-layer network as deposit data sees it: the name
// written to deposit_data files and the genesis fork version that deposit
// signatures are bound to (compute_domain uses GENESIS_FORK_VERSION for
// deposits on every fork, see the consensus spec's process_deposit).
type Network struct {
	Name               string
	GenesisForkVersion [4]byte
}

// String returns the network as "name (0xforkversion)".
func (n Network) String() string {
	return fmt.Sprintf("%s (0x%x)", n.Name, n.GenesisForkVersion[:])
}

// knownNetworks are the public networks, in the order NetworkNames lists
// them. Each GENESIS_FORK_VERSION is taken from the network's config:
//   - mainnet: ethereum/consensus-specs configs/mainnet.yaml
//   - sepolia: eth-clients/sepolia metadata/config.yaml
//   - holesky: eth-clients/holesky metadata/config.yaml
//   - hoodi:   eth-clients/hoodi metadata/config.yaml
//
// ethstaker-deposit-cli's settings.py carries the same four values.
var knownNetworks = []Network{
	{Name: "mainnet", GenesisForkVersion: [4]byte{0x00, 0x00, 0x00, 0x00}},
	{Name: "sepolia", GenesisForkVersion: [4]byte{0x90, 0x00, 0x00, 0x69}},
	{Name: "holesky", GenesisForkVersion: [4]byte{0x01, 0x01, 0x70, 0x00}},
	{Name: "hoodi", GenesisForkVersion: [4]byte{0x10, 0x00, 0x09, 0x10}},
}

// NetworkNames lists the names LookupNetwork knows, mainnet first.
func NetworkNames() []string {
	names := make([]string, len(knownNetworks))
	for i, n := range knownNetworks {
		names[i] = n.Name
	}
	return names
}

// LookupNetwork returns the public network with the given name (any case).
func LookupNetwork(name string) (Network, error) {
	if n, ok := knownByName(name); ok {
		return n, nil
	}
	return Network{}, fmt.Errorf("unknown network %q (known: %s; for a devnet use CustomNetwork)",
		name, strings.Join(NetworkNames(), ", "))
}

// CustomNetwork describes a network that LookupNetwork does not know, such
// as a devnet, by the name to write into deposit_data files and its genesis
// fork version. The name must be lower-case letters, digits and '-' (the
// consensus spec's CONFIG_NAME rule). It may be neither the name nor the fork
// version of a public network: a deposit signed for a public network's fork
// version is valid on that network, whatever name the file carries.
func CustomNetwork(name string, genesisForkVersion [4]byte) (Network, error) {
	n := Network{Name: name, GenesisForkVersion: genesisForkVersion}
	if _, ok := knownByName(name); ok {
		return Network{}, fmt.Errorf("network name %q belongs to a public network: use LookupNetwork", name)
	}
	if err := n.Validate(); err != nil {
		return Network{}, err
	}
	return n, nil
}

// Validate checks that n is usable for deposits: a valid name, and, where
// either the name or the fork version is a public network's, both match
// that network.
func (n Network) Validate() error {
	if err := validateNetworkName(n.Name); err != nil {
		return err
	}
	if known, ok := knownByName(n.Name); ok {
		if known.GenesisForkVersion != n.GenesisForkVersion {
			return fmt.Errorf("network %s has genesis fork version 0x%x, not 0x%x",
				known.Name, known.GenesisForkVersion[:], n.GenesisForkVersion[:])
		}
		return nil
	}
	if known, ok := knownByForkVersion(n.GenesisForkVersion); ok {
		return fmt.Errorf("genesis fork version 0x%x is %s's: deposits signed with it are valid on %s, so the network cannot be named %q",
			n.GenesisForkVersion[:], known.Name, known.Name, n.Name)
	}
	return nil
}

// validateNetworkName applies the consensus spec's CONFIG_NAME rule
// ([a-z0-9-]), which also keeps the name safe to write into JSON verbatim.
func validateNetworkName(name string) error {
	if name == "" {
		return fmt.Errorf("network name is empty")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("network name %q may contain only a-z, 0-9 and '-'", name)
		}
	}
	return nil
}

func knownByName(name string) (Network, bool) {
	for _, n := range knownNetworks {
		if strings.EqualFold(n.Name, name) {
			return n, true
		}
	}
	return Network{}, false
}

func knownByForkVersion(v [4]byte) (Network, bool) {
	for _, n := range knownNetworks {
		if n.GenesisForkVersion == v {
			return n, true
		}
	}
	return Network{}, false
}

// ParseForkVersion reads a 4-byte fork version written as 8 hex digits, with
// or without a 0x prefix ("0x10000038" or "10000038").
func ParseForkVersion(s string) ([4]byte, error) {
	var v [4]byte
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if len(h) != 2*len(v) {
		return v, fmt.Errorf("fork version %q: want 8 hex digits, got %d", s, len(h))
	}
	if _, err := hex.Decode(v[:], []byte(h)); err != nil {
		return v, fmt.Errorf("fork version %q is not hex: %w", s, err)
	}
	return v, nil
}

// ExecutionChain is the execution layer of a public network: the chain ID
// of its execution nodes and its deposit contract (the networks' published
// configurations, DEPOSIT_CONTRACT_ADDRESS).
type ExecutionChain struct {
	ChainID         uint64
	DepositContract string // 0x-prefixed, checksummed
}

// publicExecutionChains are the execution layers of knownNetworks.
var publicExecutionChains = map[string]ExecutionChain{
	"mainnet": {ChainID: 1, DepositContract: "0x00000000219ab540356cBB839Cbe05303d7705Fa"},
	"sepolia": {ChainID: 11155111, DepositContract: "0x7f02C3E3c98b133055B8B348B2Ac625669Ed295D"},
	"holesky": {ChainID: 17000, DepositContract: "0x4242424242424242424242424242424242424242"},
	"hoodi":   {ChainID: 560048, DepositContract: "0x00000000219ab540356cBB839Cbe05303d7705Fa"},
}

// PublicExecutionChain returns the execution layer of the public network
// with the given name (any case); false for any other network.
func PublicExecutionChain(name string) (ExecutionChain, bool) {
	n, ok := knownByName(name)
	if !ok {
		return ExecutionChain{}, false
	}
	c, ok := publicExecutionChains[n.Name]
	return c, ok
}

// PublicExecutionChains returns the public networks' execution layers by
// network name.
func PublicExecutionChains() map[string]ExecutionChain {
	m := make(map[string]ExecutionChain, len(publicExecutionChains))
	for k, v := range publicExecutionChains {
		m[k] = v
	}
	return m
}
