package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// clientFlags are shared by the commands that talk to a server.
type clientFlags struct {
	server  string
	timeout time.Duration
	sec     clientSecurity // client_auth.go
}

func (c *clientFlags) register(cmd *cobra.Command, timeout time.Duration) {
	cmd.Flags().StringVar(&c.server, "server", "127.0.0.1:8000", "gRPC address of the pkmanager server (host:port)")
	cmd.Flags().DurationVar(&c.timeout, "timeout", timeout, "give up after this long; while the server is unreachable the call is retried with backoff")
	c.sec.register(cmd)
}

// connect prepares a client and a context bounded by --timeout. The caller
// calls done when finished.
func (c *clientFlags) connect(cmd *cobra.Command, g *globalFlags) (cl *client.Client, ctx context.Context, done func(), err error) {
	if cl, err = c.dial(cmd, g); err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	return cl, ctx, func() { cancel(); cl.Close() }, nil
}

// dial prepares a client of --server with the TLS and token flags.
func (c *clientFlags) dial(cmd *cobra.Command, g *globalFlags) (*client.Client, error) {
	logger, err := g.logger()
	if err != nil {
		return nil, err
	}
	sec, err := c.sec.resolve(cmd)
	if err != nil {
		return nil, err
	}
	return client.New(c.server, client.Options{Logger: logger, Security: sec})
}

func newReleaseCommand(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var pf podFlags
	var podUID, spFile string
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Return a pod's keys to the pool (they are reused after the server's reuse delay)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pod, err := pf.resolve(cmd)
			if err != nil {
				return err
			}
			var sp []byte
			if spFile != "" {
				if sp, err = readSlashingProtection(spFile); err != nil {
					return err
				}
			}
			c, ctx, done, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ReleaseKeys(ctx, pod, podUID, sp)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.GetMessage())
			return nil
		},
	}
	cf.register(cmd, time.Minute)
	pf.register(cmd, "pod whose keys to release")
	cmd.Flags().StringVar(&podUID, "pod-uid", "", "release only if the keys are held under this pod UID")
	cmd.Flags().StringVar(&spFile, "slashing-protection", "", "EIP-3076 slashing-protection interchange (format 5) the pod's validator client exported after it stopped: "+
		"recorded with the release for the keys' next holders; a bad file, or a key the pod does not hold, refuses the release")
	return cmd
}

// readSlashingProtection reads an interchange file for an upload.
func readSlashingProtection(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--slashing-protection: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("--slashing-protection %s: not a regular file", path)
	}
	if fi.Size() > slashing.MaxFileBytes {
		return nil, fmt.Errorf("--slashing-protection %s: %d bytes, more than the %d the server accepts; export the history minified (only the highest records count)",
			path, fi.Size(), slashing.MaxFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--slashing-protection: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("--slashing-protection %s: the file is empty", path)
	}
	return data, nil
}

func newDepositDataCommand(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var out string
	var all bool
	cmd := &cobra.Command{
		Use:   "deposit-data",
		Short: "Export the deposit data of the keys whose deposits are not on chain (staking-deposit-cli deposit_data-*.json format)",
		Long: `Write the deposit data of the server's keys in staking-deposit-cli's deposit_data-*.json
format, for a deposit tool (the launchpad, ethdo, a script). So that feeding the file
to such a tool can never pay a deposit twice, only keys whose deposit is not on chain
are exported, and not keys pending deposit (the server sends those itself); the
command says how many it left out. The server must see the chain for this (chain
mode, or --deposits export with --eth1-rpc and --deposit-contract); without it the
command fails unless --all is given. --all exports every key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			list, err := c.DepositData(ctx)
			if err != nil {
				return err
			}
			cands := make([]deposit.ExportCandidate, 0, len(list))
			for _, d := range list {
				e, err := cliEntry(d)
				if err != nil {
					return err
				}
				cands = append(cands, deposit.ExportCandidate{Entry: e, State: store.State(d.GetState()), Status: chainStatus(d.GetStatus())})
			}
			entries, omitted, err := deposit.SelectForExport(cands, all)
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				if omitted.Total() > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "no deposit to export (no file written): %s\n", omitted)
					return nil
				}
				return errors.New("no key has deposit data")
			}
			for _, e := range entries {
				// Check every signature and root before an operator can
				// submit the file: a bad deposit loses its 32 ETH.
				if err := e.Verify(keys.Verify); err != nil {
					return fmt.Errorf("deposit data of key 0x%s does not verify; not writing the file: %w", e.Pubkey, err)
				}
			}
			data, err := deposit.MarshalCLI(entries)
			if err != nil {
				return err
			}
			if out == "" {
				out = deposit.CLIFileName(time.Now())
			}
			if err := writeFileAtomic(out, data, 0o644); err != nil {
				return err
			}
			msg := fmt.Sprintf("wrote deposit data of %d keys to %s", len(entries), out)
			if omitted.Total() > 0 {
				msg += "; " + omitted.String()
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	cf.register(cmd, time.Minute)
	cmd.Flags().StringVar(&out, "out", "", "output file (default deposit_data-<unix time>.json in the current directory)")
	cmd.Flags().BoolVar(&all, "all", false, "export every key's deposit data, also deposits already on chain (a deposit tool pays those again)")
	return cmd
}

// chainStatus reads the wire status of a deposit.
func chainStatus(s pb.DepositStatus) deposit.ChainStatus {
	switch s {
	case pb.DepositStatus_DEPOSIT_STATUS_ON_CHAIN:
		return deposit.StatusOnChain
	case pb.DepositStatus_DEPOSIT_STATUS_NOT_ON_CHAIN:
		return deposit.StatusNotOnChain
	}
	return deposit.StatusUnknown
}

// cliEntry converts a wire DepositData into the staking-deposit-cli format.
func cliEntry(d *pb.DepositData) (deposit.CLIEntry, error) {
	var pub store.Pubkey
	var dd store.DepositData
	if len(d.GetPubkey()) != len(pub) || len(d.GetWithdrawalCredentials()) != 32 || len(d.GetSignature()) != 96 ||
		len(d.GetDepositMessageRoot()) != 32 || len(d.GetDepositDataRoot()) != 32 || len(d.GetForkVersion()) != 4 {
		return deposit.CLIEntry{}, fmt.Errorf("server sent malformed deposit data for key %x", d.GetPubkey())
	}
	copy(pub[:], d.GetPubkey())
	copy(dd.WithdrawalCredentials[:], d.GetWithdrawalCredentials())
	copy(dd.Signature[:], d.GetSignature())
	copy(dd.DepositMessageRoot[:], d.GetDepositMessageRoot())
	copy(dd.DepositDataRoot[:], d.GetDepositDataRoot())
	copy(dd.ForkVersion[:], d.GetForkVersion())
	dd.AmountGwei = d.GetAmount()
	dd.NetworkName = d.GetNetworkName()
	return deposit.ToCLIEntry(pub, dd), nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
