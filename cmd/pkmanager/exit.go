package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/attestantio/go-eth2-client/spec/phase0"
	"github.com/spf13/cobra"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/exits"
	"github.com/pkmanager/pkmanager/internal/store"
)

// exitFlags are the flags exit and retire --exit share.
type exitFlags struct {
	out    string
	force  bool
	reason string
}

func (f *exitFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.out, "out", "", "write the signed exits into this directory (staking-deposit-cli's signed_exit_transaction-<index>-<time>.json, 0600) instead of submitting them")
	cmd.Flags().StringVar(&f.reason, "reason", "", "reason recorded in the audit trail")
}

func parsePubkeys(flag string, values []string) ([]store.Pubkey, error) {
	out := make([]store.Pubkey, len(values))
	for i, s := range values {
		pk, err := store.ParsePubkey(s)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		out[i] = pk
	}
	return out, nil
}

// runExit asks the server for exits and writes or reports them.
func runExit(cmd *cobra.Command, g *globalFlags, cf *clientFlags, f *exitFlags, req *pb.ExitKeysRequest) error {
	if f.out != "" {
		st, err := os.Stat(f.out)
		if err != nil || !st.IsDir() {
			return fmt.Errorf("--out %s: not a directory", f.out)
		}
	}
	req.Submit = f.out == ""
	req.Force = f.force
	req.Reason = f.reason
	c, ctx, done, err := cf.connect(cmd, g)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.ExitKeys(ctx, req)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	now := time.Now()
	for _, e := range resp.GetExits() {
		if err := reportExit(w, f.out, e, now); err != nil {
			return err
		}
	}
	if msg := resp.GetSubmitError(); msg != "" {
		return errors.New(msg)
	}
	return nil
}

func reportExit(w io.Writer, dir string, e *pb.SignedExit, now time.Time) error {
	pk := store.Pubkey(e.GetPubkey())
	if dir == "" {
		state := "submitted to the beacon node"
		if !e.GetSubmitted() {
			state = "NOT submitted (see the error below)"
		}
		fmt.Fprintf(w, "validator %d (key %s): voluntary exit at epoch %d %s; the key is exiting and never handed out again\n",
			e.GetValidatorIndex(), pk, e.GetEpoch(), state)
		return nil
	}
	if len(e.GetSignature()) != 96 {
		return fmt.Errorf("the server sent a %d-byte signature for key %s", len(e.GetSignature()), pk)
	}
	se := &phase0.SignedVoluntaryExit{
		Message:   &phase0.VoluntaryExit{Epoch: phase0.Epoch(e.GetEpoch()), ValidatorIndex: phase0.ValidatorIndex(e.GetValidatorIndex())},
		Signature: phase0.BLSSignature(e.GetSignature()),
	}
	path, err := exits.WriteFile(dir, se, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "validator %d (key %s): signed voluntary exit written to %s (submit it with any beacon node: POST /eth/v1/beacon/pool/voluntary_exits); the key is exiting and never handed out again\n",
		e.GetValidatorIndex(), pk, path)
	return nil
}

func newExitCommand(g *globalFlags) *cobra.Command {
	var (
		cf      clientFlags
		f       exitFlags
		pubkeys []string
	)
	cmd := &cobra.Command{
		Use:   "exit --pubkey 0x... [--out DIR]",
		Short: "Sign voluntary exits of validators and submit them (or write them for offline submission)",
		Long: `The server signs a voluntary exit with each key (consensus spec; since EIP-7044 signed
over the Capella fork version, so it stays valid) and submits it to its beacon node
(--beacon-url), or with --out hands it back and this command writes it in
staking-deposit-cli's signed-exit format. The key becomes exiting first and is never
handed out again; once the chain shows it exited it is retired. An exit cannot be undone.

A key a pod holds is refused: its validator client signs with it, and exiting takes
it from the pod (the pod drops it at its next request and misses its duties until the
exit epoch). --force exits it anyway. The validator must be active on the beacon chain.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(pubkeys) == 0 {
				return fmt.Errorf("--pubkey is required")
			}
			pks, err := parsePubkeys("pubkey", pubkeys)
			if err != nil {
				return err
			}
			req := &pb.ExitKeysRequest{}
			for _, pk := range pks {
				req.Pubkeys = append(req.Pubkeys, pk[:])
			}
			return runExit(cmd, g, &cf, &f, req)
		},
	}
	cf.register(cmd, time.Minute)
	f.register(cmd)
	cmd.Flags().StringSliceVar(&pubkeys, "pubkey", nil, "public key to exit (0x hex; repeatable, comma-separated)")
	cmd.Flags().BoolVar(&f.force, "force", false, "also exit keys pods hold (they leave the pods)")
	return cmd
}

func newRetireCommand(g *globalFlags) *cobra.Command {
	var (
		cf      clientFlags
		f       exitFlags
		pubkeys []string
		count   int
		exit    bool
	)
	cmd := &cobra.Command{
		Use:   "retire (--pubkey 0x... --reason R | --count N --exit [--out DIR])",
		Short: "Take keys out of circulation for good; with --count N --exit, exit N unassigned validators to shrink a fleet",
		Long: `--pubkey P retires keys: never handed out again (a key a pod holds leaves it). Their
validators are not exited: exit them with pkmanager exit, or they stay active with nobody
signing.

--count N --exit picks the N unassigned (available) keys idle longest whose validators are
active, and exits them as pkmanager exit does: they are exiting at once, and retired when
the chain shows them exited.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case count > 0 && len(pubkeys) > 0:
				return fmt.Errorf("give --pubkey or --count, not both")
			case count > 0 && !exit:
				return fmt.Errorf("--count needs --exit: retiring deposited keys without exiting them leaves their validators active with nobody signing")
			case count > 0:
				return runExit(cmd, g, &cf, &f, &pb.ExitKeysRequest{Count: uint32(count)})
			case count < 0:
				return fmt.Errorf("--count %d is negative", count)
			case len(pubkeys) == 0:
				return fmt.Errorf("--pubkey or --count is required")
			}
			pks, err := parsePubkeys("pubkey", pubkeys)
			if err != nil {
				return err
			}
			if exit {
				req := &pb.ExitKeysRequest{}
				for _, pk := range pks {
					req.Pubkeys = append(req.Pubkeys, pk[:])
				}
				return runExit(cmd, g, &cf, &f, req)
			}
			if f.reason == "" {
				return fmt.Errorf("--reason is required")
			}
			c, ctx, done, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			for _, pk := range pks {
				if err := c.RetireKey(ctx, pk[:], f.reason); err != nil {
					return fmt.Errorf("key %s: %w", pk, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %s retired: never handed out again (its validator was not exited)\n", pk)
			}
			return nil
		},
	}
	cf.register(cmd, time.Minute)
	f.register(cmd)
	cmd.Flags().StringSliceVar(&pubkeys, "pubkey", nil, "public key to retire (0x hex; repeatable, comma-separated)")
	cmd.Flags().IntVar(&count, "count", 0, "with --exit: exit this many unassigned keys, idle longest first")
	cmd.Flags().BoolVar(&exit, "exit", false, "exit the validators (signed voluntary exits) instead of only retiring the keys")
	return cmd
}
