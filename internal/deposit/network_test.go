package deposit

import (
	"slices"
	"strings"
	"testing"
)

func TestNetworkTable(t *testing.T) {
	// GENESIS_FORK_VERSION of each network's published config (see
	// knownNetworks).
	want := map[string]string{
		"mainnet": "0x00000000",
		"sepolia": "0x90000069",
		"holesky": "0x01017000",
		"hoodi":   "0x10000910",
	}
	names := NetworkNames()
	if !slices.Equal(names, []string{"mainnet", "sepolia", "holesky", "hoodi"}) {
		t.Errorf("NetworkNames() = %v", names)
	}
	for _, name := range names {
		for _, spelled := range []string{name, strings.ToUpper(name)} {
			n, err := LookupNetwork(spelled)
			if err != nil {
				t.Fatalf("LookupNetwork(%q): %v", spelled, err)
			}
			fork, err := ParseForkVersion(want[name])
			if err != nil {
				t.Fatal(err)
			}
			if n.Name != name || n.GenesisForkVersion != fork {
				t.Errorf("LookupNetwork(%q) = %v, want %s %s", spelled, n, name, want[name])
			}
			if err := n.Validate(); err != nil {
				t.Errorf("%v.Validate(): %v", n, err)
			}
		}
	}
	names[0] = "changed"
	if NetworkNames()[0] != "mainnet" {
		t.Error("NetworkNames returns the package's own slice")
	}
	for _, bad := range []string{"", "goerli", "prater", "mainnet2"} {
		_, err := LookupNetwork(bad)
		if err == nil || !strings.Contains(err.Error(), "mainnet, sepolia, holesky, hoodi") {
			t.Errorf("LookupNetwork(%q): err = %v, want unknown-network error listing the known ones", bad, err)
		}
	}
}

func TestCustomNetwork(t *testing.T) {
	n, err := CustomNetwork("kurtosis-devnet-1", [4]byte{0x10, 0x00, 0x00, 0x38})
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "kurtosis-devnet-1" || n.GenesisForkVersion != [4]byte{0x10, 0x00, 0x00, 0x38} {
		t.Errorf("CustomNetwork = %v", n)
	}
	bad := []struct {
		name string
		fork [4]byte
		want string
	}{
		{"mainnet", [4]byte{0x10, 0x00, 0x00, 0x38}, "public network"},
		{"Hoodi", [4]byte{0x10, 0x00, 0x09, 0x10}, "public network"},
		{"devnet", [4]byte{}, "mainnet"},
		{"devnet", [4]byte{0x90, 0x00, 0x00, 0x69}, "sepolia"},
		{"", [4]byte{0x10, 0x00, 0x00, 0x38}, "empty"},
		{"My Devnet", [4]byte{0x10, 0x00, 0x00, 0x38}, "a-z"},
		{`dev"net`, [4]byte{0x10, 0x00, 0x00, 0x38}, "a-z"},
	}
	for _, c := range bad {
		if _, err := CustomNetwork(c.name, c.fork); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CustomNetwork(%q, %x): err = %v, want one mentioning %q", c.name, c.fork, err, c.want)
		}
	}
}

func TestParseForkVersion(t *testing.T) {
	good := map[string][4]byte{
		"0x10000038": {0x10, 0x00, 0x00, 0x38},
		"10000038":   {0x10, 0x00, 0x00, 0x38},
		"0X90000069": {0x90, 0x00, 0x00, 0x69},
		"0xAbCdEf01": {0xab, 0xcd, 0xef, 0x01},
		"00000000":   {},
	}
	for in, want := range good {
		got, err := ParseForkVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseForkVersion(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0x", "0x1000003", "0x100000380", "0x1000003g", "0x0x10000038", " 10000038"} {
		if _, err := ParseForkVersion(in); err == nil {
			t.Errorf("ParseForkVersion(%q) succeeded", in)
		}
	}
}
