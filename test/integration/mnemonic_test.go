package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/keys"
)

// Published BIP-39 test mnemonics (Trezor vectors); never for real funds.
const (
	mnemonicA = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
	mnemonicB = "legal winner thank year wave sausage worth useful legal winner thank yellow"
)

// With --mnemonic-file, new keys are m/12381/3600/i/0/0 with consecutive,
// never reused indices (also across restarts), BLS withdrawal credentials of
// m/12381/3600/i/0, staking-deposit-cli keystore names, and the store refuses
// another mnemonic.
func TestMnemonicDerivation(t *testing.T) {
	data, work := t.TempDir(), t.TempDir()
	mfile := filepath.Join(work, "mnemonic.txt")
	if err := os.WriteFile(mfile, []byte(mnemonicA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seed, err := keys.SeedFromMnemonic(mnemonicA, "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	want := func(i uint32) string {
		sk, err := d.SigningKey(i)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%#x", sk.PublicKey())
	}

	s := startServer(t, data, "--mnemonic-file", mfile)
	out := filepath.Join(work, "a")
	_, got := request(t, s, "validator-a", 3, out)
	names, err := filepath.Glob(filepath.Join(out, "keystores", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	nameRE := regexp.MustCompile(`^keystore-m_12381_3600_([0-9]+)_0_0-[0-9]+\.json$`)
	indices := map[string]bool{}
	for _, n := range names {
		m := nameRE.FindStringSubmatch(filepath.Base(n))
		if m == nil {
			t.Fatalf("keystore name %s does not follow staking-deposit-cli naming", filepath.Base(n))
		}
		indices[m[1]] = true
	}
	for i := range uint32(3) {
		if _, ok := got[want(i)]; !ok || !indices[fmt.Sprint(i)] {
			t.Fatalf("key m/12381/3600/%d/0/0 missing (got %v, indices %v)", i, sortedKeys(got), indices)
		}
	}

	// Restart: the next pod continues at index 3.
	s.stop()
	s = startServer(t, data, "--mnemonic-file", mfile)
	_, got = request(t, s, "validator-b", 2, filepath.Join(work, "b"))
	for _, i := range []uint32{3, 4} {
		if _, ok := got[want(i)]; !ok {
			t.Fatalf("after restart expected index %d", i)
		}
	}

	// Deposit data: BLS withdrawal credentials of m/12381/3600/i/0.
	ddFile := filepath.Join(work, "dd.json")
	mustRun(t, "deposit-data", "--all", "--server", s.grpcAddr, "--out", ddFile)
	raw, err := os.ReadFile(ddFile)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := deposit.ParseCLI(raw)
	if err != nil || len(entries) != 5 {
		t.Fatalf("%d entries: %v", len(entries), err)
	}
	for i := range uint32(5) {
		wk, err := d.WithdrawalKey(i)
		if err != nil {
			t.Fatal(err)
		}
		wc := deposit.BLSCredentials(wk.PublicKey())
		found := false
		for _, e := range entries {
			if "0x"+e.Pubkey == want(i) {
				found = true
				if e.WithdrawalCredentials != fmt.Sprintf("%x", wc) {
					t.Fatalf("index %d: withdrawal credentials %s, want %x", i, e.WithdrawalCredentials, wc)
				}
			}
		}
		if !found {
			t.Fatalf("no deposit data for index %d", i)
		}
	}

	// Another mnemonic on the same store is refused.
	s.stop()
	other := filepath.Join(work, "other.txt")
	if err := os.WriteFile(other, []byte(mnemonicB), 0o600); err != nil {
		t.Fatal(err)
	}
	msg, err := run(t, "serve", "--dev", "--data-dir", data, "--mnemonic-file", other, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(msg, "another mnemonic") {
		t.Fatalf("server accepted another mnemonic: %v %s", err, msg)
	}
	if strings.Contains(msg, "legal") || strings.Contains(msg, "abandon") {
		t.Fatal("an error message repeats mnemonic words")
	}

	// Without --mnemonic-file the store's keys would be random, and could
	// not be rebuilt from the mnemonic: refused unless --random-keys says
	// so (08c6756 started with random keys).
	msg, err = run(t, "serve", "--dev", "--data-dir", data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(msg, "--mnemonic-file") || !strings.Contains(msg, "--random-keys") {
		t.Fatalf("server on a mnemonic store without --mnemonic-file: %v %s; want a refusal naming --mnemonic-file and --random-keys", err, msg)
	}
	if msg, err := run(t, "serve", "--dev", "--data-dir", data, "--mnemonic-file", mfile, "--random-keys"); err == nil || !strings.Contains(msg, "--random-keys") {
		t.Fatalf("--random-keys with --mnemonic-file: %v %s", err, msg)
	}
	s = startServer(t, data, "--random-keys")
	if _, got := request(t, s, "validator-r", 1, filepath.Join(work, "r")); len(got) != 1 {
		t.Fatalf("--random-keys: got %d keys", len(got))
	}
	s.stop()
}
