package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/spf13/cobra"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

func newDepositContractCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "deposit-contract",
		Short: "Deploy the official deposit contract on a devnet, or list its deposits",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newDeployCommand(g), newEventsCommand(g))
	return cmd
}

func dialChain(ctx context.Context, rawURL string) (*ethclient.Client, error) {
	if rawURL == "" {
		return nil, errors.New("--eth1-rpc is required")
	}
	c, err := ethclient.DialContext(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact.URL(rawURL), redact.Error(err))
	}
	return c, nil
}

func newDeployCommand(g *globalFlags) *cobra.Command {
	var rpcURL, keyFile string
	var maxFeeGwei uint64
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "Deploy the official Ethereum deposit contract (for devnets) and print its address",
		Long: `Deploy the official deposit contract (consensus specs, solc 0.6.11) from the funder
account with an EIP-1559 transaction, wait until it is mined, and print its address
(the only line on standard output) for --deposit-contract.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			if keyFile == "" {
				return errors.New("--funder-key-file is required")
			}
			key, warning, err := depositor.LoadFunderKey(keyFile)
			if err != nil {
				return err
			}
			if warning != "" {
				logger.Warn(warning)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := dialChain(ctx, rpcURL)
			if err != nil {
				return err
			}
			defer c.Close()
			var maxFee *big.Int
			if maxFeeGwei > 0 {
				maxFee = depositor.Gwei(maxFeeGwei)
			}
			from := crypto.PubkeyToAddress(key.PublicKey)
			d, err := depositcontract.Deploy(ctx, c, key, maxFee, 500*time.Millisecond)
			if err != nil {
				return fmt.Errorf("deploy from %s: %w", from.Hex(), err)
			}
			logger.Info("deposit contract deployed", "address", d.Address.Hex(), "chain_id", d.ChainID.String(),
				"block", d.Block, "tx", d.TxHash.Hex(), "from", from.Hex())
			fmt.Fprintln(cmd.OutOrStdout(), d.Address.Hex())
			return nil
		},
	}
	cmd.Flags().StringVar(&rpcURL, "eth1-rpc", "", "execution node JSON-RPC URL (HTTP or WebSocket)")
	cmd.Flags().StringVar(&keyFile, "funder-key-file", "", "file with the hex secp256k1 key of the deploying account")
	cmd.Flags().Uint64Var(&maxFeeGwei, "max-fee-gwei", depositor.DefaultMaxFeeGwei, "cap on the max fee per gas (gwei)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// eventJSON is one deposit in `deposit-contract events --format json`.
type eventJSON struct {
	Index                 uint64 `json:"index"`
	Pubkey                string `json:"pubkey"`
	WithdrawalCredentials string `json:"withdrawal_credentials"`
	AmountGwei            uint64 `json:"amount"`
	Signature             string `json:"signature"`
	Block                 uint64 `json:"block"`
	Tx                    string `json:"tx"`
	Valid                 *bool  `json:"signature_valid,omitempty"`
}

func newEventsCommand(g *globalFlags) *cobra.Command {
	var rpcURL, contract, format, forkVersion string
	var from uint64
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List the deposits (DepositEvent logs) of a deposit contract, optionally checking each signature",
		Long: `List the deposits of a deposit contract from its DepositEvent logs, one per line:
index, public key, withdrawal credentials, amount (gwei), block and transaction.
With --fork-version every deposit's BLS signature is verified for that genesis fork
version, and the command fails if any does not verify. It also fails if the number of
events differs from the contract's deposit count.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !common.IsHexAddress(contract) {
				return fmt.Errorf("--deposit-contract %q is not an address", contract)
			}
			addr := common.HexToAddress(contract)
			var fv *[4]byte
			if forkVersion != "" {
				v, err := deposit.ParseForkVersion(forkVersion)
				if err != nil {
					return fmt.Errorf("--fork-version: %w", err)
				}
				fv = &v
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := dialChain(ctx, rpcURL)
			if err != nil {
				return err
			}
			defer c.Close()
			head, err := c.BlockNumber(ctx)
			if err != nil {
				return err
			}
			events, err := depositcontract.Events(ctx, c, addr, from, head, 10_000)
			if err != nil {
				return err
			}
			count, err := depositcontract.DepositCount(ctx, c, addr, new(big.Int).SetUint64(head))
			if err != nil {
				return err
			}
			bad := 0
			out := make([]eventJSON, 0, len(events))
			for _, e := range events {
				ej := eventJSON{
					Index: e.Index, Pubkey: "0x" + hex.EncodeToString(e.Pubkey[:]),
					WithdrawalCredentials: "0x" + hex.EncodeToString(e.WithdrawalCredentials[:]),
					AmountGwei:            e.AmountGwei, Signature: "0x" + hex.EncodeToString(e.Signature[:]),
					Block: e.Block, Tx: e.TxHash.Hex(),
				}
				if fv != nil {
					ok := verifyEvent(e, *fv) == nil
					ej.Valid = &ok
					if !ok {
						bad++
					}
				}
				out = append(out, ej)
			}
			w := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				for _, e := range out {
					valid := ""
					if e.Valid != nil {
						valid = map[bool]string{true: " signature-ok", false: " SIGNATURE-INVALID"}[*e.Valid]
					}
					fmt.Fprintf(w, "%d %s %s %d block=%d tx=%s%s\n", e.Index, e.Pubkey, e.WithdrawalCredentials, e.AmountGwei, e.Block, e.Tx, valid)
				}
			}
			if from == 0 && uint64(len(events)) != count {
				return fmt.Errorf("%d deposit events but the contract counts %d deposits", len(events), count)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d deposits do not verify for fork version %s", bad, len(events), forkVersion)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&rpcURL, "eth1-rpc", "", "execution node JSON-RPC URL (HTTP or WebSocket)")
	cmd.Flags().StringVar(&contract, "deposit-contract", "", "address of the deposit contract")
	cmd.Flags().StringVar(&format, "format", "text", "text or json")
	cmd.Flags().StringVar(&forkVersion, "fork-version", "", "verify each deposit's signature for this genesis fork version (e.g. 0x10000038)")
	cmd.Flags().Uint64Var(&from, "from-block", 0, "first block to read")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// verifyEvent checks a deposit's signature and roots for a fork version.
func verifyEvent(e depositcontract.Event, forkVersion [4]byte) error {
	msgRoot, err := deposit.MessageRoot(e.Pubkey, e.WithdrawalCredentials, e.AmountGwei)
	if err != nil {
		return err
	}
	dataRoot, err := deposit.DataRoot(e.Pubkey, e.WithdrawalCredentials, e.AmountGwei, e.Signature)
	if err != nil {
		return err
	}
	return deposit.Verify(e.Pubkey, store.DepositData{
		WithdrawalCredentials: e.WithdrawalCredentials, AmountGwei: e.AmountGwei, Signature: e.Signature,
		DepositMessageRoot: msgRoot, DepositDataRoot: dataRoot, ForkVersion: forkVersion, NetworkName: networkName(forkVersion),
	}, keys.Verify)
}

// networkName names a genesis fork version: a public network's name, else
// "devnet".
func networkName(forkVersion [4]byte) string {
	for _, name := range deposit.NetworkNames() {
		if n, err := deposit.LookupNetwork(name); err == nil && n.GenesisForkVersion == forkVersion {
			return n.Name
		}
	}
	return "devnet"
}
