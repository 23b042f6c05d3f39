package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/importer"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/server"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storeurl"
)

type importFlags struct {
	keystores      string
	passwordFile   string
	passwordsDir   string
	mnemonicFile   string
	passphraseFile string
	from           uint32
	count          uint32
	server         string
	storeURL       string
	dataDir        string
	kekFile        string
	create         bool
	timeout        time.Duration
	sec            clientSecurity // with --server: --token-file, --ca-file, --tls-server-name
}

func newImportCommand(g *globalFlags) *cobra.Command {
	f := &importFlags{}
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Add pre-deposited keys (genesis validators, keys deposited elsewhere) to the pool, without deposits",
		Long: `Add keys whose deposits were made elsewhere, or that are in a network's genesis state,
to the pool as available keys. No deposit is sent. A key that is already stored (in any
state) is left as it is and reported.

Keys come from EIP-2335 keystores:
  --keystores DIR --password-file F       one password for every keystore
  --keystores DIR --passwords-dir D       per keystore: D/<name>.txt, D/<name>, D/0x<pubkey> or D/0x<pubkey>.txt
or from a BIP-39 mnemonic (EIP-2334 m/12381/3600/i/0/0, i = FROM .. FROM+COUNT-1):
  --mnemonic-file F --from FROM --count COUNT

They go into a running server through its gRPC API (--server host:port), or into the
store of a stopped server (--store URL or --data-dir DIR, with --kek-file or PKM_KEK).
That store must exist unless --create is given, so that a typo does not import into a
new store no server uses. A PostgreSQL store may be imported into while its servers
run (like a replica, the import holds its store lock shared).
When the keys come from the mnemonic the server derives new keys from (or the store
derives from none yet), their derivation indices are reserved so they are never minted
again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, g)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.keystores, "keystores", "", "directory of EIP-2335 keystore files (*.json, searched recursively)")
	fl.StringVar(&f.passwordFile, "password-file", "", "file with the password of every keystore")
	fl.StringVar(&f.passwordsDir, "passwords-dir", "", "directory with one password file per keystore")
	fl.StringVar(&f.mnemonicFile, "mnemonic-file", "", "BIP-39 mnemonic file to derive the keys from")
	registerPassphraseFlag(fl, &f.passphraseFile)
	fl.Uint32Var(&f.from, "from", 0, "first derivation index (with --mnemonic-file)")
	fl.Uint32Var(&f.count, "count", 0, "number of keys (with --mnemonic-file)")
	fl.StringVar(&f.server, "server", "", "gRPC address of a running server to import into")
	fl.StringVar(&f.storeURL, "store", "", "store of a stopped server (bolt:///path/file.db or a path)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory of a stopped server (its store is "+server.DefaultStoreFile+" there)")
	fl.StringVar(&f.kekFile, "kek-file", "", "key-encryption key file of the store (or PKM_KEK)")
	fl.BoolVar(&f.create, "create", false, "with --store/--data-dir: create the store (and its directory, or its PostgreSQL schema) if it does not exist; without it only an existing store is opened")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Minute, "give up after this long")
	f.sec.register(cmd)
	return cmd
}

func (f *importFlags) run(cmd *cobra.Command, g *globalFlags) error {
	logger, err := g.logger()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	// Check the destination flags before any (slow) decryption.
	offline := f.storeURL != "" || f.dataDir != ""
	switch {
	case f.server != "" && offline:
		return errors.New("give either --server (a running server) or --store/--data-dir (a stopped server's store), not both")
	case f.server == "" && !offline:
		return errors.New("where to import: give --server host:port (a running server) or --store/--data-dir with --kek-file (a stopped server's store)")
	case f.create && !offline:
		return errors.New("--create is for --store/--data-dir (a stopped server's store)")
	case offline && (cmd.Flags().Changed("ca-file") || cmd.Flags().Changed("tls-server-name") || (cmd.Flags().Changed("token-file") && f.sec.tokenFile != "")):
		return errors.New("--token-file, --ca-file and --tls-server-name are for --server (a running server)")
	}
	var kek *seal.KEK
	if offline {
		if kek, err = loadToolKEK(f.kekFile, logger); err != nil {
			return err
		}
	}

	var list []importer.Key
	var fingerprint []byte
	switch {
	case f.keystores != "" && f.mnemonicFile != "":
		return errors.New("give either --keystores or --mnemonic-file, not both")
	case f.passphraseFile != "" && f.mnemonicFile == "":
		return errors.New("--mnemonic-passphrase-file needs --mnemonic-file")
	case f.keystores != "":
		if (f.passwordFile == "") == (f.passwordsDir == "") {
			return errors.New("--keystores needs exactly one of --password-file and --passwords-dir")
		}
		if list, err = f.readKeystores(); err != nil {
			return err
		}
	case f.mnemonicFile != "":
		if f.count == 0 {
			return errors.New("--mnemonic-file needs --count (and --from, default 0)")
		}
		if uint64(f.from)+uint64(f.count) > 1<<32 {
			return errors.New("--from + --count goes past index 2^32-1")
		}
		if list, fingerprint, err = f.deriveKeys(); err != nil {
			return err
		}
	default:
		return errors.New("nothing to import: give --keystores DIR or --mnemonic-file F")
	}
	defer func() {
		for _, k := range list {
			clear(k.Secret)
		}
	}()

	var imported, existing []store.Pubkey
	var reserved *uint32
	if f.server != "" {
		sec, err := f.sec.resolve(cmd)
		if err != nil {
			return err
		}
		c, err := client.New(f.server, client.Options{Logger: logger, Security: sec})
		if err != nil {
			return err
		}
		defer c.Close()
		req := &pb.ImportKeysRequest{MnemonicFingerprint: fingerprint}
		for _, k := range list {
			req.Keys = append(req.Keys, &pb.ImportKey{SecretKey: k.Secret, HasDerivationIndex: k.HasDerivationIndex, DerivationIndex: k.DerivationIndex})
		}
		resp, err := c.ImportKeys(ctx, req)
		if err != nil {
			return err
		}
		for _, b := range resp.GetImported() {
			imported = append(imported, store.Pubkey(b))
		}
		for _, b := range resp.GetExisting() {
			existing = append(existing, store.Pubkey(b))
		}
		if resp.GetHasReserved() {
			r := resp.GetReservedThrough()
			reserved = &r
		}
	} else {
		url := f.storeURL
		if url == "" {
			abs, err := filepath.Abs(f.dataDir)
			if err != nil {
				return err
			}
			url = server.DefaultStoreURL(abs)
		}
		st, err := openToolStore(ctx, url, toolStore{create: f.create, createFlag: true, lock: storeurl.LockShared}, logger)
		if err != nil {
			if errors.Is(err, store.ErrLocked) && !storeurl.Shared(url) {
				return fmt.Errorf("%w (a server is running on it: import through it with --server)", err)
			}
			return err
		}
		defer st.Close()
		if err := server.CheckKEK(ctx, st, kek, url); err != nil {
			return err
		}
		res, err := importer.Import(ctx, st, kek, list, fingerprint, time.Now())
		if err != nil {
			return err
		}
		imported, existing, reserved = res.Imported, res.Existing, res.ReservedThrough
	}
	w := cmd.OutOrStdout()
	for _, pk := range existing {
		fmt.Fprintf(w, "already stored, unchanged: %s\n", pk)
	}
	fmt.Fprintf(w, "imported %d keys as available (no deposits sent); %d already stored, unchanged\n", len(imported), len(existing))
	if len(existing) > 0 {
		fmt.Fprintln(w, "a stored key that is deposit-failed stays so: once its deposit is on chain, `pkmanager keys recover --pubkey 0x...` returns it to the pool")
	}
	if reserved != nil {
		fmt.Fprintf(w, "derivation indices up to %d are reserved: the server will not mint these keys again\n", *reserved)
	}
	return nil
}

// keystoreFile is one keystore found under --keystores.
type keystoreFile struct {
	path string
	ks   *keystore.Keystore
}

// readKeystores finds, decrypts (on all cores) and checks the keystores.
func (f *importFlags) readKeystores() ([]importer.Key, error) {
	var files []keystoreFile
	err := filepath.WalkDir(f.keystores, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".json") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		ks, err := keystore.Parse(data)
		if err != nil {
			return fmt.Errorf("%s is not an EIP-2335 keystore: %w", path, err)
		}
		files = append(files, keystoreFile{path, ks})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("--keystores: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("--keystores: no *.json keystore in %s", f.keystores)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var shared string
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		shared = trimNewline(string(b))
	}
	out := make([]importer.Key, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, kf := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			password := shared
			if f.passwordsDir != "" {
				p, err := f.passwordFor(kf)
				if err != nil {
					errs[i] = err
					return
				}
				password = p
			}
			secret, err := kf.ks.Decrypt(password)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", kf.path, err)
				return
			}
			sk, err := keys.SecretKeyFromBytes(secret)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", kf.path, err)
				return
			}
			pub := sk.PublicKey()
			sk.Zero()
			if want, ok := kf.ks.Pubkey(); ok && want != pub {
				errs[i] = fmt.Errorf("%s: the decrypted secret does not belong to the keystore's public key", kf.path)
				return
			}
			k := importer.Key{Secret: secret}
			if idx, ok := keys.ParseSigningPath(kf.ks.Path()); ok {
				k.DerivationIndex, k.HasDerivationIndex = idx, true
			}
			out[i] = k
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, k := range out {
			clear(k.Secret)
		}
		return nil, err
	}
	return out, nil
}

// passwordFor finds a keystore's password file in --passwords-dir.
func (f *importFlags) passwordFor(kf keystoreFile) (string, error) {
	name := strings.TrimSuffix(filepath.Base(kf.path), ".json")
	candidates := []string{name + ".txt", name}
	if pub, ok := kf.ks.Pubkey(); ok {
		p := store.Pubkey(pub).String()
		candidates = append(candidates, p, p+".txt", strings.TrimPrefix(p, "0x"), strings.TrimPrefix(p, "0x")+".txt")
	}
	for _, c := range candidates {
		b, err := os.ReadFile(filepath.Join(f.passwordsDir, c))
		if err == nil {
			return trimNewline(string(b)), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("password of %s: %w", kf.path, err)
		}
	}
	return "", fmt.Errorf("no password file for %s in %s (tried %s)", kf.path, f.passwordsDir, strings.Join(candidates, ", "))
}

// deriveKeys derives the signing keys FROM..FROM+COUNT-1 of the mnemonic.
func (f *importFlags) deriveKeys() ([]importer.Key, []byte, error) {
	seed, err := mnemonicSeed(f.mnemonicFile, f.passphraseFile)
	if err != nil {
		return nil, nil, err
	}
	d, err := keys.NewDeriver(seed)
	clear(seed)
	if err != nil {
		return nil, nil, fmt.Errorf("--mnemonic-file: %w", err)
	}
	defer d.Zero()
	fp, err := d.Fingerprint()
	if err != nil {
		return nil, nil, err
	}
	out := make([]importer.Key, f.count)
	errs := make([]error, f.count)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range f.count {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			idx := f.from + i
			sk, err := d.SigningKey(idx)
			if err != nil {
				errs[i] = fmt.Errorf("derive key %d: %w", idx, err)
				return
			}
			out[i] = importer.Key{Secret: sk.Bytes(), DerivationIndex: idx, HasDerivationIndex: true}
			sk.Zero()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return out, fp[:], nil
}
