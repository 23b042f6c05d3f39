package deposit

import (
	"encoding/hex"
	"time"
)

// Genesis is a public network's beacon-chain genesis and clock: what
// slashing-protection interchanges are checked against (the genesis
// validators root names the chain) and release-time watermarks computed
// with (slot = (t - Time) / SecondsPerSlot).
type Genesis struct {
	Time           time.Time
	ValidatorsRoot [32]byte
	SecondsPerSlot time.Duration
	SlotsPerEpoch  uint64
}

// knownGenesis holds the genesis of each network of knownNetworks (every
// one has 12 s slots and 32-slot epochs, the mainnet preset). The genesis
// times and genesis validators roots are taken from:
//   - go-ethereum v1.17.10 beacon/params/networks.go (MainnetLightConfig,
//     SepoliaLightConfig, HoodiLightConfig): mainnet, sepolia, hoodi;
//   - ChainSafe/lodestar packages/config/src/networks.ts (genesisData):
//     mainnet, sepolia, holesky;
//   - eth-clients/hoodi metadata/genesis_validators_root.txt (hoodi's root;
//     its config.yaml has MIN_GENESIS_TIME 1742212800 and GENESIS_DELAY
//     600, which give the genesis time 1742213400).
//
// The sources agree wherever they overlap.
var knownGenesis = map[string]struct {
	time int64
	root string
}{
	"mainnet": {1606824023, "4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"},
	"sepolia": {1655733600, "d8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078"},
	"holesky": {1695902400, "9143aa7c615a7f7115e2b6aac319c03529df8242ae705fba9df39b79c59fa8b1"},
	"hoodi":   {1742213400, "212f13fc4df078b6cb7db228f1c8307566dcecf900867401a92023d7ba99cb5f"},
}

// KnownGenesis returns the genesis of n when n is one of the public
// networks LookupNetwork knows (name and genesis fork version both match);
// a devnet's is not known.
func KnownGenesis(n Network) (Genesis, bool) {
	known, ok := knownByName(n.Name)
	if !ok || known.GenesisForkVersion != n.GenesisForkVersion {
		return Genesis{}, false
	}
	g, ok := knownGenesis[known.Name]
	if !ok {
		return Genesis{}, false
	}
	out := Genesis{Time: time.Unix(g.time, 0).UTC(), SecondsPerSlot: 12 * time.Second, SlotsPerEpoch: 32}
	if _, err := hex.Decode(out.ValidatorsRoot[:], []byte(g.root)); err != nil {
		panic("deposit: bad genesis validators root of " + known.Name)
	}
	return out, true
}
