package deposit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The known-answer vectors in testdata/lighthouse are deposit_data files
// written by staking-deposit-cli (deposit_cli_version 2.3.0) and
// ethstaker-deposit-cli (1.2.2, 1.3.0) for the mnemonic
// "test test test test test test test test test test test waste"; see
// testdata/README.md.
const vectorMnemonic = "test test test test test test test test test test test waste"

// vectorAddress is the withdrawal address of the 0x01 and 0x02 vectors.
const vectorAddress = "0x0f51bb10119727a7e5ea3538074fb341f56b09ad"

var vectorFiles = []struct {
	file       string
	firstIndex uint32 // EIP-2334 account index of the file's first entry
	network    string
	prefix     byte
}{
	{"mainnet_first_0_count_1_eth1_false.deposit_data-1660803666.json", 0, "mainnet", BLSWithdrawalPrefix},
	{"mainnet_first_0_count_2_prefix_0x01_eth1_true.deposit_data-1785211389.json", 0, "mainnet", ExecutionWithdrawalPrefix},
	{"hoodi_first_0_count_1_prefix_0x00_eth1_false.deposit_data-1785211404.json", 0, "hoodi", BLSWithdrawalPrefix},
	{"hoodi_first_0_count_2_prefix_0x02_eth1_true.deposit_data-1785211449.json", 0, "hoodi", CompoundingWithdrawalPrefix},
	{"holesky_first_1024_count_3_eth1_false.deposit_data-1748939241.json", 1024, "holesky", BLSWithdrawalPrefix},
}

func readVector(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "lighthouse", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestVectorsVerify checks each published entry without its secret key: our
// roots equal the file's byte for byte, and the file's signature verifies
// (blst, POP DST) over our signing root, and over no other network's.
func TestVectorsVerify(t *testing.T) {
	total := 0
	for _, vf := range vectorFiles {
		t.Run(vf.file, func(t *testing.T) {
			entries, err := ParseCLI(readVector(t, vf.file))
			if err != nil {
				t.Fatalf("ParseCLI: %v", err)
			}
			for i, e := range entries {
				total++
				pubkey, d, err := e.Deposit()
				if err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				if d.NetworkName != vf.network || d.WithdrawalCredentials[0] != vf.prefix {
					t.Fatalf("entry %d: network %q prefix %#x, fixture table says %q %#x", i, d.NetworkName, d.WithdrawalCredentials[0], vf.network, vf.prefix)
				}
				msgRoot, err := MessageRoot(pubkey, d.WithdrawalCredentials, d.AmountGwei)
				if err != nil {
					t.Fatal(err)
				}
				if msgRoot != d.DepositMessageRoot {
					t.Errorf("entry %d: deposit_message_root %x, file has %x", i, msgRoot, d.DepositMessageRoot)
				}
				dataRoot, err := DataRoot(pubkey, d.WithdrawalCredentials, d.AmountGwei, d.Signature)
				if err != nil {
					t.Fatal(err)
				}
				if dataRoot != d.DepositDataRoot {
					t.Errorf("entry %d: deposit_data_root %x, file has %x", i, dataRoot, d.DepositDataRoot)
				}
				net, err := LookupNetwork(d.NetworkName)
				if err != nil {
					t.Fatal(err)
				}
				signingRoot, err := SigningRoot(msgRoot, net.GenesisForkVersion)
				if err != nil {
					t.Fatal(err)
				}
				if !blstVerify(pubkey, signingRoot[:], d.Signature) {
					t.Errorf("entry %d: file's signature does not verify over our signing root", i)
				}
				if err := Verify(pubkey, d, blstVerify); err != nil {
					t.Errorf("entry %d: Verify: %v", i, err)
				}
				if err := e.Verify(blstVerify); err != nil {
					t.Errorf("entry %d: CLIEntry.Verify: %v", i, err)
				}
				for _, other := range NetworkNames() {
					if other == d.NetworkName {
						continue
					}
					o, _ := LookupNetwork(other)
					root, err := SigningRoot(msgRoot, o.GenesisForkVersion)
					if err != nil {
						t.Fatal(err)
					}
					if blstVerify(pubkey, root[:], d.Signature) {
						t.Errorf("entry %d: signature for %s also verifies on %s", i, d.NetworkName, other)
					}
				}
			}
		})
	}
	if total != 9 {
		t.Errorf("checked %d vector entries, want 9", total)
	}
}

// TestVectorsReproduce derives each vector's keys from the published
// mnemonic (BIP-39, EIP-2333, EIP-2334 m/12381/3600/i/0/0; withdrawal key
// m/12381/3600/i/0), runs Make, and requires the whole file back byte for
// byte: pubkey, credentials, both roots and the (deterministic) signature.
func TestVectorsReproduce(t *testing.T) {
	seed := bip39Seed(t, vectorMnemonic, "")
	addr, err := ParseExecutionAddress(vectorAddress)
	if err != nil {
		t.Fatal(err)
	}
	for _, vf := range vectorFiles {
		t.Run(vf.file, func(t *testing.T) {
			data := readVector(t, vf.file)
			want, err := ParseCLI(data)
			if err != nil {
				t.Fatal(err)
			}
			net, err := LookupNetwork(vf.network)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]CLIEntry, len(want))
			for i := range want {
				index := vf.firstIndex + uint32(i)
				signer := signerFromBig(t, derivePath(t, seed, 12381, 3600, index, 0, 0))
				var wc [32]byte
				switch vf.prefix {
				case BLSWithdrawalPrefix:
					withdrawal := signerFromBig(t, derivePath(t, seed, 12381, 3600, index, 0))
					wc = BLSCredentials(withdrawal.PublicKey())
				case ExecutionWithdrawalPrefix:
					wc = ExecutionCredentials(addr)
				case CompoundingWithdrawalPrefix:
					wc = CompoundingCredentials(addr)
				}
				d, err := Make(signer, Params{Network: net, WithdrawalCredentials: wc, AmountGwei: DefaultAmountGwei})
				if err != nil {
					t.Fatalf("entry %d: Make: %v", i, err)
				}
				got[i] = ToCLIEntry(signer.PublicKey(), d)
				if got[i].DepositCLIVersion != CLIVersion {
					t.Errorf("entry %d: deposit_cli_version %q, want %q", i, got[i].DepositCLIVersion, CLIVersion)
				}
				// The only field that names the writing tool.
				got[i].DepositCLIVersion = want[i].DepositCLIVersion
				if got[i] != want[i] {
					t.Errorf("entry %d (index %d):\n got %+v\nwant %+v", i, index, got[i], want[i])
				}
			}
			out, err := MarshalCLI(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, data) {
				t.Errorf("MarshalCLI differs from the tool's file:\n got %s\nwant %s", out, data)
			}
		})
	}
}

