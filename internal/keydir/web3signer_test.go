package keydir

import (
	"bytes"
	"context"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
)

// web3signerKeyConfig is a Web3Signer signing key configuration file of
// type file-keystore, with the field names of Web3Signer's
// FileKeyStoreMetadata (keystoreFile and keystorePasswordFile are required,
// keyType defaults to BLS).
type web3signerKeyConfig struct {
	Type                 string `json:"type"`
	KeyType              string `json:"keyType"`
	KeystoreFile         string `json:"keystoreFile"`
	KeystorePasswordFile string `json:"keystorePasswordFile"`
}

// checkWeb3SignerConfig loads the key configuration file rel (relative to
// out) as Web3Signer does: YAML with exactly the file-keystore fields,
// relative paths resolved against the configuration directory, the
// password being the file's first line. The keystore must decrypt to a
// secret in secrets whose public key is the keystore's and the one the
// file is named after. It returns that public key.
func checkWeb3SignerConfig(t *testing.T, out, rel string, secrets map[[48]byte][]byte) [48]byte {
	t.Helper()
	dir := filepath.Join(out, filepath.Dir(filepath.FromSlash(rel)))
	b, err := os.ReadFile(filepath.Join(out, rel))
	if err != nil {
		t.Fatal(err)
	}
	var c web3signerKeyConfig
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	if c.Type != "file-keystore" || c.KeyType != "BLS" || c.KeystoreFile == "" || c.KeystorePasswordFile == "" {
		t.Fatalf("%s: %+v, want type file-keystore, keyType BLS and both files", rel, c)
	}
	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			t.Errorf("%s: absolute path %s (the directory could not move)", rel, p)
			return p
		}
		return filepath.Join(dir, p)
	}
	data, err := os.ReadFile(resolve(c.KeystoreFile))
	if err != nil {
		t.Fatalf("%s names a keystore that is not there: %v", rel, err)
	}
	pwData, err := os.ReadFile(resolve(c.KeystorePasswordFile))
	if err != nil {
		t.Fatalf("%s names a password file that is not there: %v", rel, err)
	}
	password, _, _ := strings.Cut(string(pwData), "\n")
	if strings.TrimSpace(password) == "" {
		t.Fatalf("%s: the first line of the password file is blank", rel)
	}
	ks, err := keystore.Parse(data)
	if err != nil {
		t.Fatalf("%s: keystore: %v", rel, err)
	}
	secret, err := ks.Decrypt(password)
	if err != nil {
		t.Fatalf("%s: the keystore does not open with the password file: %v", rel, err)
	}
	sk, err := keys.SecretKeyFromBytes(secret)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	pk := sk.PublicKey()
	sk.Zero()
	if want, ok := ks.Pubkey(); !ok || want != pk {
		t.Errorf("%s: the secret's public key is not the keystore's", rel)
	}
	if base := strings.TrimSuffix(filepath.Base(rel), ".yaml"); base != hex0x(pk) {
		t.Errorf("%s: the key is %s", rel, hex0x(pk))
	}
	if s, ok := secrets[pk]; !ok || !bytes.Equal(s, secret) {
		t.Errorf("%s: not the secret of a key written", rel)
	}
	return pk
}

