package lodestar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/params"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/lodestartest"
)

// A Lodestar dev chain that follows an execution chain's deposit contract
// (Lodestar 1.5.1 `dev` with --eth1), so deposits pkmanager makes there
// become validators:
//
//   - the execution chain is the embedded dev chain (go-ethereum, package
//     devchain) with its JSON-RPC on loopback and a block every second;
//   - `lodestar dev` starts from the interop genesis state, which says
//     eth1_deposit_index = number of genesis validators. The contract
//     therefore first gets those validators' deposits (interop keys 0..N-1,
//     as the interop genesis has them), so that a later deposit's index is
//     the next validator's: the beacon node votes only for execution blocks
//     whose deposit count is at least the state's, and includes deposits
//     from eth1_deposit_index on;
//   - the chain config follows the dev chain: DEPOSIT_CONTRACT_ADDRESS,
//     DEPOSIT_CHAIN_ID/NETWORK_ID, and a short follow distance (below).
//
// Lodestar polls the execution node once a minute; with the minimal
// preset's 4-epoch voting periods (64 s at 2 s slots) a deposit was in the
// beacon state about 100 s after it was mined and active_ongoing about
// 4 min after it (measured on 2 loaded cores).

// minimalGenesisForkVersion is GENESIS_FORK_VERSION of the minimal preset's
// config, which `lodestar dev` runs (checked against the node's spec).
const minimalGenesisForkVersion = "0x00000001"

// The beacon node votes for execution blocks between 2*S*F and S*F seconds
// before the start of a voting period (S = SECONDS_PER_ETH1_BLOCK, F =
// ETH1_FOLLOW_DISTANCE; S*F = 32 s here). S is far above the dev chain's
// block time (1 s, about 2 s on a loaded machine): when the block F below
// the head is older than S*F seconds, Lodestar 1.5.1 raises a follow
// distance below 64 to 64 (ETH_MIN_FOLLOW_DISTANCE in its
// Eth1DepositDataTracker), after which no block it fetched is recent enough
// to vote for. With S = 2, F = 8 on a loaded machine that happened, and no
// deposit ever reached the chain.
const (
	eth1FollowDistance  = 4
	secondsPerEth1Block = 8
)

// el is the execution chain a Lodestar beacon node follows.
type el struct {
	chain *devchain.Chain
	// funderKeyFile holds the hex secp256k1 key (0600) of an account funded
	// at genesis that only pkmanager pays from (the test's own deposits
	// come from the dev account).
	funderKeyFile string
}

// startEL starts the embedded dev chain with JSON-RPC on a free loopback
// port and a block every second.
func startEL(t *testing.T) *el {
	t.Helper()
	funderKey, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	funder := crypto.PubkeyToAddress(funderKey.PublicKey)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := devchain.Start(ctx, devchain.Config{RPCAddr: "127.0.0.1:0", BlockTime: time.Second, IdleBlockTime: time.Second,
		Alloc: types.GenesisAlloc{funder: {Balance: new(big.Int).Mul(big.NewInt(100_000), big.NewInt(params.Ether))}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := &el{chain: c, funderKeyFile: filepath.Join(t.TempDir(), "funder.key")}
	if err := os.WriteFile(e.funderKeyFile, []byte(hex.EncodeToString(crypto.FromECDSA(funderKey))), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// chainParams are the chain config overrides that make the beacon node
// follow e's deposit contract.
func (e *el) chainParams() map[string]string {
	id := devchain.ChainID.String()
	return map[string]string{
		"DEPOSIT_CONTRACT_ADDRESS": e.chain.DepositContract().Hex(),
		"DEPOSIT_CHAIN_ID":         id,
		"DEPOSIT_NETWORK_ID":       id,
		"ETH1_FOLLOW_DISTANCE":     strconv.Itoa(eth1FollowDistance),
		"SECONDS_PER_ETH1_BLOCK":   strconv.Itoa(secondsPerEth1Block),
	}
}

// beaconArgs turn on Lodestar's eth1 deposit tracker against e.
func (e *el) beaconArgs() []string {
	return []string{"--eth1", "true", "--eth1.providerUrls", e.chain.RPCEndpoint(), "--eth1.depositContractDeployBlock", "0"}
}

// serveArgs are pkmanager serve's flags for on-chain deposits on e.
func (e *el) serveArgs() []string {
	return []string{"--deposits", "chain", "--eth1-rpc", e.chain.RPCEndpoint(), "--deposit-contract", e.chain.DepositContract().Hex(),
		"--funder-key-file", e.funderKeyFile, "--chain-id", devchain.ChainID.String()}
}

// depositInterop makes the 32 ETH deposits of interop keys 0..n-1 (BLS
// withdrawal credentials, signed over the minimal preset's genesis fork
// version) from the dev account and waits until they are mined.
func (e *el) depositInterop(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	fv, err := hex.DecodeString(strings.TrimPrefix(minimalGenesisForkVersion, "0x"))
	if err != nil {
		t.Fatal(err)
	}
	network, err := deposit.CustomNetwork("lodestar-dev", [4]byte(fv))
	if err != nil {
		t.Fatal(err)
	}
	cl := e.chain.Client()
	nonce, err := cl.PendingNonceAt(ctx, devchain.DevAddress())
	if err != nil {
		t.Fatal(err)
	}
	contract := e.chain.DepositContract()
	var last *types.Transaction
	for i := range n {
		sk := lodestartest.InteropSecretKey(i)
		pk := sk.PublicKey()
		wc := sha256.Sum256(pk[:])
		wc[0] = 0 // BLS_WITHDRAWAL_PREFIX
		d, err := deposit.Make(sk, deposit.Params{Network: network, WithdrawalCredentials: wc, AmountGwei: deposit.DefaultAmountGwei})
		if err != nil {
			t.Fatal(err)
		}
		data := depositcontract.PackDeposit(pk, d.WithdrawalCredentials, d.Signature, d.DepositDataRoot)
		value := depositcontract.GweiToWei(d.AmountGwei)
		if _, err := cl.EstimateGas(ctx, ethereum.CallMsg{From: devchain.DevAddress(), To: &contract, Value: value, Data: data}); err != nil {
			t.Fatalf("deposit of interop key %d: %v", i, err)
		}
		tx, err := types.SignNewTx(devchain.DevKey(), types.LatestSignerForChainID(devchain.ChainID), &types.DynamicFeeTx{
			ChainID: devchain.ChainID, Nonce: nonce, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9),
			Gas: depositor.DepositGasLimit, To: &contract, Value: value, Data: data,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.SendTransaction(ctx, tx); err != nil {
			t.Fatal(err)
		}
		last = tx
		nonce++
	}
	r, err := depositcontract.WaitMined(ctx, cl, last.Hash(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("deposit transaction %s failed", last.Hash())
	}
	if got, err := depositcontract.DepositCount(ctx, cl, contract, nil); err != nil || got != uint64(n) {
		t.Fatalf("deposit count %d (%v) after the %d genesis deposits", got, err, n)
	}
}

// depositsByPubkey counts the contract's deposits per 0x-prefixed pubkey.
func (e *el) depositsByPubkey(t *testing.T) (map[string]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	head, err := e.chain.Client().BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := depositcontract.Events(ctx, e.chain.Client(), e.chain.DepositContract(), 0, head, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, ev := range evs {
		out["0x"+hex.EncodeToString(ev.Pubkey[:])]++
	}
	return out, len(evs)
}
