package exits

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attestantio/go-eth2-client/spec/phase0"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/keys"
)

// mainnet is the mainnet chain's genesis validators root and Capella fork
// version (consensus-specs configs/mainnet.yaml; the root of the genesis
// state).
var mainnet = beacon.Chain{
	GenesisValidatorsRoot: [32]byte{0x4b, 0x36, 0x3d, 0xb9, 0x4e, 0x28, 0x61, 0x20, 0xd7, 0x6e, 0xb9, 0x05, 0x34, 0x0f, 0xdd, 0x4e,
		0x54, 0xbf, 0xe9, 0xf0, 0x6b, 0xf3, 0x3f, 0xf6, 0xcf, 0x5a, 0xd2, 0x7f, 0x51, 0x1b, 0xfe, 0x95},
	CapellaForkVersion: [4]byte{0x03, 0x00, 0x00, 0x00},
}

// TestSigningRootMatchesSpec compares the signing root built with
// go-eth2-client's SSZ against one hashed by hand from the consensus
// spec's definitions (beacontest.SigningRootOfExit).
func TestSigningRootMatchesSpec(t *testing.T) {
	for _, c := range []beacon.Chain{mainnet, {GenesisValidatorsRoot: [32]byte{1, 2, 3}, CapellaForkVersion: [4]byte{0x40, 0, 0, 0x38}}} {
		for _, m := range [][2]uint64{{0, 0}, {194048, 123456}, {^uint64(0), 1}} {
			got, err := SigningRoot(c, m[0], m[1])
			if err != nil {
				t.Fatal(err)
			}
			if want := beacontest.SigningRootOfExit(c, m[0], m[1]); got != want {
				t.Errorf("SigningRoot(%x, %v) = %x, want %x", c.CapellaForkVersion, m, got, want)
			}
		}
	}
	d, err := Domain(mainnet.CapellaForkVersion, mainnet.GenesisValidatorsRoot)
	if err != nil {
		t.Fatal(err)
	}
	if d[0] != 0x04 || d[1] != 0 || d[2] != 0 || d[3] != 0 {
		t.Errorf("domain %x does not start with DOMAIN_VOLUNTARY_EXIT", d)
	}
	if _, err := SigningRoot(beacon.Chain{}, 1, 1); err == nil {
		t.Error("a chain without a Capella fork version signed")
	}
}

func TestSignVerifyFile(t *testing.T) {
	sk, err := keys.GenerateRandom()
	if err != nil {
		t.Fatal(err)
	}
	pk := sk.PublicKey()
	e, err := Sign(sk, mainnet, 300000, 42)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := Verify(mainnet, pk, e); err != nil || !ok {
		t.Fatalf("Verify = %t, %v", ok, err)
	}
	if !beacontest.VerifyExit(mainnet, pk, 300000, 42, [96]byte(e.Signature)) {
		t.Error("the spec-shaped check refuses the signature")
	}
	// Signed with the genesis fork version (the pre-EIP-7044 rule on a
	// chain still in phase 0) it is another signature.
	other := mainnet
	other.CapellaForkVersion = [4]byte{}
	other.CapellaForkVersion[0] = 0x04
	if ok, _ := Verify(other, pk, e); ok {
		t.Error("the signature verifies under another fork version")
	}

	// The file is the beacon API's SignedVoluntaryExit (go-eth2-client's
	// encoding), numbers as strings, as staking-deposit-cli writes it.
	dir := t.TempDir()
	at := time.Unix(1_700_000_000, 0)
	path, err := WriteFile(dir, e, at)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "signed_exit_transaction-42-1700000000.json" {
		t.Errorf("file name %s", filepath.Base(path))
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", st.Mode(), err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	msg, _ := generic["message"].(map[string]any)
	if msg["epoch"] != "300000" || msg["validator_index"] != "42" || len(generic["signature"].(string)) != 2+192 {
		t.Errorf("file %s", raw)
	}
	var back phase0.SignedVoluntaryExit
	if err := json.Unmarshal(raw, &back); err != nil || back.Message.ValidatorIndex != 42 || back.Signature != e.Signature {
		t.Errorf("go-eth2-client reads the file as %+v, %v", back, err)
	}
	lib, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var libGeneric map[string]any
	_ = json.Unmarshal(lib, &libGeneric)
	if libGeneric["signature"] != generic["signature"] || libGeneric["message"].(map[string]any)["epoch"] != "300000" {
		t.Errorf("go-eth2-client writes %s, the file has %s", lib, raw)
	}
	if _, err := WriteFile(dir, e, at); err == nil {
		t.Error("WriteFile replaced an existing file")
	}
}
