package deposit

import (
	"testing"
	"time"
)

// Every public network has a genesis; devnets and a public name with
// another fork version have none.
func TestKnownGenesis(t *testing.T) {
	want := map[string]int64{"mainnet": 1606824023, "sepolia": 1655733600, "holesky": 1695902400, "hoodi": 1742213400}
	roots := map[[32]byte]string{}
	for _, name := range NetworkNames() {
		n, err := LookupNetwork(name)
		if err != nil {
			t.Fatal(err)
		}
		g, ok := KnownGenesis(n)
		if !ok {
			t.Fatalf("%s: no genesis", name)
		}
		if g.SecondsPerSlot != 12*time.Second || g.SlotsPerEpoch != 32 || g.Time.Unix() != want[name] || g.ValidatorsRoot == [32]byte{} {
			t.Fatalf("%s: %+v", name, g)
		}
		if other, dup := roots[g.ValidatorsRoot]; dup {
			t.Fatalf("%s and %s have the same genesis validators root", name, other)
		}
		roots[g.ValidatorsRoot] = name
	}
	if g, ok := KnownGenesis(Network{Name: "hoodi", GenesisForkVersion: [4]byte{1, 2, 3, 4}}); ok {
		t.Fatalf("a hoodi name with another fork version has hoodi's genesis: %+v", g)
	}
	if _, ok := KnownGenesis(Network{Name: "devnet", GenesisForkVersion: [4]byte{0x10, 0, 0, 0x38}}); ok {
		t.Fatal("a devnet has a known genesis")
	}
}
