package keydir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// LayoutWeb3Signer writes, per key, the three files Web3Signer's key
// manager API writes when it imports a keystore (KeystoreConfigurationFilesCreator
// in Consensys/web3signer): <name>.json, <name>.password and <name>.yaml,
// <name> being the 0x-prefixed lower-case public key. The YAML is a signing
// key configuration file of type file-keystore (Web3Signer's reference,
// "Signing key configuration file parameters"):
//
//	type: "file-keystore"
//	keyType: "BLS"
//	keystoreFile: "0x<pubkey>.json"
//	keystorePasswordFile: "0x<pubkey>.password"
//
// Web3Signer resolves relative paths against the directory it loads the
// configuration files from (--key-store-path), so OUT/web3signer can be
// mounted anywhere. It loads every non-hidden *.yaml there (the temporary
// files of atomic writes are hidden) and reads the first line of the
// password file, so a password must not contain a line break.
//
// Ordering keeps Write's rule that a key is never live in two places and
// that no file names what is not there: a configuration file is written
// after its keystore and password, and removed before them.

const (
	web3signerDir = "web3signer"

	web3signerKeystoreExt = ".json"
	web3signerPasswordExt = ".password"
	web3signerConfigExt   = ".yaml"
)

// web3signerName matches the file names of LayoutWeb3Signer.
var web3signerName = regexp.MustCompile(`^(0x[0-9a-f]{96})(\.json|\.password|\.yaml)$`)

// configFile is a Web3Signer key configuration file found in the layout.
type configFile struct {
	path string
	pk   [48]byte
}

// web3signerPaths returns the keystore and password paths of pk.
func web3signerPaths(out string, pk [48]byte) (ks, pw string) {
	base := filepath.Join(out, web3signerDir, hex0x(pk))
	return base + web3signerKeystoreExt, base + web3signerPasswordExt
}

// web3signerConfigPath returns the path of pk's key configuration file.
func web3signerConfigPath(out string, pk [48]byte) string {
	return filepath.Join(out, web3signerDir, hex0x(pk)+web3signerConfigExt)
}

// web3signerConfig returns the content of pk's key configuration file.
func web3signerConfig(pk [48]byte) []byte {
	name := hex0x(pk)
	return []byte(`type: "file-keystore"
keyType: "BLS"
keystoreFile: "` + name + web3signerKeystoreExt + `"
keystorePasswordFile: "` + name + web3signerPasswordExt + `"
`)
}

// scanWeb3Signer is Layout.scan for LayoutWeb3Signer.
func scanWeb3Signer(out string) (*scanResult, error) {
	res := new(scanResult)
	dir := filepath.Join(out, web3signerDir)
	entries, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	if res.temps, err = removeTemps(dir, entries); err != nil {
		return nil, err
	}
	for _, e := range entries {
		m := web3signerName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pk := parse0x(m[1])
		ks, pw := web3signerPaths(out, pk)
		switch m[2] {
		case web3signerKeystoreExt:
			f := &ksFile{path: ks, pwPath: pw, namePK: pk, hasNamePK: true}
			if err := f.read(); err != nil {
				return nil, err
			}
			res.keystores = append(res.keystores, f)
		case web3signerPasswordExt:
			res.passwords = append(res.passwords, &pwFile{path: pw, ksPath: ks})
		case web3signerConfigExt:
			res.configs = append(res.configs, &configFile{path: filepath.Join(dir, e.Name()), pk: pk})
		}
	}
	return res, nil
}

// web3signerKeystores counts the keystores of LayoutWeb3Signer under out,
// by name only.
func web3signerKeystores(out string) (int, error) {
	entries, err := readDir(filepath.Join(out, web3signerDir))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if m := web3signerName.FindStringSubmatch(e.Name()); m != nil && m[2] == web3signerKeystoreExt {
			n++
		}
	}
	return n, nil
}

// hasLineBreak reports whether a password would be cut by a reader of its
// first line only (Web3Signer).
func hasLineBreak(pw []byte) bool { return bytes.ContainsAny(pw, "\r\n") }

// removeStaleConfigs removes the key configuration files of keys the pod
// does not hold, first of all: Web3Signer would load them as signers.
func (w *writer) removeStaleConfigs(found *scanResult) error {
	for _, c := range found.configs {
		if w.held[c.pk] {
			continue
		}
		w.log.Warn("removing Web3Signer key configuration of a key this pod no longer holds", "path", c.path, "pubkey", hex0x(c.pk))
		if err := w.removeConfig(c.pk); err != nil {
			return err
		}
	}
	return nil
}

// removeConfig removes pk's key configuration file, recording it.
func (w *writer) removeConfig(pk [48]byte) error {
	p := web3signerConfigPath(w.out, pk)
	n := len(w.rep.Removed)
	if err := w.remove(p); err != nil {
		return err
	}
	if len(w.rep.Removed) > n {
		w.rep.RemovedConfigs = append(w.rep.RemovedConfigs, p)
	}
	return nil
}

// ensureConfig writes pk's key configuration file unless it already holds
// exactly what it must, with mode 0600. Its keystore and password file
// must be in place.
func (w *writer) ensureConfig(pk [48]byte) error {
	p := web3signerConfigPath(w.out, pk)
	want := web3signerConfig(pk)
	got, ok, err := readRegular(p, int64(len(want)))
	if err != nil {
		return err
	}
	if ok && bytes.Equal(got, want) {
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("keydir: %w", err)
		}
		if fi.Mode().Perm() == fileMode {
			return nil
		}
	}
	if err := writeFileAtomic(p, want); err != nil {
		return err
	}
	w.rep.Configs = append(w.rep.Configs, p)
	return nil
}

// verifyConfigs checks that every held key has its key configuration file,
// exact and mode 0600, and that no other configuration file is left.
func (w *writer) verifyConfigs(found *scanResult) error {
	seen := make(map[[48]byte]bool, len(found.configs))
	for _, c := range found.configs {
		if !w.held[c.pk] {
			return fmt.Errorf("keydir: verify: %s is the Web3Signer key configuration of a key not held", c.path)
		}
		seen[c.pk] = true
	}
	for i := range w.keys {
		pk := w.keys[i].Pubkey
		p := web3signerConfigPath(w.out, pk)
		if !seen[pk] {
			return fmt.Errorf("keydir: verify: %s is missing", p)
		}
		want := web3signerConfig(pk)
		got, ok, err := readRegular(p, int64(len(want)))
		if err != nil {
			return err
		}
		if !ok || !bytes.Equal(got, want) {
			return fmt.Errorf("keydir: verify: %s is not the key configuration of %s", p, hex0x(pk))
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("keydir: verify: %w", err)
		}
		if fi.Mode().Perm() != fileMode {
			return fmt.Errorf("keydir: verify: %s has mode %v, want %v", p, fi.Mode().Perm(), fileMode)
		}
	}
	return nil
}

// web3signerPasswordOK reports whether a password given in Options can be
// used in layout l.
func web3signerPasswordOK(l Layout, password string) bool {
	return l != LayoutWeb3Signer || !strings.ContainsAny(password, "\r\n")
}
