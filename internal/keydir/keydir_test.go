package keydir

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
)

var (
	t0 = time.Unix(1700000000, 0)
	t1 = time.Unix(1700000100, 0)
)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

// fast returns options with the insecure KDF cost, to keep tests fast.
func fast(l Layout) Options {
	return Options{Layout: l, Keystore: keystore.Options{Insecure: true}, Now: at(t0)}
}

// genKeys returns n random keys; key i has signing path i when derived.
func genKeys(t testing.TB, n int, derived bool) []Key {
	t.Helper()
	out := make([]Key, n)
	for i := range out {
		sk, err := keys.GenerateRandom()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = Key{Pubkey: sk.PublicKey(), Secret: sk.Bytes()}
		if derived {
			out[i].Path = keys.SigningPath(uint32(i))
		}
	}
	return out
}

func pkHex(k Key) string { return "0x" + hex.EncodeToString(k.Pubkey[:]) }

// paths returns the keystore and password paths (relative to OUT) that k
// gets in layout l when written at time ts.
func paths(l Layout, k Key, ts time.Time) (ks, pw string) {
	switch l {
	case LayoutLighthouse:
		return "validators/" + pkHex(k) + "/voting-keystore.json", "secrets/" + pkHex(k)
	case LayoutNimbus:
		return "validators/" + pkHex(k) + "/keystore.json", "secrets/" + pkHex(k)
	case LayoutWeb3Signer:
		return "web3signer/" + pkHex(k) + ".json", "web3signer/" + pkHex(k) + ".password"
	}
	name := "keystore-" + pkHex(k)
	if i, ok := keys.ParseSigningPath(k.Path); ok {
		name = derivedBase(i, ts.Unix())
	}
	return "keystores/" + name + ".json", "secrets/" + name + ".txt"
}

// configs returns the other files (relative to OUT) that k gets in layout
// l: its Web3Signer key configuration file.
func configs(l Layout, k Key) []string {
	if l == LayoutWeb3Signer {
		return []string{"web3signer/" + pkHex(k) + ".yaml"}
	}
	return nil
}

