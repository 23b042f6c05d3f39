package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/keys"
)

// registerPassphraseFlag adds --mnemonic-passphrase-file beside a command's
// --mnemonic-file.
func registerPassphraseFlag(fl *pflag.FlagSet, p *string) {
	fl.StringVar(p, "mnemonic-passphrase-file", "", "file with the mnemonic's BIP-39 passphrase (the \"25th word\"; one trailing newline is ignored); without it the passphrase is empty")
}

// mnemonicSeed reads the mnemonic file and the passphrase file (optional)
// and returns the BIP-39 seed. Errors name the files, never their content.
func mnemonicSeed(mnemonicFile, passphraseFile string) ([]byte, error) {
	mnemonic, err := keys.ReadMnemonicFile(mnemonicFile)
	if err != nil {
		return nil, fmt.Errorf("--mnemonic-file: %w", err)
	}
	var passphrase string
	if passphraseFile != "" {
		b, err := os.ReadFile(passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("--mnemonic-passphrase-file: %w", err)
		}
		passphrase = trimNewline(string(b))
		clear(b)
		if passphrase == "" {
			return nil, fmt.Errorf("--mnemonic-passphrase-file %s is empty: leave the flag out for the empty passphrase", passphraseFile)
		}
	}
	seed, err := keys.SeedFromMnemonic(mnemonic, passphrase)
	if err != nil {
		return nil, fmt.Errorf("--mnemonic-file: %w", err)
	}
	return seed, nil
}

func newMnemonicCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mnemonic",
		Short: "BIP-39 mnemonics to derive keys from",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newMnemonicNewCommand())
	return cmd
}

func newMnemonicNewCommand() *cobra.Command {
	var out string
	var words int
	var show bool
	cmd := &cobra.Command{
		Use:   "new --out FILE",
		Short: "Write a new random BIP-39 mnemonic to a file (mode 0600) for serve/import --mnemonic-file",
		Long: `Write a new random BIP-39 English mnemonic (crypto/rand entropy, SHA-256
checksum) to FILE, mode 0600; an existing file is never overwritten. The words
are not printed unless --show asks for them. Keep a copy offline: every key the
server derives from it (EIP-2334 m/12381/3600/i/0/0) can be rebuilt from it, and
nothing else can rebuild them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out FILE is required")
			}
			m, err := keys.NewMnemonic(words)
			if err != nil {
				return fmt.Errorf("--words: %w", err)
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("--out %s exists: a mnemonic file is never overwritten", out)
			}
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			_, err = f.WriteString(m + "\n")
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return fmt.Errorf("--out: %w", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote a new %d-word BIP-39 mnemonic to %s (mode 0600); keep a copy offline\n", words, out)
			if show {
				fmt.Fprintln(w, m)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&out, "out", "", "file to create (never overwritten)")
	fl.IntVar(&words, "words", 24, "number of words: 12, 15, 18, 21 or 24")
	fl.BoolVar(&show, "show", false, "also print the words")
	return cmd
}
