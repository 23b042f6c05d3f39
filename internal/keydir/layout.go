package keydir

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/pkmanager/pkmanager/internal/keystore"
)

// Layout is a directory layout that validator clients import keystores
// from.
type Layout string

// The supported layouts. OUT is the output directory given to Write;
// <pubkey> is the 48-byte public key in lower-case hex.
const (
	// LayoutKeystores is the default: OUT/keystores/<name>.json with its
	// password in OUT/secrets/<name>.txt (the Teku and Lodestar
	// convention). <name> is keystore-m_12381_3600_<i>_0_0-<unix seconds>
	// for a key with a signing path (staking-deposit-cli naming), else
	// keystore-0x<pubkey>.
	LayoutKeystores Layout = "keystores"
	// LayoutLighthouse: OUT/validators/0x<pubkey>/voting-keystore.json,
	// password in OUT/secrets/0x<pubkey>.
	LayoutLighthouse Layout = "lighthouse"
	// LayoutNimbus: OUT/validators/0x<pubkey>/keystore.json, password in
	// OUT/secrets/0x<pubkey>.
	LayoutNimbus Layout = "nimbus"
	// LayoutWeb3Signer: OUT/web3signer/0x<pubkey>.json, password in
	// OUT/web3signer/0x<pubkey>.password, and the Web3Signer key
	// configuration file OUT/web3signer/0x<pubkey>.yaml (type
	// file-keystore) naming both relative to that directory: the names
	// Web3Signer's own key manager API gives the files, for
	// --key-store-path=OUT/web3signer. See web3signer.go.
	LayoutWeb3Signer Layout = "web3signer"
)

// Layouts lists the supported layouts, the default first.
var Layouts = []Layout{LayoutKeystores, LayoutLighthouse, LayoutNimbus, LayoutWeb3Signer}

// ParseLayout parses a layout name, ignoring case and surrounding space.
// The empty string is the default, LayoutKeystores.
func ParseLayout(s string) (Layout, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return LayoutKeystores, nil
	}
	for _, l := range Layouts {
		if strings.EqualFold(s, string(l)) {
			return l, nil
		}
	}
	return "", fmt.Errorf("keydir: unknown layout %q (want %s, %s, %s or %s)", s, LayoutKeystores, LayoutLighthouse, LayoutNimbus, LayoutWeb3Signer)
}

// Directory and file names of the layouts.
const (
	keystoresDir  = "keystores"
	secretsDir    = "secrets"
	validatorsDir = "validators"

	lighthouseKeystore = "voting-keystore.json"
	nimbusKeystore     = "keystore.json"
)

var (
	// pubkeyName is 0x<pubkey>: a validator directory of the Lighthouse
	// and Nimbus layouts, and their password file name.
	pubkeyName = regexp.MustCompile(`^0x[0-9a-f]{96}$`)
	// derivedName and pubkeyKeystoreName are the keystore names of
	// LayoutKeystores, without extension.
	derivedName        = regexp.MustCompile(`^keystore-m_12381_3600_(0|[1-9][0-9]{0,9})_0_0-([0-9]{1,19})$`)
	pubkeyKeystoreName = regexp.MustCompile(`^keystore-(0x[0-9a-f]{96})$`)
)

// hex0x returns 0x<pubkey> in lower-case hex.
func hex0x(pk [48]byte) string { return "0x" + hex.EncodeToString(pk[:]) }

// parse0x is the inverse of hex0x for names already matched by pubkeyName.
func parse0x(s string) (pk [48]byte) {
	_, _ = hex.Decode(pk[:], []byte(s[2:]))
	return pk
}

// keystoreFile returns the keystore file name of the Lighthouse and Nimbus
// layouts.
func (l Layout) keystoreFile() string {
	if l == LayoutLighthouse {
		return lighthouseKeystore
	}
	return nimbusKeystore
}

