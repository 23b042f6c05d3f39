package integration

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
)

// loadWeb3SignerDir loads every key configuration file in dir as Web3Signer
// does with --key-store-path=dir: each non-hidden *.yaml is a signing key
// configuration (here: exactly the file-keystore fields of Web3Signer's
// FileKeyStoreMetadata), relative paths are resolved against dir, and the
// password is the first line of the password file. It returns the public
// keys the keystores decrypt to, sorted, as 0x hex.
func loadWeb3SignerDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pubkeys []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Type                 string `json:"type"`
			KeyType              string `json:"keyType"`
			KeystoreFile         string `json:"keystoreFile"`
			KeystorePasswordFile string `json:"keystorePasswordFile"`
		}
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		if c.Type != "file-keystore" || c.KeyType != "BLS" || filepath.IsAbs(c.KeystoreFile) || filepath.IsAbs(c.KeystorePasswordFile) {
			t.Fatalf("%s: %+v, want type file-keystore, keyType BLS, relative paths", e.Name(), c)
		}
		for _, p := range []string{e.Name(), c.KeystoreFile, c.KeystorePasswordFile} {
			if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v (mode %v), want mode 0600", p, err, fi.Mode())
			}
		}
		data, err := os.ReadFile(filepath.Join(dir, c.KeystoreFile))
		if err != nil {
			t.Fatal(err)
		}
		pw, err := os.ReadFile(filepath.Join(dir, c.KeystorePasswordFile))
		if err != nil {
			t.Fatal(err)
		}
		password, _, _ := strings.Cut(string(pw), "\n")
		ks, err := keystore.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", c.KeystoreFile, err)
		}
		secret, err := ks.Decrypt(password)
		if err != nil {
			t.Fatalf("%s does not open with %s: %v", c.KeystoreFile, c.KeystorePasswordFile, err)
		}
		sk, err := keys.SecretKeyFromBytes(secret)
		if err != nil {
			t.Fatal(err)
		}
		pk := sk.PublicKey()
		sk.Zero()
		name := "0x" + hex.EncodeToString(pk[:])
		if e.Name() != name+".yaml" {
			t.Errorf("%s holds the key %s", e.Name(), name)
		}
		pubkeys = append(pubkeys, name)
	}
	slices.Sort(pubkeys)
	return pubkeys
}

// request --layout web3signer writes Web3Signer key configuration files that
// load the pod's keys, and a request of another pod into the directory
// removes the first pod's configurations with their keystores.
func TestRequestWeb3SignerLayout(t *testing.T) {
	s := startServer(t, t.TempDir())
	out := filepath.Join(t.TempDir(), "keys")
	dir := filepath.Join(out, "web3signer")
	msg := mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "w-0", "--keys", "2", "--insecure-kdf", "--layout", "web3signer", "--out", out)
	if !strings.Contains(msg, "pod w-0 holds 2 keys (recycled 0, minted 2): 2 keystores written, 0 kept, 0 keystores removed") {
		t.Fatalf("first request:\n%s", msg)
	}
	a := s.assignments(t)
	if got := loadWeb3SignerDir(t, dir); !slices.Equal(got, a["w-0"]) || len(got) != 2 {
		t.Fatalf("Web3Signer loads %v, the server assigned w-0 %v", got, a["w-0"])
	}

	// The same request again keeps everything.
	msg = mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "w-0", "--keys", "2", "--insecure-kdf", "--layout", "web3signer", "--out", out)
	if !strings.Contains(msg, "0 keystores written, 2 kept, 0 keystores removed") {
		t.Fatalf("second request:\n%s", msg)
	}

	msg = mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "w-1", "--keys", "1", "--insecure-kdf", "--layout", "web3signer", "--out", out)
	if !strings.Contains(msg, "1 keystore written, 0 kept, 2 keystores, 2 Web3Signer key configurations and 2 password files removed") ||
		strings.Count(msg, "  removed Web3Signer key configuration: ") != 2 || strings.Count(msg, "  removed keystore: ") != 2 {
		t.Fatalf("request of another pod into the directory:\n%s", msg)
	}
	a = s.assignments(t)
	if got := loadWeb3SignerDir(t, dir); !slices.Equal(got, a["w-1"]) || len(got) != 1 {
		t.Fatalf("Web3Signer loads %v, the server assigned w-1 %v", got, a["w-1"])
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("%d files in %s, want a keystore, a password file and a configuration", len(entries), dir)
	}
}