func TestWeb3SignerLayout(t *testing.T) {
	all := genKeys(t, 4, true)
	secrets := make(map[[48]byte][]byte)
	for _, k := range all {
		secrets[k.Pubkey] = k.Secret
	}
	out := t.TempDir()
	before, after := all[:3], all[1:]

	rep := mustWrite(t, out, before, fast(LayoutWeb3Signer))
	if len(rep.Written) != 3 || len(rep.Configs) != 3 || len(rep.Removed) != 0 {
		t.Fatalf("first run: %+v", rep)
	}
	want := map[string]fs.FileMode{"web3signer": fs.ModeDir | 0o700}
	for _, k := range before {
		for _, ext := range []string{".json", ".password", ".yaml"} {
			want["web3signer/"+pkHex(k)+ext] = 0o600
		}
	}
	if got := tree(t, out); !maps.Equal(got, want) {
		t.Fatalf("tree:\n got %v\nwant %v", got, want)
	}
	var loaded [][48]byte
	for _, k := range before {
		loaded = append(loaded, checkWeb3SignerConfig(t, out, "web3signer/"+pkHex(k)+".yaml", secrets))
	}
	for i, k := range before {
		if loaded[i] != k.Pubkey {
			t.Errorf("config %d loads %s, want %s", i, hex0x(loaded[i]), pkHex(k))
		}
	}

	// The same keys again: nothing to do.
	rep = mustWrite(t, out, before, fast(LayoutWeb3Signer))
	if len(rep.Written) != 0 || len(rep.Kept) != 3 || len(rep.Configs) != 0 || len(rep.Removed) != 0 {
		t.Fatalf("same keys: %+v", rep)
	}

	// all[0] goes, all[3] comes; a configuration of a key never held and
	// without keystore (e.g. left by hand) goes too, and a damaged one is
	// rewritten.
	orphan := genKeys(t, 1, false)[0]
	orphanCfg := filepath.Join(out, "web3signer", pkHex(orphan)+".yaml")
	if err := os.WriteFile(orphanCfg, web3signerConfig(orphan.Pubkey), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(out, "web3signer", pkHex(all[1])+".yaml")
	if err := os.WriteFile(damaged, []byte("type: file-raw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep = mustWrite(t, out, after, fast(LayoutWeb3Signer))
	gone := join(out, "web3signer/"+pkHex(all[0])+".json", "web3signer/"+pkHex(all[0])+".password",
		"web3signer/"+pkHex(all[0])+".yaml", "web3signer/"+pkHex(orphan)+".yaml")
	if !slices.Equal(rep.Removed, gone) {
		t.Errorf("Removed = %v, want %v", rep.Removed, gone)
	}
	if want := join(out, "web3signer/"+pkHex(all[0])+".yaml", "web3signer/"+pkHex(orphan)+".yaml"); !slices.Equal(rep.RemovedConfigs, want) {
		t.Errorf("RemovedConfigs = %v, want %v", rep.RemovedConfigs, want)
	}
	if want := join(out, "web3signer/"+pkHex(all[0])+".json"); !slices.Equal(rep.RemovedKeystores, want) {
		t.Errorf("RemovedKeystores = %v, want %v", rep.RemovedKeystores, want)
	}
	if want := join(out, "web3signer/"+pkHex(all[1])+".yaml", "web3signer/"+pkHex(all[3])+".yaml"); !slices.Equal(rep.Configs, want) {
		t.Errorf("Configs = %v, want %v", rep.Configs, want)
	}
	if len(rep.Written) != 1 || len(rep.Kept) != 2 {
		t.Errorf("second run: %+v", rep)
	}
	want = map[string]fs.FileMode{"web3signer": fs.ModeDir | 0o700}
	for _, k := range after {
		for _, ext := range []string{".json", ".password", ".yaml"} {
			want["web3signer/"+pkHex(k)+ext] = 0o600
		}
	}
	if got := tree(t, out); !maps.Equal(got, want) {
		t.Fatalf("tree after the second run:\n got %v\nwant %v", got, want)
	}
	for _, k := range after {
		if pk := checkWeb3SignerConfig(t, out, "web3signer/"+pkHex(k)+".yaml", secrets); pk != k.Pubkey {
			t.Errorf("config of %s loads %s", pkHex(k), hex0x(pk))
		}
	}
}

// Web3Signer reads the first line of a password file: a password with a
// line break is refused, and a kept password file with one is replaced.
func TestWeb3SignerPasswordLineBreak(t *testing.T) {
	ks := genKeys(t, 1, false)
	out := t.TempDir()
	opts := fast(LayoutWeb3Signer)
	opts.Password = "first\nsecond"
	if _, err := Write(context.Background(), out, ks, opts); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Fatalf("password with a line break: %v", err)
	}
	opts.Password = "first\nsecond"
	opts.Layout = LayoutNimbus
	mustWrite(t, out, ks, opts) // other layouts read the whole file

	out = t.TempDir()
	mustWrite(t, out, ks, fast(LayoutWeb3Signer))
	_, pw := paths(LayoutWeb3Signer, ks[0], t0)
	if err := os.WriteFile(filepath.Join(out, pw), []byte("first\nsecond"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := mustWrite(t, out, ks, fast(LayoutWeb3Signer))
	if len(rep.Written) != 1 {
		t.Fatalf("keystore under a two-line password kept: %+v", rep)
	}
	checkWeb3SignerConfig(t, out, "web3signer/"+pkHex(ks[0])+".yaml", map[[48]byte][]byte{ks[0].Pubkey: ks[0].Secret})
}

// The other layouts see Web3Signer keystores as foreign and leave them.
func TestWeb3SignerForeign(t *testing.T) {
	ks := genKeys(t, 2, true)
	out := t.TempDir()
	mustWrite(t, out, ks, fast(LayoutWeb3Signer))
	if n, err := LayoutKeystores.foreignKeystores(out); err != nil || n != 2 {
		t.Fatalf("foreign keystores seen by keystores: %d, %v", n, err)
	}
	mustWrite(t, out, ks[:1], fast(LayoutKeystores))
	if n, err := LayoutWeb3Signer.foreignKeystores(out); err != nil || n != 1 {
		t.Fatalf("foreign keystores seen by web3signer: %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(out, "web3signer", pkHex(ks[1])+".yaml")); err != nil {
		t.Fatal(err)
	}
}