// TestVectorsTampered: one hex digit changed anywhere in a vector entry
// makes ParseCLI or Verify fail.
func TestVectorsTampered(t *testing.T) {
	entries, err := ParseCLI(readVector(t, vectorFiles[3].file))
	if err != nil {
		t.Fatal(err)
	}
	orig := entries[0]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == '0' {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
		return string(b)
	}
	mutations := []struct {
		field  string
		mutate func(*CLIEntry)
		want   error
	}{
		{"pubkey", func(e *CLIEntry) { e.Pubkey = flip(e.Pubkey, 95) }, ErrMessageRoot},
		{"withdrawal_credentials", func(e *CLIEntry) { e.WithdrawalCredentials = flip(e.WithdrawalCredentials, 63) }, ErrMessageRoot},
		{"amount", func(e *CLIEntry) { e.Amount-- }, ErrMessageRoot},
		{"signature", func(e *CLIEntry) { e.Signature = flip(e.Signature, 191) }, ErrDataRoot},
		{"deposit_message_root", func(e *CLIEntry) { e.DepositMessageRoot = flip(e.DepositMessageRoot, 0) }, ErrMessageRoot},
		{"deposit_data_root", func(e *CLIEntry) { e.DepositDataRoot = flip(e.DepositDataRoot, 0) }, ErrDataRoot},
		{"fork_version", func(e *CLIEntry) { e.ForkVersion = flip(e.ForkVersion, 7) }, ErrNetwork},
		{"network_name", func(e *CLIEntry) { e.NetworkName = "mainnet" }, ErrNetwork},
	}
	for _, m := range mutations {
		e := orig
		m.mutate(&e)
		// CLIEntry.Verify reads the entry with Deposit first, so the
		// signature change is caught by deposit_data_root before BLS.
		if err := e.Verify(blstVerify); !errors.Is(err, m.want) {
			t.Errorf("%s changed: Verify err = %v, want %v", m.field, err, m.want)
		}
		if _, err := MarshalCLI([]CLIEntry{e}); !errors.Is(err, m.want) {
			t.Errorf("%s changed: MarshalCLI err = %v, want %v", m.field, err, m.want)
		}
	}
	// A signature that still matches deposit_data_root (a consistent
	// forgery) is caught by the signature check itself.
	e := orig
	e.Signature = entries[1].Signature
	pubkey, d, err := e.Deposit()
	if err == nil {
		t.Fatal("swapped signature: Deposit passed with the old deposit_data_root")
	}
	d.DepositDataRoot, err = DataRoot(pubkey, d.WithdrawalCredentials, d.AmountGwei, d.Signature)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(pubkey, d, blstVerify); !errors.Is(err, ErrSignature) {
		t.Errorf("swapped signature with matching data root: err = %v, want ErrSignature", err)
	}
}