// tree lists every file and directory under dir, relative, with its
// permission bits.
func tree(t testing.TB, dir string) map[string]fs.FileMode {
	t.Helper()
	m := make(map[string]fs.FileMode)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		mode := fi.Mode().Perm()
		if fi.IsDir() {
			mode |= fs.ModeDir
		}
		m[filepath.ToSlash(rel)] = mode
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func join(out string, rel ...string) []string {
	r := make([]string, len(rel))
	for i, p := range rel {
		r[i] = filepath.Join(out, filepath.FromSlash(p))
	}
	slices.Sort(r)
	return r
}

// checkKeystore decrypts the keystore at ks with the password in pw and
// checks it against k.
func checkKeystore(t testing.TB, ks, pw string, k Key) *keystore.Keystore {
	t.Helper()
	data, err := os.ReadFile(ks)
	if err != nil {
		t.Fatal(err)
	}
	password, err := os.ReadFile(pw)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Pubkey string `json:"pubkey"`
		Path   string `json:"path"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Pubkey != hex.EncodeToString(k.Pubkey[:]) {
		t.Errorf("%s: pubkey field %q, want lower-case hex without 0x", ks, raw.Pubkey)
	}
	if raw.Path != k.Path {
		t.Errorf("%s: path field %q, want %q", ks, raw.Path, k.Path)
	}
	parsed, err := keystore.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := parsed.Decrypt(string(password))
	if err != nil {
		t.Fatalf("%s: decrypt with %s: %v", ks, pw, err)
	}
	if !bytes.Equal(secret, k.Secret) {
		t.Errorf("%s: decrypted secret differs", ks)
	}
	return parsed
}

func mustWrite(t testing.TB, out string, ks []Key, opts Options) Report {
	t.Helper()
	rep, err := Write(context.Background(), out, ks, opts)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return rep
}

func TestParseLayout(t *testing.T) {
	for in, want := range map[string]Layout{
		"": LayoutKeystores, "keystores": LayoutKeystores, " Lighthouse ": LayoutLighthouse, "NIMBUS": LayoutNimbus,
	} {
		got, err := ParseLayout(in)
		if err != nil || got != want {
			t.Errorf("ParseLayout(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"teku", "prysm", "lighthouse2"} {
		if _, err := ParseLayout(in); err == nil {
			t.Errorf("ParseLayout(%q) succeeded", in)
		}
	}
	if _, err := Write(context.Background(), t.TempDir(), nil, Options{Layout: "teku"}); err == nil {
		t.Error("Write accepted an unknown layout")
	}
}

func TestWriteLayouts(t *testing.T) {
	for _, l := range Layouts {
		t.Run(string(l), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out") // created by Write
			ks := genKeys(t, 3, true)
			ks[2].Path = "" // path unknown
			rep := mustWrite(t, out, ks, fast(l))

			want := map[string]fs.FileMode{"secrets": fs.ModeDir | 0o700}
			var wantWritten []string
			switch l {
			case LayoutKeystores:
				want["keystores"] = fs.ModeDir | 0o700
			case LayoutWeb3Signer:
				want = map[string]fs.FileMode{"web3signer": fs.ModeDir | 0o700}
			default:
				want["validators"] = fs.ModeDir | 0o700
			}
			for _, k := range ks {
				k1, p1 := paths(l, k, t0)
				want[k1], want[p1] = 0o600, 0o600
				for _, c := range configs(l, k) {
					want[c] = 0o600
				}
				if l != LayoutKeystores {
					want[filepath.ToSlash(filepath.Dir(k1))] = fs.ModeDir | 0o700
				}
				wantWritten = append(wantWritten, k1)
				checkKeystore(t, filepath.Join(out, k1), filepath.Join(out, p1), k)
			}
			got := tree(t, out)
			for p, m := range want {
				if got[p] != m {
					t.Errorf("%s: mode %v, want %v", p, got[p], m)
				}
			}
			for p := range got {
				if _, ok := want[p]; !ok {
					t.Errorf("unexpected %s", p)
				}
			}
			if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("created output directory: %v %v", fi.Mode(), err)
			}
			if !slices.Equal(rep.Written, join(out, wantWritten...)) || len(rep.Kept) != 0 || len(rep.Removed) != 0 {
				t.Errorf("report %+v", rep)
			}
		})
	}
}

// TestWriteKeystoresNames pins the exact names of LayoutKeystores.
func TestWriteKeystoresNames(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 2, false)
	ks[0].Path = "m/12381/3600/7/0/0"
	ks[1].Path = "m/12381/3600/7/0" // not a signing path: named by pubkey
	mustWrite(t, out, ks, fast(""))
	got := slices.Sorted(func(yield func(string) bool) {
		for p := range tree(t, out) {
			if !yield(p) {
				return
			}
		}
	})
	h := hex.EncodeToString(ks[1].Pubkey[:])
	want := []string{
		"keystores",
		"keystores/keystore-0x" + h + ".json",
		"keystores/keystore-m_12381_3600_7_0_0-1700000000.json",
		"secrets",
		"secrets/keystore-0x" + h + ".txt",
		"secrets/keystore-m_12381_3600_7_0_0-1700000000.txt",
	}
	if !slices.Equal(got, want) {
		t.Errorf("files:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Random passwords: 64 hex characters, different per key.
	a, _ := os.ReadFile(filepath.Join(out, "secrets/keystore-0x"+h+".txt"))
	b, _ := os.ReadFile(filepath.Join(out, "secrets/keystore-m_12381_3600_7_0_0-1700000000.txt"))
	if len(a) != 64 || len(b) != 64 || bytes.Equal(a, b) {
		t.Errorf("random passwords %d and %d bytes, equal=%v", len(a), len(b), bytes.Equal(a, b))
	}
}

// Two keys with the same signing index (e.g. from two mnemonics) cannot
// share the derived name: both are named by pubkey.
func TestWriteSameIndexNamedByPubkey(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 3, false)
	ks[0].Path, ks[1].Path, ks[2].Path = keys.SigningPath(4), keys.SigningPath(4), keys.SigningPath(5)
	rep := mustWrite(t, out, ks, fast(""))
	want := join(out,
		"keystores/keystore-"+pkHex(ks[0])+".json",
		"keystores/keystore-"+pkHex(ks[1])+".json",
		"keystores/"+derivedBase(5, t0.Unix())+".json")
	if !slices.Equal(rep.Written, want) {
		t.Errorf("written %q, want %q", rep.Written, want)
	}
	for _, k := range ks[:2] {
		ks1, pw1 := paths(LayoutKeystores, Key{Pubkey: k.Pubkey}, t0)
		checkKeystore(t, filepath.Join(out, ks1), filepath.Join(out, pw1), k)
	}
}

func TestWriteSharedPassword(t *testing.T) {
	for _, l := range Layouts {
		t.Run(string(l), func(t *testing.T) {
			out := t.TempDir()
			ks := genKeys(t, 3, true)
			opts := fast(l)
			opts.Password = "correct horse battery staple"
			mustWrite(t, out, ks, opts)
			for _, k := range ks {
				k1, p1 := paths(l, k, t0)
				if pw, _ := os.ReadFile(filepath.Join(out, p1)); string(pw) != opts.Password {
					t.Errorf("%s holds %q", p1, pw)
				}
				checkKeystore(t, filepath.Join(out, k1), filepath.Join(out, p1), k)
			}

			// Same password: kept. Another password: rewritten.
			if rep := mustWrite(t, out, ks, opts); len(rep.Kept) != 3 || len(rep.Written) != 0 {
				t.Errorf("same password: %+v", rep)
			}
			opts.Password = "another password"
			if rep := mustWrite(t, out, ks, opts); len(rep.Written) != 3 || len(rep.Kept) != 0 {
				t.Errorf("new password: %+v", rep)
			}
			for _, k := range ks {
				k1, p1 := paths(l, k, t0)
				if pw, _ := os.ReadFile(filepath.Join(out, p1)); string(pw) != opts.Password {
					t.Errorf("%s holds %q after password change", p1, pw)
				}
				checkKeystore(t, filepath.Join(out, k1), filepath.Join(out, p1), k)
			}
		})
	}
}

type fileID struct {
	ino   uint64
	mtime time.Time
	data  string
}

func identify(t testing.TB, path string) fileID {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileID{fi.Sys().(*syscall.Stat_t).Ino, fi.ModTime(), string(data)}
}

func TestWriteIdempotent(t *testing.T) {
	for _, l := range Layouts {
		t.Run(string(l), func(t *testing.T) {
			out := t.TempDir()
			ks := genKeys(t, 3, true)
			ks[1].Path = ""
			first := mustWrite(t, out, ks, fast(l))
			before := make(map[string]fileID)
			for p := range tree(t, out) {
				if fi, _ := os.Stat(filepath.Join(out, p)); !fi.IsDir() {
					before[p] = identify(t, filepath.Join(out, p))
				}
			}

			// Later: derived keys keep their earlier timestamp.
			opts := fast(l)
			opts.Now = at(t1)
			rep := mustWrite(t, out, ks, opts)
			if !slices.Equal(rep.Kept, first.Written) || len(rep.Written) != 0 || len(rep.Removed) != 0 {
				t.Errorf("second Write: %+v, want Kept %q", rep, first.Written)
			}
			after := tree(t, out)
			for p, id := range before {
				if got := identify(t, filepath.Join(out, p)); got != id {
					t.Errorf("%s changed: %+v -> %+v", p, id, got)
				}
			}
			for p, m := range after {
				if _, ok := before[p]; !ok && !m.IsDir() {
					t.Errorf("new file %s", p)
				}
			}
		})
	}
}

func TestWriteRemovesStale(t *testing.T) {
	for _, l := range Layouts {
		t.Run(string(l), func(t *testing.T) {
			out := t.TempDir()
			ks := genKeys(t, 3, true)
			mustWrite(t, out, ks, fast(l))

			// Unrelated files, some next to the keystores.
			unrelated := map[string]string{
				"README":                       "mine",
				"keystores/notes.json":         "{}",
				"secrets/keystore-notes.txt":   "x",
				"secrets/0x1234":               "short name",
				"validators/slashing.sqlite":   "db",
				"validators/" + pkHex(ks[2]):   "", // dir, below
				"keystores/keystore-0x12.json": "{}",
			}
			for p, c := range unrelated {
				full := filepath.Join(out, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
					t.Fatal(err)
				}
				if p == "validators/"+pkHex(ks[2]) {
					continue
				}
				if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			delete(unrelated, "validators/"+pkHex(ks[2]))
			// A file another client keeps in the stale key's directory.
			var lockFile string
			if l == LayoutLighthouse || l == LayoutNimbus {
				lockFile = "validators/" + pkHex(ks[2]) + "/client.lock"
				if err := os.WriteFile(filepath.Join(out, lockFile), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}

			rep := mustWrite(t, out, ks[:2], fast(l))
			k3, p3 := paths(l, ks[2], t0)
			if want := join(out, append([]string{k3, p3}, configs(l, ks[2])...)...); !slices.Equal(rep.Removed, want) {
				t.Errorf("removed %q, want %q", rep.Removed, want)
			}
			if want := join(out, k3); !slices.Equal(rep.RemovedKeystores, want) {
				t.Errorf("removed keystores %q, want %q (the password file is not a keystore)", rep.RemovedKeystores, want)
			}
			if len(rep.Kept) != 2 || len(rep.Written) != 0 {
				t.Errorf("report %+v", rep)
			}
			for _, p := range []string{k3, p3} {
				if _, err := os.Lstat(filepath.Join(out, p)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s still there: %v", p, err)
				}
			}
			for p, c := range unrelated {
				if got, err := os.ReadFile(filepath.Join(out, p)); err != nil || string(got) != c {
					t.Errorf("unrelated %s: %q, %v", p, got, err)
				}
			}
			if lockFile != "" {
				if _, err := os.Stat(filepath.Join(out, lockFile)); err != nil {
					t.Errorf("lock file: %v", err)
				}
			}
			for _, k := range ks[:2] {
				k1, p1 := paths(l, k, t0)
				checkKeystore(t, filepath.Join(out, k1), filepath.Join(out, p1), k)
			}

			// No keys: every keystore goes.
			rep = mustWrite(t, out, nil, fast(l))
			if len(rep.Removed) != 4+len(configs(l, ks[0]))+len(configs(l, ks[1])) {
				t.Errorf("removing all: %q", rep.Removed)
			}
			for p := range tree(t, out) {
				if strings.HasSuffix(p, "keystore.json") || strings.HasPrefix(p, "keystores/keystore-m") {
					t.Errorf("%s left", p)
				}
			}
		})
	}
}

// Lighthouse: the stale key's directory goes when empty.
func TestWriteRemovesEmptyValidatorDir(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 2, false)
	mustWrite(t, out, ks, fast(LayoutLighthouse))
	mustWrite(t, out, ks[:1], fast(LayoutLighthouse))
	if _, err := os.Lstat(filepath.Join(out, "validators", pkHex(ks[1]))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty validator directory left: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(out, "validators", pkHex(ks[0]))); err != nil {
		t.Error(err)
	}
}

// Keystores matching the patterns but unreadable or lying about their key
// are removed: they are nobody's valid keystore.
func TestWriteRemovesJunkKeystores(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 2, true)
	mustWrite(t, out, ks[:1], fast(""))
	other, _ := paths(LayoutKeystores, ks[1], t0) // index 1, not held
	junk := map[string]string{
		"keystores/keystore-m_12381_3600_9_0_0-1.json": "not json",
		"secrets/keystore-m_12381_3600_9_0_0-1.txt":    "pw",
		// Name says ks[0], content says ks[1].
		"keystores/keystore-" + pkHex(ks[0]) + ".json": `{"pubkey":"` + hex.EncodeToString(ks[1].Pubkey[:]) + `"}`,
		// Content pubkey (upper case, 0x) of a key not held.
		other: `{"pubkey":"0x` + strings.ToUpper(hex.EncodeToString(ks[1].Pubkey[:])) + `"}`,
		// A password file whose keystore is gone.
		"secrets/keystore-m_12381_3600_3_0_0-5.txt": "orphan",
	}
	for p, c := range junk {
		if err := os.WriteFile(filepath.Join(out, p), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustWrite(t, out, ks[:1], fast(""))
	var want []string
	for p := range junk {
		want = append(want, p)
	}
	if w := join(out, want...); !slices.Equal(rep.Removed, w) {
		t.Errorf("removed %q\nwant %q", rep.Removed, w)
	}
	if len(rep.Kept) != 1 {
		t.Errorf("kept %q", rep.Kept)
	}
}

func TestWriteOptionsChangeRewrites(t *testing.T) {
	cases := []struct {
		name     string
		from, to keystore.Options
	}{
		{"pbkdf2 to scrypt", keystore.Options{KDF: keystore.PBKDF2, Insecure: true}, keystore.Options{Insecure: true}},
		{"scrypt to pbkdf2", keystore.Options{Insecure: true}, keystore.Options{KDF: keystore.PBKDF2, Insecure: true}},
		// The one standard-cost test (scrypt n=2^18, about a second).
		{"insecure to standard", keystore.Options{Insecure: true}, keystore.Options{}},
	}
	for _, tc := range cases {
		for _, l := range []Layout{LayoutKeystores, LayoutNimbus} {
			t.Run(tc.name+"/"+string(l), func(t *testing.T) {
				out := t.TempDir()
				ks := genKeys(t, 1, true)
				k := ks[0]
				opts := Options{Layout: l, Keystore: tc.from, Now: at(t0)}
				mustWrite(t, out, ks, opts)
				k0, p0 := paths(l, k, t0)
				pw0, _ := os.ReadFile(filepath.Join(out, p0))

				opts.Keystore, opts.Now = tc.to, at(t1)
				rep := mustWrite(t, out, ks, opts)
				k1, p1 := paths(l, k, t1)
				if !slices.Equal(rep.Written, join(out, k1)) || len(rep.Kept) != 0 {
					t.Errorf("report %+v", rep)
				}
				if k0 != k1 { // keystores layout: new timestamp, old pair removed
					if !slices.Equal(rep.Removed, join(out, k0, p0)) {
						t.Errorf("removed %q", rep.Removed)
					}
					if _, err := os.Stat(filepath.Join(out, k0)); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("old keystore left: %v", err)
					}
				} else {
					// Same name, random password: the password file is kept
					// as it was, so the pair never disagrees.
					if pw1, _ := os.ReadFile(filepath.Join(out, p1)); !bytes.Equal(pw0, pw1) {
						t.Error("password changed on in-place rewrite")
					}
				}
				parsed := checkKeystore(t, filepath.Join(out, k1), filepath.Join(out, p1), k)
				wantKDF := tc.to.KDF
				if wantKDF == "" {
					wantKDF = keystore.Scrypt
				}
				if parsed.KDF() != wantKDF || parsed.Insecure() != tc.to.Insecure {
					t.Errorf("kdf %s insecure %v", parsed.KDF(), parsed.Insecure())
				}
			})
		}
	}
}

// Damaged pairs are rewritten: a missing password file, an empty one, a
// keystore that does not parse, a path that changed.
func TestWriteRepairs(t *testing.T) {
	for _, l := range Layouts {
		t.Run(string(l), func(t *testing.T) {
			out := t.TempDir()
			ks := genKeys(t, 4, true)
			mustWrite(t, out, ks, fast(l))
			k0, p0 := paths(l, ks[0], t0)
			k1, p1 := paths(l, ks[1], t0)
			k2, _ := paths(l, ks[2], t0)
			if err := os.Remove(filepath.Join(out, p0)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, p1), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, k2), []byte(`{"pubkey":"`+hex.EncodeToString(ks[2].Pubkey[:])+`"}`), 0o600); err != nil {
				t.Fatal(err)
			}
			ks[3].Path = "" // keystores layout: renamed to keystore-0x...
			k3, _ := paths(l, ks[3], t0)
			rep := mustWrite(t, out, ks, fast(l))
			if want := join(out, k0, k1, k2, k3); !slices.Equal(rep.Written, want) {
				t.Errorf("written %q, want %q", rep.Written, want)
			}
			for _, k := range ks {
				kp, pp := paths(l, k, t0)
				checkKeystore(t, filepath.Join(out, kp), filepath.Join(out, pp), k)
			}
			if l == LayoutKeystores {
				old3, oldp3 := paths(l, Key{Pubkey: ks[3].Pubkey, Path: keys.SigningPath(3)}, t0)
				if !slices.Equal(rep.Removed, join(out, old3, oldp3)) {
					t.Errorf("removed %q", rep.Removed)
				}
			} else if len(rep.Removed) != 0 {
				t.Errorf("removed %q", rep.Removed)
			}
		})
	}
}

func TestWriteDuplicateFiles(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 2, true)
	mustWrite(t, out, ks, fast(""))
	// Copy ks[0]'s pair under a later timestamp, and under its pubkey name.
	k0, p0 := paths(LayoutKeystores, ks[0], t0)
	kLater, pLater := paths(LayoutKeystores, ks[0], t1)
	kPub, pPub := paths(LayoutKeystores, Key{Pubkey: ks[0].Pubkey}, t0)
	for _, c := range [][2]string{{k0, kLater}, {p0, pLater}, {k0, kPub}, {p0, pPub}} {
		data, err := os.ReadFile(filepath.Join(out, c[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, c[1]), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustWrite(t, out, ks, fast(""))
	k1, _ := paths(LayoutKeystores, ks[1], t0)
	if !slices.Equal(rep.Kept, join(out, k0, k1)) || len(rep.Written) != 0 {
		t.Errorf("report %+v", rep)
	}
	if want := join(out, kLater, pLater, kPub, pPub); !slices.Equal(rep.Removed, want) {
		t.Errorf("removed %q, want %q", rep.Removed, want)
	}
	checkKeystore(t, filepath.Join(out, k0), filepath.Join(out, p0), ks[0])
}

// A duplicate that is the only usable one wins over an older unusable one.
func TestWriteDuplicatePrefersUsable(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 1, true)
	opts := fast("")
	opts.Now = at(t1)
	mustWrite(t, out, ks, opts)
	kOld, pOld := paths(LayoutKeystores, ks[0], t0) // older name, no password file
	kNew, _ := paths(LayoutKeystores, ks[0], t1)
	data, _ := os.ReadFile(filepath.Join(out, kNew))
	if err := os.WriteFile(filepath.Join(out, kOld), data, 0o600); err != nil {
		t.Fatal(err)
	}
	rep := mustWrite(t, out, ks, fast(""))
	if !slices.Equal(rep.Kept, join(out, kNew)) || !slices.Equal(rep.Removed, join(out, kOld)) {
		t.Errorf("report %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(out, pOld)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("password of the removed duplicate: %v", err)
	}
}

func TestWriteFixesModesOfKeptFiles(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 1, false)
	mustWrite(t, out, ks, fast(LayoutNimbus))
	k0, p0 := paths(LayoutNimbus, ks[0], t0)
	for _, p := range []string{k0, p0} {
		if err := os.Chmod(filepath.Join(out, p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustWrite(t, out, ks, fast(LayoutNimbus))
	if len(rep.Kept) != 1 {
		t.Errorf("report %+v", rep)
	}
	for _, p := range []string{k0, p0} {
		if fi, _ := os.Stat(filepath.Join(out, p)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, fi.Mode().Perm())
		}
	}
}

// cancelWriter cancels a context when it sees "1/".
type cancelWriter struct {
	cancel context.CancelFunc
	buf    bytes.Buffer
}

func (c *cancelWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(" 1/")) {
		c.cancel()
	}
	return c.buf.Write(p)
}

func TestWriteCancel(t *testing.T) {
	for _, l := range Layouts {
		t.Run(string(l), func(t *testing.T) {
			out := t.TempDir()
			ks := genKeys(t, 8, true)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := fast(l)
			opts.Workers = 2
			opts.Progress = &cancelWriter{cancel: cancel}
			rep, err := Write(ctx, out, ks, opts)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if len(rep.Written) == 0 || len(rep.Written) == len(ks) {
				t.Errorf("written %d of %d", len(rep.Written), len(ks))
			}
			// Every keystore on disk is complete, has its password, and
			// nothing temporary is left.
			n := 0
			for p := range tree(t, out) {
				if strings.Contains(p, tempPrefix) {
					t.Errorf("temporary file %s left", p)
				}
			}
			for _, k := range ks {
				kp, pp := paths(l, k, t0)
				_, errK := os.Stat(filepath.Join(out, kp))
				_, errP := os.Stat(filepath.Join(out, pp))
				if errK == nil {
					n++
					checkKeystore(t, filepath.Join(out, kp), filepath.Join(out, pp), k)
				} else if errP == nil {
					t.Errorf("password file %s without keystore", pp)
				}
			}
			if n != len(rep.Written) {
				t.Errorf("%d keystores on disk, report says %d", n, len(rep.Written))
			}

			// A new run completes the work and keeps what was done.
			rep2 := mustWrite(t, out, ks, fast(l))
			if len(rep2.Kept) != n || len(rep2.Written) != len(ks)-n {
				t.Errorf("second run: kept %d written %d, want %d and %d", len(rep2.Kept), len(rep2.Written), n, len(ks)-n)
			}
		})
	}
}

func TestWriteCancelledBeforeStart(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Write(ctx, out, genKeys(t, 1, false), fast("")); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	if got := tree(t, out); len(got) != 0 {
		t.Errorf("files written: %v", got)
	}
}

func TestWriteRemovesLeftoverTempFiles(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 1, false)
	mustWrite(t, out, ks, fast(LayoutLighthouse))
	leftovers := []string{
		"secrets/" + tempPrefix + "123",
		"validators/" + pkHex(ks[0]) + "/" + tempPrefix + "456",
	}
	for _, p := range leftovers {
		if err := os.WriteFile(filepath.Join(out, p), []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustWrite(t, out, ks, fast(LayoutLighthouse))
	if len(rep.Kept) != 1 || len(rep.Removed) != 0 {
		t.Errorf("report %+v", rep)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(filepath.Join(out, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
}

func TestWriteProgress(t *testing.T) {
	var buf bytes.Buffer
	opts := fast("")
	opts.Progress = &buf
	opts.Workers = 3
	mustWrite(t, t.TempDir(), genKeys(t, 2, true), opts)
	want := "\rencrypting keystores: 0/2\rencrypting keystores: 1/2\rencrypting keystores: 2/2\n"
	if buf.String() != want {
		t.Errorf("progress %q, want %q", buf.String(), want)
	}
}

// Other layouts' files are not this layout's to touch, even for keys no
// longer held.
func TestWriteLeavesOtherLayouts(t *testing.T) {
	out := t.TempDir()
	ks := genKeys(t, 2, true)
	mustWrite(t, out, ks, fast(LayoutKeystores))
	before := tree(t, out)
	rep := mustWrite(t, out, ks[:1], fast(LayoutNimbus))
	if len(rep.Removed) != 0 || len(rep.Written) != 1 {
		t.Errorf("report %+v", rep)
	}
	after := tree(t, out)
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s removed", p)
		}
	}
}

func TestWriteRejectsBadInput(t *testing.T) {
	ks := genKeys(t, 2, false)
	secretHex := hex.EncodeToString(ks[0].Secret)
	mismatched := []Key{{Pubkey: ks[1].Pubkey, Secret: ks[0].Secret}}
	cases := map[string]struct {
		keys []Key
		opts Options
	}{
		"secret does not match pubkey": {mismatched, fast("")},
		"duplicate pubkey":             {[]Key{ks[0], ks[0]}, fast("")},
		"short secret":                 {[]Key{{Pubkey: ks[0].Pubkey, Secret: ks[0].Secret[:31]}}, fast("")},
		"password empty":               {ks, Options{Password: "\x01\x02"}},
		"negative workers":             {ks, Options{Workers: -1}},
		"unknown kdf":                  {ks, Options{Keystore: keystore.Options{KDF: "argon2"}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			_, err := Write(context.Background(), out, tc.keys, tc.opts)
			if err == nil {
				t.Fatal("Write succeeded")
			}
			if strings.Contains(err.Error(), secretHex) || strings.Contains(err.Error(), "\x01") {
				t.Errorf("error leaks: %v", err)
			}
			if got := tree(t, out); len(got) != 0 {
				t.Errorf("files written: %v", got)
			}
		})
	}
	if err := WriteLegacyJSON(filepath.Join(t.TempDir(), "k.json"), mismatched); err == nil {
		t.Error("WriteLegacyJSON accepted a mismatched key")
	}
}
