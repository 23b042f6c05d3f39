package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/keydir"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

type requestFlags struct {
	clientFlags
	podFlags
	podUID      string
	count       uint32
	out         string
	layout      string
	kdf         string
	insecureKDF bool
	passwordF   string
	legacyJSON  string
	workers     int

	progressEvery time.Duration
}

func newRequestCommand(g *globalFlags) *cobra.Command {
	f := &requestFlags{}
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Ask the server for this pod's validator keys and write them as EIP-2335 keystores",
		Long: `Ask the server for this pod's validator keys and write them as EIP-2335 keystores.

Layouts (--layout):
  keystores   OUT/keystores/<name>.json + OUT/secrets/<name>.txt (Teku, Lodestar; default)
  lighthouse  OUT/validators/0x<pubkey>/voting-keystore.json + OUT/secrets/0x<pubkey>
  nimbus      OUT/validators/0x<pubkey>/keystore.json + OUT/secrets/0x<pubkey>
  web3signer  OUT/web3signer/0x<pubkey>.json + OUT/web3signer/0x<pubkey>.password
              + OUT/web3signer/0x<pubkey>.yaml, a Web3Signer key configuration
              file (type file-keystore, relative paths): start Web3Signer with
              --key-store-path=OUT/web3signer

Running it again is safe: keystores of keys the pod still holds are kept, those
of keys it no longer holds are removed and reported.

When the server sends the keys' slashing-protection history (keys that had a
holder before), it is written to OUT/slashing_protection.json (EIP-3076
interchange, format 5, mode 0600) before the keystores: import it into the
validator client before the client starts (see the README). Without a history
a stale OUT/slashing_protection.json is removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd, g) },
	}
	f.clientFlags.register(cmd, 5*time.Minute)
	fl := cmd.Flags()
	f.podFlags.register(cmd, "pod asking for keys")
	fl.StringVar(&f.podUID, "pod-uid", os.Getenv("POD_UID"), "UID of the pod (default $POD_UID)")
	fl.Uint32Var(&f.count, "keys", 1, "number of keys (0 means 1)")
	fl.StringVar(&f.out, "out", "", "output directory (required)")
	fl.StringVar(&f.layout, "layout", string(keydir.LayoutKeystores), "output layout: keystores, lighthouse, nimbus or web3signer")
	fl.StringVar(&f.kdf, "kdf", string(keystore.Scrypt), "keystore KDF: scrypt (n=262144, r=8, p=1) or pbkdf2 (c=262144)")
	fl.BoolVar(&f.insecureKDF, "insecure-kdf", false, "low-cost KDF parameters (same KDF): for devnets and tests only")
	fl.StringVar(&f.passwordF, "password-file", "", "encrypt every keystore with the password in this file (default: a random password per key)")
	fl.IntVar(&f.workers, "workers", 0, "keystores encrypted in parallel (0: one per CPU, GOMAXPROCS); standard scrypt needs 256 MiB each")
	fl.DurationVar(&f.progressEvery, "progress-interval", 10*time.Second, "while keys wait for their deposits, log the progress this often (on a terminal a live line instead)")
	fl.StringVar(&f.legacyJSON, "legacy-json", "", "also write the original cluster-pk-manager client's UNENCRYPTED JSON file here (mode 0600)")
	return cmd
}

func (f *requestFlags) run(cmd *cobra.Command, g *globalFlags) error {
	pod, err := f.podFlags.resolve(cmd)
	if err != nil {
		return err
	}
	if f.out == "" {
		return errors.New("--out DIR is required")
	}
	if f.progressEvery <= 0 {
		return fmt.Errorf("--progress-interval %s: must be more than 0", f.progressEvery)
	}
	if f.workers < 0 {
		return fmt.Errorf("--workers %d: must be 0 (one per CPU) or more", f.workers)
	}
	layout, err := keydir.ParseLayout(f.layout)
	if err != nil {
		return fmt.Errorf("--layout: %w", err)
	}
	kdf := keystore.KDF(f.kdf)
	if kdf != keystore.Scrypt && kdf != keystore.PBKDF2 {
		return fmt.Errorf("--kdf %q: use scrypt or pbkdf2", f.kdf)
	}
	var password string
	if f.passwordF != "" {
		b, err := os.ReadFile(f.passwordF)
		if err != nil {
			return fmt.Errorf("--password-file: %w", err)
		}
		password = trimNewline(string(b))
		if keystore.NormalizePassword(password) == "" {
			return errors.New("--password-file: the password is empty")
		}
	}
	logger, err := g.logger()
	if err != nil {
		return err
	}
	c, ctx, done, err := f.connect(cmd, g)
	if err != nil {
		return err
	}
	defer done()
	prog := startProgress(ctx, c, pod, f.count, f.progressEvery, logger)
	resp, err := c.RequestKeys(ctx, pod, f.podUID, f.count)
	prog.stop()
	if err != nil {
		if cmd.Context().Err() != nil {
			return interruptedRequest(c, pod, f.out, 0, "while the server prepared the keys")
		}
		return err
	}
	ks, err := toKeydir(resp)
	if err != nil {
		return err
	}
	defer func() {
		for _, k := range ks {
			clear(k.Secret)
		}
	}()
	spKeys, err := checkSlashingProtection(resp, ks)
	if err != nil {
		return err
	}
	// The history goes first: a validator client that finds the keystores
	// finds their history beside them.
	spPath, spRemoved, err := keydir.WriteSlashingProtection(f.out, resp.GetSlashingProtection())
	if err != nil {
		return err
	}
	opts := keydir.Options{
		Layout:   layout,
		Keystore: keystore.Options{KDF: kdf, Insecure: f.insecureKDF},
		Password: password,
		Workers:  f.workers,
		Logger:   logger,
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		opts.Progress = os.Stderr
	}
	report, err := keydir.Write(ctx, f.out, ks, opts)
	if err != nil {
		if cmd.Context().Err() != nil {
			return interruptedRequest(c, pod, f.out, len(report.Written), "while writing keystores")
		}
		return err
	}
	if f.legacyJSON != "" {
		if err := keydir.WriteLegacyJSON(f.legacyJSON, ks); err != nil {
			return err
		}
	}
	w := cmd.OutOrStdout()
	sp := "no slashing-protection history (the keys had no holder before)"
	switch {
	case spKeys > 0:
		sp = fmt.Sprintf("slashing-protection history of %d keys in %s", spKeys, spPath)
	case len(resp.GetGenesisValidatorsRoot()) == 0:
		sp = "no slashing-protection history (the server knows no chain parameters)"
	}
	if spRemoved {
		sp += "; stale " + spPath + " removed"
	}
	fmt.Fprintf(w, "pod %s holds %s (recycled %d, minted %d): %s written, %d kept, %s removed, in %s; %s\n",
		pod, plural(len(ks), "key"), resp.GetRecycled(), resp.GetMinted(), plural(len(report.Written), "keystore"), len(report.Kept),
		removedText(report), f.out, sp)
	for _, r := range report.Removed {
		what := "password file"
		switch {
		case slices.Contains(report.RemovedKeystores, r):
			what = "keystore"
		case slices.Contains(report.RemovedConfigs, r):
			what = "Web3Signer key configuration"
		}
		fmt.Fprintf(w, "  removed %s: %s\n", what, r)
	}
	if f.legacyJSON != "" {
		fmt.Fprintf(w, "wrote unencrypted legacy key file %s\n", f.legacyJSON)
	}
	return nil
}

// toKeydir checks the server's answer and converts it for the writer: every
// secret must be a valid key for its pubkey, so a corrupted answer is never
// written as a keystore a validator would start with.
func toKeydir(resp *pb.RequestKeysResponse) ([]keydir.Key, error) {
	out := make([]keydir.Key, 0, len(resp.GetKeys()))
	seen := make(map[[48]byte]bool, len(resp.GetKeys()))
	for _, k := range resp.GetKeys() {
		var pub [48]byte
		if len(k.GetPubkey()) != len(pub) {
			return nil, fmt.Errorf("server sent a public key of %d bytes", len(k.GetPubkey()))
		}
		copy(pub[:], k.GetPubkey())
		sk, err := keys.SecretKeyFromBytes(k.GetSecretKey())
		if err != nil {
			return nil, fmt.Errorf("server sent an invalid secret key for %#x: %w", pub, err)
		}
		match := sk.PublicKey() == pub
		secret := sk.Bytes()
		sk.Zero()
		if !match {
			clear(secret)
			return nil, fmt.Errorf("server sent a secret key that does not belong to %#x", pub)
		}
		if seen[pub] {
			clear(secret)
			return nil, fmt.Errorf("server sent key %#x twice", pub)
		}
		seen[pub] = true
		out = append(out, keydir.Key{Pubkey: pub, Secret: secret, Path: k.GetDerivationPath()})
	}
	if len(out) == 0 {
		return nil, errors.New("server sent no keys")
	}
	return out, nil
}

// checkSlashingProtection checks the server's interchange before it is
// written: format 5, for the chain the server names, well-formed, and only
// keys the pod was given. It returns how many keys it covers.
func checkSlashingProtection(resp *pb.RequestKeysResponse, ks []keydir.Key) (int, error) {
	data := resp.GetSlashingProtection()
	if len(data) == 0 {
		return 0, nil
	}
	var gvr [32]byte
	if len(resp.GetGenesisValidatorsRoot()) != len(gvr) {
		return 0, fmt.Errorf("server sent a slashing-protection history without the chain's genesis validators root (%d bytes)", len(resp.GetGenesisValidatorsRoot()))
	}
	copy(gvr[:], resp.GetGenesisValidatorsRoot())
	given := make(map[store.Pubkey]bool, len(ks))
	for _, k := range ks {
		given[k.Pubkey] = true
	}
	marks, err := slashing.Parse(data, gvr, func(pk store.Pubkey) error {
		if !given[pk] {
			return errors.New("not one of the keys the server sent")
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("server sent a bad slashing-protection history; nothing written: %w", err)
	}
	return len(marks), nil
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// plural is "1 key", "2 keys".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// removedText counts what Write removed: keystores (of keys the pod no
// longer holds, or unusable ones), Web3Signer key configurations and
// password files apart.
func removedText(r keydir.Report) string {
	ks, cf := len(r.RemovedKeystores), len(r.RemovedConfigs)
	pw := len(r.Removed) - ks - cf
	s := plural(ks, "keystore")
	if cf > 0 {
		s += ", " + plural(cf, "Web3Signer key configuration")
	}
	if pw > 0 {
		s += " and " + plural(pw, "password file")
	}
	return s
}
