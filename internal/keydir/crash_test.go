package keydir

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/keystore"
)

// recordOps records the changes Write makes, in order.
func recordOps(t *testing.T) *[]string {
	t.Helper()
	var ops []string
	testFault = func(op, path string) error {
		ops = append(ops, op+" "+path)
		return nil
	}
	t.Cleanup(func() { testFault = nil })
	return &ops
}

func indexOf(t *testing.T, ops []string, op string) int {
	t.Helper()
	i := slices.Index(ops, op)
	if i < 0 {
		t.Fatalf("%q not done; ops:\n%s", op, strings.Join(ops, "\n"))
	}
	return i
}

// TestWriteOrder pins the order of changes: stale keystores go first, each
// before its password; a password file is written before its keystore; a
// replaced keystore goes only after its replacement is in place.
func TestWriteOrder(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 3, true)
	mustWrite(t, out, ks, fast(""))
	kStale, pStale := paths(LayoutKeystores, ks[2], t0)
	kOld, pOld := paths(LayoutKeystores, ks[0], t0)

	ops := recordOps(t)
	opts := fast("")
	opts.Keystore.KDF = keystore.PBKDF2 // forces a rewrite, under a new name
	opts.Now = at(t1)
	mustWrite(t, out, ks[:2], opts)
	kNew, pNew := paths(LayoutKeystores, ks[0], t1)
	o := *ops
	f := func(op, rel string) int { return indexOf(t, o, op+" "+filepath.Join(out, rel)) }

	if f("remove", kStale) != 0 || f("remove", pStale) != 1 {
		t.Errorf("stale keystore not removed first, before its password:\n%s", strings.Join(o, "\n"))
	}
	if !(f("rename", pNew) < f("rename", kNew) && f("rename", kNew) < f("remove", kOld) && f("remove", kOld) < f("remove", pOld)) {
		t.Errorf("replacement out of order:\n%s", strings.Join(o, "\n"))
	}
}

var errInjected = errors.New("injected fault")

// checkConsistent checks that every keystore of the layout under out opens
// with its password file and holds the secret of the key it names, and
// that no temporary file is left.
func checkConsistent(t *testing.T, out string, l Layout, all []Key) {
	t.Helper()
	secrets := make(map[[48]byte][]byte)
	for _, k := range all {
		secrets[k.Pubkey] = k.Secret
	}
	for rel := range tree(t, out) {
		if strings.Contains(rel, tempPrefix) {
			t.Errorf("temporary file %s left", rel)
		}
		var pw string
		switch {
		case l == LayoutWeb3Signer && strings.HasSuffix(rel, ".yaml"):
			// A configuration names a keystore that opens with the password
			// file it names.
			checkWeb3SignerConfig(t, out, rel, secrets)
			continue
		case l == LayoutWeb3Signer && strings.HasSuffix(rel, ".json"):
			pw = strings.TrimSuffix(rel, ".json") + ".password"
		case l == LayoutWeb3Signer:
			continue
		case l == LayoutKeystores && strings.HasPrefix(rel, "keystores/"):
			pw = "secrets/" + strings.TrimSuffix(strings.TrimPrefix(rel, "keystores/"), ".json") + ".txt"
		case l != LayoutKeystores && strings.HasSuffix(rel, "/"+l.keystoreFile()):
			pw = "secrets/" + filepath.Base(filepath.Dir(rel))
		default:
			continue
		}
		data, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil {
			t.Fatal(err)
		}
		password, err := os.ReadFile(filepath.Join(out, pw))
		if err != nil {
			t.Errorf("keystore %s without password file: %v", rel, err)
			continue
		}
		parsed, err := keystore.Parse(data)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		secret, err := parsed.Decrypt(string(password))
		pk, _ := parsed.Pubkey()
		if err != nil || !bytes.Equal(secret, secrets[pk]) {
			t.Errorf("%s does not open with %s: %v", rel, pw, err)
		}
	}
}

// TestWriteInterruptedAnywhere fails each change Write makes in turn and
// checks that the output is consistent after the failure (every keystore
// opens with its password file) and that a new Write completes the work.
func TestWriteInterruptedAnywhere(t *testing.T) {
	type scenario struct {
		layout      Layout
		first, then Options
	}
	pbkdf2 := func(o Options) Options { o.Keystore.KDF = keystore.PBKDF2; return o }
	later := func(o Options) Options { o.Now = at(t1); return o }
	password := func(o Options, p string) Options { o.Password = p; return o }
	scenarios := map[string]scenario{
		"keystores new kdf":           {LayoutKeystores, fast(""), later(pbkdf2(fast("")))},
		"keystores same second":       {LayoutKeystores, password(fast(""), "a"), password(fast(""), "b")},
		"lighthouse new kdf":          {LayoutLighthouse, fast(LayoutLighthouse), pbkdf2(fast(LayoutLighthouse))},
		"nimbus password changes":     {LayoutNimbus, password(fast(LayoutNimbus), "a"), password(fast(LayoutNimbus), "b")},
		"web3signer password changes": {LayoutWeb3Signer, password(fast(LayoutWeb3Signer), "a"), password(fast(LayoutWeb3Signer), "b")},
		"web3signer new kdf":          {LayoutWeb3Signer, fast(LayoutWeb3Signer), pbkdf2(fast(LayoutWeb3Signer))},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			all := genKeys(t, 4, true)
			before, after := all[:3], all[1:] // all[0] goes, all[3] comes
			for n := 0; ; n++ {
				out := t.TempDir()
				mustWrite(t, out, before, sc.first)
				count := 0
				testFault = func(op, path string) error {
					count++
					if count == n+1 {
						return errInjected
					}
					return nil
				}
				_, err := Write(context.Background(), out, after, sc.then)
				testFault = nil
				if err == nil {
					if n < 5 {
						t.Fatalf("only %d changes", n)
					}
					break
				}
				if !errors.Is(err, errInjected) {
					t.Fatalf("fault %d: %v", n, err)
				}
				checkConsistent(t, out, sc.layout, all)

				rep := mustWrite(t, out, after, sc.then)
				checkConsistent(t, out, sc.layout, all)
				if len(rep.Kept)+len(rep.Written) != len(after) {
					t.Errorf("fault %d: re-run %+v", n, rep)
				}
				k0, _ := paths(sc.layout, all[0], t0)
				if _, err := os.Stat(filepath.Join(out, k0)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("fault %d: stale keystore left after re-run: %v", n, err)
				}
			}
		})
	}
}
