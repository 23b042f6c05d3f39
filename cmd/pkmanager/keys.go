package main

import (
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/spf13/cobra"

	"github.com/pkmanager/pkmanager/internal/store"
)

// newKeysCommand groups the commands about single keys.
func newKeysCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Commands about single keys",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newKeysRecoverCommand(g), newKeysListCommand(g))
	return cmd
}

func newKeysRecoverCommand(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var pubkeys []string
	cmd := &cobra.Command{
		Use:   "recover --pubkey 0x...",
		Short: "Return deposit-failed keys to the pool once their deposits are on chain",
		Long: `A key whose deposit the server could not make (it reverted, or the contract
rejected it) is deposit-failed and never handed out. After depositing it by other
means (its deposit data: pkmanager deposit-data --all), run this command: the server
looks for the key's deposit on chain, checks that it carries the key's own
withdrawal credentials and amount, and makes the key available. Without such a
deposit nothing changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(pubkeys) == 0 {
				return fmt.Errorf("--pubkey is required")
			}
			pks := make([]store.Pubkey, len(pubkeys))
			for i, s := range pubkeys {
				pk, err := store.ParsePubkey(s)
				if err != nil {
					return fmt.Errorf("--pubkey: %w", err)
				}
				pks[i] = pk
			}
			c, ctx, done, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			for _, pk := range pks {
				resp, err := c.RecoverKey(ctx, pk[:])
				if err != nil {
					return fmt.Errorf("key %s: %w", pk, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %s is %s: its deposit is in block %d (tx %s)\n",
					pk, resp.GetKey().GetState(), resp.GetBlock(), common.BytesToHash(resp.GetTxHash()).Hex())
			}
			return nil
		},
	}
	cf.register(cmd, time.Minute)
	cmd.Flags().StringSliceVar(&pubkeys, "pubkey", nil, "public key to recover (0x hex; repeatable, comma-separated)")
	return cmd
}