// baseDirs returns the directories of the layout under out.
func (l Layout) baseDirs(out string) []string {
	switch l {
	case LayoutKeystores:
		return []string{filepath.Join(out, keystoresDir), filepath.Join(out, secretsDir)}
	case LayoutWeb3Signer:
		return []string{filepath.Join(out, web3signerDir)}
	}
	return []string{filepath.Join(out, validatorsDir), filepath.Join(out, secretsDir)}
}

// derivedBase returns keystore-m_12381_3600_<i>_0_0-<ts>.
func derivedBase(index uint32, ts int64) string {
	return "keystore-m_12381_3600_" + strconv.FormatUint(uint64(index), 10) + "_0_0-" + strconv.FormatInt(ts, 10)
}

// pubkeyBase returns keystore-0x<pubkey>.
func pubkeyBase(pk [48]byte) string { return "keystore-" + hex0x(pk) }

// namedPaths returns the keystore and password paths of LayoutKeystores
// for the name base.
func namedPaths(out, base string) (ks, pw string) {
	return filepath.Join(out, keystoresDir, base+".json"), filepath.Join(out, secretsDir, base+".txt")
}

// pubkeyPaths returns the keystore and password paths of the Lighthouse,
// Nimbus and Web3Signer layouts.
func (l Layout) pubkeyPaths(out string, pk [48]byte) (ks, pw string) {
	name := hex0x(pk)
	if l == LayoutWeb3Signer {
		return web3signerPaths(out, pk)
	}
	return filepath.Join(out, validatorsDir, name, l.keystoreFile()), filepath.Join(out, secretsDir, name)
}

// ksFile is a keystore file found in the layout: its name matches the
// layout's pattern.
type ksFile struct {
	path   string // the keystore
	pwPath string // its password file, which may not exist
	// namePK is the public key in the name (Lighthouse, Nimbus,
	// keystore-0x<pubkey>), if any.
	namePK    [48]byte
	hasNamePK bool
	// derived names: keystore-m_12381_3600_<index>_0_0-<ts>.
	derived bool
	index   uint32
	ts      int64
	// data is the content, nil when the file is not a regular file or is
	// larger than keystore.MaxKeystoreSize.
	data []byte
	// contentPK is the JSON's "pubkey", if it has a readable one.
	contentPK    [48]byte
	hasContentPK bool
}

// owner returns the public key whose keystore f is: the key in its name
// if any, else the key in its content. ok is false when it has none, or
// when name and content disagree (then it is nobody's valid keystore).
func (f *ksFile) owner() (pk [48]byte, ok bool) {
	if f.hasNamePK {
		if f.hasContentPK && f.contentPK != f.namePK {
			return pk, false
		}
		return f.namePK, true
	}
	return f.contentPK, f.hasContentPK
}

// pwFile is a password file found in the layout.
type pwFile struct {
	path   string
	ksPath string // the keystore it belongs to, which may not exist
}

// scanResult is what scan finds.
type scanResult struct {
	keystores []*ksFile
	passwords []*pwFile
	temps     []string // leftover temporary files, removed
	// configs are the Web3Signer key configuration files (LayoutWeb3Signer).
	configs []*configFile
}

