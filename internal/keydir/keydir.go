// Package keydir writes a pod's validator keys into an output directory as
// EIP-2335 keystores with password files, in the layouts validator clients
// import (see Layout), and rewrites that directory when the pod's set of
// keys changes.
//
// The first rule of the domain is that a validator key must never be live
// in two places. Write therefore removes the keystores of keys the pod no
// longer holds, before anything else, and reports them. It touches only
// files whose names match the chosen layout's patterns; other files in the
// output directory are left alone.
//
// Files holding secrets (keystores, password files, the legacy JSON) are
// written atomically with mode 0600; directories keydir creates have mode
// 0700. Errors and logs never contain secrets or passwords; they may
// contain public keys and paths.
package keydir

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
)

// Key is a validator key to write.
type Key struct {
	// Pubkey is the compressed BLS public key. It must match Secret.
	Pubkey [48]byte
	// Secret is the 32-byte big-endian secret key. Write does not keep or
	// modify it.
	Secret []byte
	// Path is the EIP-2334 signing path, "m/12381/3600/<i>/0/0", or ""
	// when unknown. It is recorded in the keystore's "path" field.
	Path string
}

// Options configures Write. The zero value writes LayoutKeystores with
// standard-cost scrypt keystores and a random password per key.
type Options struct {
	// Layout is the directory layout; "" means LayoutKeystores.
	Layout Layout
	// Keystore chooses the KDF (scrypt or PBKDF2) and its cost.
	Keystore keystore.Options
	// Password, when not empty, protects every keystore (Prysm and
	// Lodestar import one password for all keystores); each password file
	// then holds it. When empty, each key gets its own random password
	// (keystore.RandomPassword); when a keystore must be rewritten and its
	// password file already holds a usable password, that password is kept
	// so that the pair never disagrees.
	Password string
	// Workers is the number of goroutines encrypting keystores; 0 means
	// runtime.GOMAXPROCS(0). Standard scrypt needs 256 MiB per worker.
	Workers int
	// Progress, when not nil, receives "encrypting keystores: k/n" updated
	// in place with \r, and a final newline. Pass a terminal only.
	Progress io.Writer
	// Now gives the time used in keystore file names; nil means time.Now.
	Now func() time.Time
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// Report says what Write did. All entries are file paths (outDir joined
// with the layout's relative path), sorted.
type Report struct {
	// Written lists the keystores written by this call, new or rewritten;
	// each has its password file next to it in the layout.
	Written []string
	// Kept lists the keystores of held keys that were already usable and
	// were left as they were.
	Kept []string
	// Removed lists every file removed: keystores of keys no longer held,
	// duplicate or unusable keystores of held keys, and their password
	// files, and password files left without a keystore. A keystore
	// replaced at the same path is listed in Written only. Leftover
	// temporary files of an interrupted run are removed but not listed.
	Removed []string
	// RemovedKeystores are the keystores among Removed.
	RemovedKeystores []string
	// RemovedConfigs are the Web3Signer key configuration files among
	// Removed (LayoutWeb3Signer); the rest of Removed are password files.
	RemovedConfigs []string
	// Configs lists the Web3Signer key configuration files written by this
	// call (LayoutWeb3Signer).
	Configs []string
}

// Write makes outDir hold exactly one keystore and one password file, in
// opts.Layout, for each key in keys, and no keystore of any other key.
//
// It proceeds so that it can be interrupted at any point and re-run:
//
//  1. Keystores in the layout whose key is not in keys (or whose public key
//     cannot be read, or whose name and content disagree) are removed, each
//     before its password file.
//  2. A held key's existing keystore is kept, without re-encryption, when
//     it parses, records the key's public key and path, uses the requested
//     KDF and cost class (opts.Keystore), is named as this call would name
//     it (for a derived key in LayoutKeystores any timestamp will do), and
//     its password file exists and holds opts.Password (or, without
//     opts.Password, a non-empty password). If several keystores of one key
//     exist, the oldest usable one is kept and the others are removed.
//  3. The other keys are encrypted on opts.Workers goroutines; as each
//     finishes, its password file is written before its keystore, then
//     any older keystore of the key is removed before its password file.
//     A new name (LayoutKeystores with a new timestamp) means the old pair
//     stays usable until the new pair is complete. When the name is fixed
//     and the password must change, the old keystore is removed first, so
//     a keystore never sits next to a password that does not open it.
//  4. Password files of the layout that belong to no keystore are removed.
//  5. The result is checked structurally (no decryption): one keystore per
//     key, usable as in step 2, mode 0600, and no other keystore.
//
// Cancelling ctx stops after the keystore being committed; no partial or
// temporary file is left, every key has a consistent pair or none, and a
// new Write completes the work. The returned Report covers what was done,
// also on error. Write must not run concurrently on the same outDir.
func Write(ctx context.Context, outDir string, keys []Key, opts Options) (Report, error) {
	w, err := newWriter(outDir, keys, opts)
	if err != nil {
		return Report{}, err
	}
	err = w.run(ctx)
	return w.report(), err
}

// writer holds the state of one Write.
type writer struct {
	out     string
	layout  Layout
	opts    Options
	kdf     keystore.KDF
	workers int
	now     int64
	log     *slog.Logger
	keys    []Key
	held    map[[48]byte]bool
	// derived maps the keys named keystore-m_12381_3600_<i>_0_0-<ts> in
	// LayoutKeystores to <i>: keys with a signing path whose index no other
	// key shares.
	derived map[[48]byte]uint32
	rep     Report
}

func newWriter(outDir string, ks []Key, opts Options) (*writer, error) {
	if outDir == "" {
		return nil, errors.New("keydir: output directory is empty")
	}
	layout, err := ParseLayout(string(opts.Layout))
	if err != nil {
		return nil, err
	}
	kdf := opts.Keystore.KDF
	switch kdf {
	case "":
		kdf = keystore.Scrypt
	case keystore.Scrypt, keystore.PBKDF2:
	default:
		return nil, fmt.Errorf("keydir: unsupported kdf %q", kdf)
	}
	if opts.Password != "" && keystore.NormalizePassword(opts.Password) == "" {
		return nil, errors.New("keydir: password is empty after EIP-2335 normalization")
	}
	if !web3signerPasswordOK(layout, opts.Password) {
		return nil, errors.New("keydir: the password has a line break, and Web3Signer reads only the first line of a password file")
	}
	if len(opts.Password) > maxPasswordFile {
		return nil, fmt.Errorf("keydir: password is longer than %d bytes", maxPasswordFile)
	}
	workers := opts.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if workers < 0 {
		return nil, fmt.Errorf("keydir: workers must not be negative, got %d", workers)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	ts := now().Unix()
	if ts < 0 {
		return nil, errors.New("keydir: current time is before 1970")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := validateKeys(ks); err != nil {
		return nil, err
	}

	w := &writer{
		out:     outDir,
		layout:  layout,
		opts:    opts,
		kdf:     kdf,
		workers: workers,
		now:     ts,
		log:     logger,
		keys:    ks,
		held:    make(map[[48]byte]bool, len(ks)),
		derived: make(map[[48]byte]uint32),
	}
	byIndex := make(map[uint32]int)
	for _, k := range ks {
		w.held[k.Pubkey] = true
		if i, ok := keys.ParseSigningPath(k.Path); ok {
			byIndex[i]++
		}
	}
	for _, k := range ks {
		if i, ok := keys.ParseSigningPath(k.Path); ok && byIndex[i] == 1 {
			w.derived[k.Pubkey] = i
		}
	}
	return w, nil
}

// validateKeys checks that each secret is a valid BLS secret key matching
// its public key, and that no public key repeats.
func validateKeys(ks []Key) error {
	seen := make(map[[48]byte]bool, len(ks))
	for i, k := range ks {
		if seen[k.Pubkey] {
			return fmt.Errorf("keydir: key %d: duplicate pubkey %s", i, hex0x(k.Pubkey))
		}
		seen[k.Pubkey] = true
		sk, err := keys.SecretKeyFromBytes(k.Secret)
		if err != nil {
			// keys' errors say why, never what the bytes were.
			return fmt.Errorf("keydir: key %d (%s): %w", i, hex0x(k.Pubkey), err)
		}
		match := sk.PublicKey() == k.Pubkey
		sk.Zero()
		if !match {
			return fmt.Errorf("keydir: key %d: secret does not match pubkey %s", i, hex0x(k.Pubkey))
		}
	}
	return nil
}

// job is a keystore to encrypt and commit.
type job struct {
	key      *Key
	ksPath   string
	pwPath   string
	password string
	// writePW is set when the password file must be (re)written.
	writePW bool
	// others are the key's existing keystores to remove once the new one
	// is in place.
	others []*ksFile
}

func (w *writer) run(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("keydir: %w", err)
	}
	for _, d := range w.layout.baseDirs(w.out) {
		if err := ensureDir(d); err != nil {
			return err
		}
	}
	if n, err := w.layout.foreignKeystores(w.out); err != nil {
		return err
	} else if n > 0 {
		w.log.Warn("output directory holds keystores of another layout; they are left alone, remove them if this pod no longer holds their keys",
			"dir", w.out, "layout", string(w.layout), "count", n)
	}
	found, err := w.layout.scan(w.out)
	if err != nil {
		return err
	}
	for _, t := range found.temps {
		w.log.Debug("removed leftover temporary file", "path", t)
	}
	// 0. Web3Signer loads its key configuration files: those of keys no
	// longer held go before anything else.
	if err := w.removeStaleConfigs(found); err != nil {
		return err
	}

	// 1. Stale keystores, first: a key must never be live in two places.
	owned := make(map[[48]byte][]*ksFile)
	for _, f := range found.keystores {
		if pk, ok := f.owner(); ok && w.held[pk] {
			owned[pk] = append(owned[pk], f)
			continue
		}
		attrs := []any{"path", f.path}
		if pk, ok := f.owner(); ok {
			attrs = append(attrs, "pubkey", hex0x(pk))
			w.log.Warn("removing keystore of a key this pod no longer holds", attrs...)
		} else {
			w.log.Warn("removing keystore whose public key cannot be read or does not match its name", attrs...)
		}
		if err := w.removeKeystore(f, ""); err != nil {
			return err
		}
	}

	// 2. Keep what can be kept; plan the rest.
	targets := make(map[string]bool) // password files in use
	var jobs []*job
	for i := range w.keys {
		k := &w.keys[i]
		cands := owned[k.Pubkey]
		// Pubkey-named first, then derived names oldest first.
		slices.SortFunc(cands, func(a, b *ksFile) int {
			return cmp.Or(
				cmp.Compare(btoi(a.derived), btoi(b.derived)),
				cmp.Compare(a.ts, b.ts),
				strings.Compare(a.path, b.path))
		})
		var keep *ksFile
		for _, c := range cands {
			reason, err := w.unusable(c, k)
			if err != nil {
				return err
			}
			if reason == "" {
				keep = c
				break
			}
			w.log.Debug("existing keystore will be replaced", "path", c.path, "reason", reason)
		}
		if keep == nil {
			j, err := w.plan(k, cands)
			if err != nil {
				return err
			}
			targets[j.pwPath] = true
			jobs = append(jobs, j)
			continue
		}
		if err := w.fixModes(keep); err != nil {
			return err
		}
		targets[keep.pwPath] = true
		w.rep.Kept = append(w.rep.Kept, keep.path)
		for _, c := range cands {
			if c != keep {
				w.log.Info("removing duplicate keystore", "path", c.path, "pubkey", hex0x(k.Pubkey), "kept", keep.path)
				if err := w.removeKeystore(c, keep.pwPath); err != nil {
					return err
				}
			}
		}
		if w.layout == LayoutWeb3Signer {
			if err := w.ensureConfig(k.Pubkey); err != nil {
				return err
			}
		}
	}

	// 3. Password files that belong to no keystore (e.g. an interrupted
	// removal), unless a job is about to use them.
	for _, p := range found.passwords {
		if targets[p.path] {
			continue
		}
		ok, err := exists(p.ksPath)
		if err != nil {
			return err
		}
		if !ok {
			w.log.Info("removing password file without keystore", "path", p.path)
			if err := w.remove(p.path); err != nil {
				return err
			}
		}
	}

	// 4. Encrypt and commit.
	if err := w.encrypt(ctx, jobs); err != nil {
		return err
	}

	// 5. Check.
	if err := w.verify(); err != nil {
		return err
	}
	// Debug: the caller reports the result (request prints its summary).
	w.log.Debug("keystores ready", "dir", w.out, "layout", string(w.layout), "keys", len(w.keys),
		"written", len(w.rep.Written), "kept", len(w.rep.Kept), "removed", len(w.rep.Removed))
	return nil
}

// unusable returns why f cannot be kept as k's keystore, or "" if it can.
// It reads the password file but decrypts nothing.
func (w *writer) unusable(f *ksFile, k *Key) (string, error) {
	if f.data == nil {
		return "not a regular file or too large", nil
	}
	ks, err := keystore.Parse(f.data)
	if err != nil {
		return "does not parse", nil
	}
	if pk, ok := ks.Pubkey(); !ok || pk != k.Pubkey {
		return "pubkey differs", nil
	}
	if ks.KDF() != w.kdf {
		return "kdf differs", nil
	}
	if ks.Insecure() != w.opts.Keystore.Insecure {
		return "kdf cost differs", nil
	}
	if ks.Path() != k.Path {
		return "path differs", nil
	}
	if w.layout == LayoutKeystores {
		if i, ok := w.derived[k.Pubkey]; ok {
			if !f.derived || f.index != i {
				return "name differs", nil
			}
		} else if !f.hasNamePK {
			return "name differs", nil
		}
	}
	pw, ok, err := readRegular(f.pwPath, maxPasswordFile)
	if err != nil {
		return "", err
	}
	defer clear(pw)
	switch {
	case !ok:
		return "password file missing", nil
	case w.opts.Password != "" && string(pw) != w.opts.Password:
		return "password differs", nil
	case keystore.NormalizePassword(string(pw)) == "":
		return "password file empty", nil
	case w.layout == LayoutWeb3Signer && hasLineBreak(pw):
		return "password file has a line break", nil
	}
	return "", nil
}

// plan prepares the job that writes k's keystore, replacing cands.
func (w *writer) plan(k *Key, cands []*ksFile) (*job, error) {
	j := &job{key: k}
	switch {
	case w.layout != LayoutKeystores:
		j.ksPath, j.pwPath = w.layout.pubkeyPaths(w.out, k.Pubkey)
	default:
		base := pubkeyBase(k.Pubkey)
		if i, ok := w.derived[k.Pubkey]; ok {
			base = derivedBase(i, w.now)
		}
		j.ksPath, j.pwPath = namedPaths(w.out, base)
	}
	for _, c := range cands {
		if c.path != j.ksPath {
			j.others = append(j.others, c)
		}
	}
	current, ok, err := readRegular(j.pwPath, maxPasswordFile)
	if err != nil {
		return nil, err
	}
	defer clear(current)
	switch {
	case w.opts.Password != "":
		j.password = w.opts.Password
		j.writePW = !ok || string(current) != w.opts.Password
	case ok && keystore.NormalizePassword(string(current)) != "" && (w.layout != LayoutWeb3Signer || !hasLineBreak(current)):
		// Keep the password already there: the keystore at this path (if
		// any) is replaced atomically and never disagrees with it.
		j.password = string(current)
	default:
		pw, err := keystore.RandomPassword()
		if err != nil {
			return nil, fmt.Errorf("keydir: %w", err)
		}
		j.password, j.writePW = pw, true
	}
	return j, nil
}

// encrypt runs the jobs' encryption on w.workers goroutines and commits
// each result on the calling goroutine as it arrives.
func (w *writer) encrypt(ctx context.Context, jobs []*job) error {
	if len(jobs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		job  *job
		data []byte
		err  error
	}
	queue := make(chan *job)
	results := make(chan result)
	var wg sync.WaitGroup
	for range min(w.workers, len(jobs)) {
		wg.Go(func() {
			for j := range queue {
				if ctx.Err() != nil {
					continue
				}
				ks, err := keystore.Encrypt(j.key.Secret, j.password, j.key.Pubkey, j.key.Path, w.opts.Keystore)
				var data []byte
				if err == nil {
					data, err = ks.Marshal()
				}
				if err != nil {
					err = fmt.Errorf("keydir: encrypting keystore of %s: %w", hex0x(j.key.Pubkey), err)
				}
				select {
				case results <- result{j, data, err}:
				case <-ctx.Done():
				}
			}
		})
	}
	go func() {
		defer close(queue)
		for _, j := range jobs {
			select {
			case queue <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(results)
	}()

	w.progress(0, len(jobs))
	var firstErr error
	done := 0
	for r := range results {
		if firstErr != nil {
			continue // draining: workers stop after their current keystore
		}
		switch {
		case r.err != nil:
			firstErr = r.err
		case ctx.Err() != nil:
			firstErr = fmt.Errorf("keydir: %w", context.Cause(ctx))
		default:
			firstErr = w.commit(r.job, r.data)
		}
		if firstErr != nil {
			cancel()
			continue
		}
		done++
		w.progress(done, len(jobs))
	}
	if w.opts.Progress != nil {
		fmt.Fprintln(w.opts.Progress)
	}
	if firstErr == nil && done < len(jobs) {
		// Workers skipped jobs: the context was cancelled.
		firstErr = fmt.Errorf("keydir: %w", context.Cause(ctx))
	}
	return firstErr
}

func (w *writer) progress(k, n int) {
	if w.opts.Progress != nil {
		fmt.Fprintf(w.opts.Progress, "\rencrypting keystores: %d/%d", k, n)
	}
}

// commit puts an encrypted keystore in place: password file first, then
// the keystore, then removal of the key's other keystores.
func (w *writer) commit(j *job, data []byte) error {
	if err := ensureDir(filepath.Dir(j.ksPath)); err != nil {
		return err
	}
	if j.writePW {
		// A keystore at the target was encrypted under another password:
		// remove it first rather than leave it next to a password that
		// does not open it (and its Web3Signer configuration before it).
		if w.layout == LayoutWeb3Signer {
			if _, err := removeFile(web3signerConfigPath(w.out, j.key.Pubkey)); err != nil {
				return err
			}
		}
		if _, err := removeFile(j.ksPath); err != nil {
			return err
		}
		if err := writeFileAtomic(j.pwPath, []byte(j.password)); err != nil {
			return err
		}
	}
	if err := writeFileAtomic(j.ksPath, data); err != nil {
		return err
	}
	w.rep.Written = append(w.rep.Written, j.ksPath)
	w.log.Debug("wrote keystore", "path", j.ksPath, "pubkey", hex0x(j.key.Pubkey))
	if w.layout == LayoutWeb3Signer {
		if err := w.ensureConfig(j.key.Pubkey); err != nil {
			return err
		}
	}
	for _, o := range j.others {
		w.log.Info("removing replaced keystore", "path", o.path, "pubkey", hex0x(j.key.Pubkey), "new", j.ksPath)
		if err := w.removeKeystore(o, j.pwPath); err != nil {
			return err
		}
	}
	return nil
}

// removeKeystore removes f (after its Web3Signer key configuration), then
// its validator directory if now empty (Lighthouse, Nimbus), then its
// password file unless that is keepPW.
func (w *writer) removeKeystore(f *ksFile, keepPW string) error {
	if w.layout == LayoutWeb3Signer {
		if err := w.removeConfig(f.namePK); err != nil {
			return err
		}
	}
	n := len(w.rep.Removed)
	if err := w.remove(f.path); err != nil {
		return err
	}
	if len(w.rep.Removed) > n {
		w.rep.RemovedKeystores = append(w.rep.RemovedKeystores, f.path)
	}
	if w.layout == LayoutLighthouse || w.layout == LayoutNimbus {
		// Fails harmlessly when other files (e.g. a client's lock file)
		// remain.
		dir := filepath.Dir(f.path)
		if os.Remove(dir) == nil {
			if err := syncDir(filepath.Dir(dir)); err != nil {
				return err
			}
		}
	}
	if f.pwPath != keepPW {
		return w.remove(f.pwPath)
	}
	return nil
}

// remove removes path, recording it in the report if it existed.
func (w *writer) remove(path string) error {
	ok, err := removeFile(path)
	if ok {
		w.rep.Removed = append(w.rep.Removed, path)
	}
	return err
}

// fixModes makes a kept keystore and its password file mode 0600.
func (w *writer) fixModes(f *ksFile) error {
	for _, p := range []string{f.path, f.pwPath} {
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("keydir: %w", err)
		}
		if fi.Mode().Perm() != fileMode {
			w.log.Warn("restricting file mode", "path", p, "was", fi.Mode().Perm().String())
			if err := os.Chmod(p, fileMode); err != nil {
				return fmt.Errorf("keydir: %w", err)
			}
		}
	}
	return nil
}

// verify rescans the layout and checks, without decrypting, that each
// held key has exactly one usable keystore with a password file, both
// mode 0600, and that no other keystore is left.
func (w *writer) verify() error {
	found, err := w.layout.scan(w.out)
	if err != nil {
		return err
	}
	byKey := make(map[[48]byte][]*ksFile)
	for _, f := range found.keystores {
		pk, ok := f.owner()
		if !ok || !w.held[pk] {
			return fmt.Errorf("keydir: verify: %s is not the keystore of a held key", f.path)
		}
		byKey[pk] = append(byKey[pk], f)
	}
	for i := range w.keys {
		k := &w.keys[i]
		fs := byKey[k.Pubkey]
		if len(fs) != 1 {
			return fmt.Errorf("keydir: verify: %s has %d keystores, want 1", hex0x(k.Pubkey), len(fs))
		}
		reason, err := w.unusable(fs[0], k)
		if err != nil {
			return err
		}
		if reason != "" {
			return fmt.Errorf("keydir: verify: keystore %s: %s", fs[0].path, reason)
		}
		for _, p := range []string{fs[0].path, fs[0].pwPath} {
			fi, err := os.Lstat(p)
			if err != nil {
				return fmt.Errorf("keydir: verify: %w", err)
			}
			if fi.Mode().Perm() != fileMode {
				return fmt.Errorf("keydir: verify: %s has mode %v, want %v", p, fi.Mode().Perm(), fileMode)
			}
		}
	}
	if w.layout == LayoutWeb3Signer {
		return w.verifyConfigs(found)
	}
	return nil
}

func (w *writer) report() Report {
	r := w.rep
	for _, s := range []*[]string{&r.Written, &r.Kept, &r.Removed, &r.RemovedKeystores, &r.RemovedConfigs, &r.Configs} {
		*s = slices.Clone(*s)
		slices.Sort(*s)
	}
	return r
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