// scan lists the files of the layout under out, reading every keystore.
// It removes leftover temporary files of earlier atomic writes.
func (l Layout) scan(out string) (*scanResult, error) {
	if l == LayoutWeb3Signer {
		return scanWeb3Signer(out)
	}
	res := new(scanResult)
	secrets := filepath.Join(out, secretsDir)
	entries, err := readDir(secrets)
	if err != nil {
		return nil, err
	}
	if res.temps, err = removeTemps(secrets, entries); err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if l == LayoutKeystores {
			base, ok := strings.CutSuffix(name, ".txt")
			if ok && (derivedName.MatchString(base) || pubkeyKeystoreName.MatchString(base)) {
				ks, pw := namedPaths(out, base)
				res.passwords = append(res.passwords, &pwFile{path: pw, ksPath: ks})
			}
		} else if pubkeyName.MatchString(name) {
			ks, pw := l.pubkeyPaths(out, parse0x(name))
			res.passwords = append(res.passwords, &pwFile{path: pw, ksPath: ks})
		}
	}

	if l == LayoutKeystores {
		dir := filepath.Join(out, keystoresDir)
		entries, err := readDir(dir)
		if err != nil {
			return nil, err
		}
		temps, err := removeTemps(dir, entries)
		res.temps = append(res.temps, temps...)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			base, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok {
				continue
			}
			f := new(ksFile)
			if m := derivedName.FindStringSubmatch(base); m != nil {
				index, err1 := strconv.ParseUint(m[1], 10, 32)
				ts, err2 := strconv.ParseInt(m[2], 10, 64)
				if err1 != nil || err2 != nil {
					continue
				}
				f.derived, f.index, f.ts = true, uint32(index), ts
			} else if m := pubkeyKeystoreName.FindStringSubmatch(base); m != nil {
				f.namePK, f.hasNamePK = parse0x(m[1]), true
			} else {
				continue
			}
			f.path, f.pwPath = namedPaths(out, base)
			if err := f.read(); err != nil {
				return nil, err
			}
			res.keystores = append(res.keystores, f)
		}
		return res, nil
	}

	validators := filepath.Join(out, validatorsDir)
	entries, err = readDir(validators)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || !pubkeyName.MatchString(e.Name()) {
			continue
		}
		vdir := filepath.Join(validators, e.Name())
		sub, err := readDir(vdir)
		if err != nil {
			return nil, err
		}
		temps, err := removeTemps(vdir, sub)
		res.temps = append(res.temps, temps...)
		if err != nil {
			return nil, err
		}
		for _, s := range sub {
			if s.Name() != l.keystoreFile() {
				continue
			}
			pk := parse0x(e.Name())
			f := &ksFile{namePK: pk, hasNamePK: true}
			f.path, f.pwPath = l.pubkeyPaths(out, pk)
			if err := f.read(); err != nil {
				return nil, err
			}
			res.keystores = append(res.keystores, f)
		}
	}
	return res, nil
}

// read loads f.data and f.contentPK. The public key is read leniently
// (any JSON with a 48-byte hex "pubkey", with or without 0x, either case)
// because it decides what is stale; whether the keystore can be kept is
// decided by keystore.Parse.
func (f *ksFile) read() error {
	data, ok, err := readRegular(f.path, keystore.MaxKeystoreSize)
	if err != nil || !ok {
		return err
	}
	f.data = data
	var v struct {
		Pubkey string `json:"pubkey"`
	}
	if json.Unmarshal(data, &v) != nil {
		return nil
	}
	s := strings.TrimPrefix(strings.TrimPrefix(v.Pubkey, "0x"), "0X")
	if b, err := hex.DecodeString(s); err == nil && len(b) == len(f.contentPK) {
		copy(f.contentPK[:], b)
		f.hasContentPK = true
	}
	return nil
}

// foreignKeystores counts keystore files of the other layouts under out,
// by name only. Write leaves them alone and warns about them.
func (l Layout) foreignKeystores(out string) (int, error) {
	n := 0
	if l != LayoutKeystores {
		entries, err := readDir(filepath.Join(out, keystoresDir))
		if err != nil {
			return 0, err
		}
		for _, e := range entries {
			base, ok := strings.CutSuffix(e.Name(), ".json")
			if ok && (derivedName.MatchString(base) || pubkeyKeystoreName.MatchString(base)) {
				n++
			}
		}
	}
	if l != LayoutWeb3Signer {
		m, err := web3signerKeystores(out)
		if err != nil {
			return 0, err
		}
		n += m
	}
	entries, err := readDir(filepath.Join(out, validatorsDir))
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if !e.IsDir() || !pubkeyName.MatchString(e.Name()) {
			continue
		}
		for _, other := range []Layout{LayoutLighthouse, LayoutNimbus} {
			if other == l {
				continue
			}
			ok, err := exists(filepath.Join(out, validatorsDir, e.Name(), other.keystoreFile()))
			if err != nil {
				return 0, err
			}
			if ok {
				n++
			}
		}
	}
	return n, nil
}
