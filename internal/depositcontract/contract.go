// Package depositcontract holds the official Ethereum validator deposit
// contract: its ABI and creation bytecode, calldata for deposit(), decoding of
// DepositEvent logs, reading the deposit count, and deploying it on a devnet.
//
// abi.json and bytecode.bin are the artifacts of the consensus specs'
// solidity_deposit_contract (deposit_contract.sol, solc 0.6.11, CC0-1.0), as
// copied into github.com/OffchainLabs/prysm/v6@v6.1.4/contracts/deposit. The
// runtime code they deploy is the code of the mainnet deposit contract.
package depositcontract

import (
	"context"
	"crypto/ecdsa"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

var (
	//go:embed abi.json
	abiJSON string
	//go:embed bytecode.bin
	bytecodeHex string
)

// ABI is the deposit contract's ABI.
var ABI = func() abi.ABI {
	a, err := abi.JSON(strings.NewReader(abiJSON))
	if err != nil {
		panic(fmt.Sprintf("depositcontract: embedded ABI: %v", err))
	}
	return a
}()

// DepositEventTopic is topic 0 of DepositEvent logs.
var DepositEventTopic = ABI.Events["DepositEvent"].ID

// Bytecode returns the contract's creation code.
func Bytecode() []byte {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(bytecodeHex), "0x"))
	if err != nil {
		panic(fmt.Sprintf("depositcontract: embedded bytecode: %v", err))
	}
	return b
}

// PackDeposit returns the calldata of deposit(pubkey, withdrawal_credentials,
// signature, deposit_data_root). The amount is the transaction's value.
func PackDeposit(pubkey [48]byte, withdrawalCredentials [32]byte, signature [96]byte, dataRoot [32]byte) []byte {
	data, err := ABI.Pack("deposit", pubkey[:], withdrawalCredentials[:], signature[:], dataRoot)
	if err != nil {
		// Fixed-size arguments of the right types: packing cannot fail.
		panic(fmt.Sprintf("depositcontract: pack deposit: %v", err))
	}
	return data
}

// GweiToWei converts a deposit amount in gwei to the transaction value in wei.
func GweiToWei(gwei uint64) *big.Int {
	return new(big.Int).Mul(new(big.Int).SetUint64(gwei), big.NewInt(1_000_000_000))
}

// Event is one decoded DepositEvent.
type Event struct {
	Pubkey                [48]byte
	WithdrawalCredentials [32]byte
	AmountGwei            uint64
	Signature             [96]byte
	// Index is the deposit's index in the contract (its deposit count before it).
	Index    uint64
	Block    uint64
	TxHash   common.Hash
	LogIndex uint
	Removed  bool
}

// ParseEvent decodes a DepositEvent log. The contract encodes amount and index
// as 8-byte little-endian values.
func ParseEvent(l types.Log) (Event, error) {
	var e Event
	if len(l.Topics) == 0 || l.Topics[0] != DepositEventTopic {
		return e, errors.New("not a DepositEvent log")
	}
	vals, err := ABI.Unpack("DepositEvent", l.Data)
	if err != nil {
		return e, fmt.Errorf("decode DepositEvent: %w", err)
	}
	if len(vals) != 5 {
		return e, fmt.Errorf("decode DepositEvent: %d fields, want 5", len(vals))
	}
	field := func(i, size int, name string) ([]byte, error) {
		b, ok := vals[i].([]byte)
		if !ok || len(b) != size {
			return nil, fmt.Errorf("decode DepositEvent: %s has %d bytes, want %d", name, len(b), size)
		}
		return b, nil
	}
	pk, err := field(0, 48, "pubkey")
	if err != nil {
		return e, err
	}
	wc, err := field(1, 32, "withdrawal_credentials")
	if err != nil {
		return e, err
	}
	amount, err := field(2, 8, "amount")
	if err != nil {
		return e, err
	}
	sig, err := field(3, 96, "signature")
	if err != nil {
		return e, err
	}
	index, err := field(4, 8, "index")
	if err != nil {
		return e, err
	}
	copy(e.Pubkey[:], pk)
	copy(e.WithdrawalCredentials[:], wc)
	copy(e.Signature[:], sig)
	e.AmountGwei = binary.LittleEndian.Uint64(amount)
	e.Index = binary.LittleEndian.Uint64(index)
	e.Block, e.TxHash, e.LogIndex, e.Removed = l.BlockNumber, l.TxHash, l.Index, l.Removed
	return e, nil
}

// Caller reads contract state.
type Caller interface {
	CallContract(ctx context.Context, call ethereum.CallMsg, blockNumber *big.Int) ([]byte, error)
}

// DepositCount returns get_deposit_count() of the contract at addr at block
// (nil: latest).
func DepositCount(ctx context.Context, c Caller, addr common.Address, block *big.Int) (uint64, error) {
	data, err := ABI.Pack("get_deposit_count")
	if err != nil {
		return 0, err
	}
	out, err := c.CallContract(ctx, ethereum.CallMsg{To: &addr, Data: data}, block)
	if err != nil {
		return 0, fmt.Errorf("call get_deposit_count on %s: %w", addr, err)
	}
	vals, err := ABI.Unpack("get_deposit_count", out)
	if err != nil {
		return 0, fmt.Errorf("get_deposit_count on %s: %w (is it a deposit contract?)", addr, err)
	}
	b, ok := vals[0].([]byte)
	if !ok || len(b) != 8 {
		return 0, fmt.Errorf("get_deposit_count on %s returned %d bytes, want 8 (is it a deposit contract?)", addr, len(b))
	}
	return binary.LittleEndian.Uint64(b), nil
}

// DepositRoot returns get_deposit_root() of the contract at addr.
func DepositRoot(ctx context.Context, c Caller, addr common.Address, block *big.Int) ([32]byte, error) {
	data, err := ABI.Pack("get_deposit_root")
	if err != nil {
		return [32]byte{}, err
	}
	out, err := c.CallContract(ctx, ethereum.CallMsg{To: &addr, Data: data}, block)
	if err != nil {
		return [32]byte{}, fmt.Errorf("call get_deposit_root on %s: %w", addr, err)
	}
	vals, err := ABI.Unpack("get_deposit_root", out)
	if err != nil {
		return [32]byte{}, fmt.Errorf("get_deposit_root on %s: %w", addr, err)
	}
	root, _ := vals[0].([32]byte)
	return root, nil
}

// LogFilterer reads logs.
type LogFilterer interface {
	FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error)
}

// Events returns the DepositEvents of the contract at addr in blocks
// [from, to], asking for at most chunk blocks at a time (0: all at once), in
// chain order.
func Events(ctx context.Context, c LogFilterer, addr common.Address, from, to, chunk uint64) ([]Event, error) {
	var out []Event
	if chunk == 0 {
		chunk = to - from + 1
	}
	for start := from; start <= to; start += chunk {
		end := min(to, start+chunk-1)
		logs, err := c.FilterLogs(ctx, ethereum.FilterQuery{
			FromBlock: new(big.Int).SetUint64(start), ToBlock: new(big.Int).SetUint64(end),
			Addresses: []common.Address{addr}, Topics: [][]common.Hash{{DepositEventTopic}},
		})
		if err != nil {
			return nil, fmt.Errorf("read deposit events of %s in blocks %d to %d: %w", addr, start, end, err)
		}
		for _, l := range logs {
			if l.Removed {
				continue
			}
			e, err := ParseEvent(l)
			if err != nil {
				return nil, fmt.Errorf("block %d tx %s: %w", l.BlockNumber, l.TxHash, err)
			}
			out = append(out, e)
		}
		if end == to {
			break
		}
	}
	return out, nil
}

// Backend is what deploying needs from a chain client (*ethclient.Client and
// the simulated backend's client both are one).
type Backend interface {
	ChainID(ctx context.Context) (*big.Int, error)
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	EstimateGas(ctx context.Context, call ethereum.CallMsg) (uint64, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
	TransactionReceipt(ctx context.Context, txHash common.Hash) (*types.Receipt, error)
	CodeAt(ctx context.Context, account common.Address, blockNumber *big.Int) ([]byte, error)
}

// Deployment is the outcome of Deploy.
type Deployment struct {
	Address common.Address
	TxHash  common.Hash
	Block   uint64
	ChainID *big.Int
}

// Deploy deploys the deposit contract from key's account with an EIP-1559
// transaction and waits (polling every poll) for it to be mined. maxFee caps
// the fee per gas (nil: no cap).
func Deploy(ctx context.Context, b Backend, key *ecdsa.PrivateKey, maxFee *big.Int, poll time.Duration) (Deployment, error) {
	from := crypto.PubkeyToAddress(key.PublicKey)
	chainID, err := b.ChainID(ctx)
	if err != nil {
		return Deployment{}, fmt.Errorf("read chain ID: %w", err)
	}
	nonce, err := b.PendingNonceAt(ctx, from)
	if err != nil {
		return Deployment{}, fmt.Errorf("read nonce of %s: %w", from, err)
	}
	head, err := b.HeaderByNumber(ctx, nil)
	if err != nil {
		return Deployment{}, fmt.Errorf("read latest block: %w", err)
	}
	tip, err := b.SuggestGasTipCap(ctx)
	if err != nil {
		return Deployment{}, fmt.Errorf("suggest gas tip: %w", err)
	}
	feeCap := new(big.Int).Add(tip, new(big.Int).Mul(baseFee(head), big.NewInt(2)))
	if maxFee != nil && feeCap.Cmp(maxFee) > 0 {
		feeCap = new(big.Int).Set(maxFee)
		if tip.Cmp(feeCap) > 0 {
			tip = new(big.Int).Set(feeCap)
		}
	}
	code := Bytecode()
	gas, err := b.EstimateGas(ctx, ethereum.CallMsg{From: from, Data: code})
	if err != nil {
		return Deployment{}, fmt.Errorf("simulate the deployment from %s: %w", from, err)
	}
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas + gas/5, Data: code,
	})
	if err != nil {
		return Deployment{}, fmt.Errorf("sign the deployment: %w", err)
	}
	if err := b.SendTransaction(ctx, tx); err != nil {
		return Deployment{}, fmt.Errorf("send the deployment from %s: %w", from, err)
	}
	addr := crypto.CreateAddress(from, nonce)
	rcpt, err := WaitMined(ctx, b, tx.Hash(), poll)
	if err != nil {
		return Deployment{}, err
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return Deployment{}, fmt.Errorf("deployment transaction %s failed in block %d", tx.Hash(), rcpt.BlockNumber)
	}
	// The code as of the receipt's block: go-ethereum indexes a block's
	// transactions before it moves its head, so "latest" can still be the
	// block before for a moment.
	if code, err := b.CodeAt(ctx, addr, rcpt.BlockNumber); err != nil || len(code) == 0 {
		return Deployment{}, fmt.Errorf("no code at %s in block %d after the deployment: %v", addr, rcpt.BlockNumber, err)
	}
	return Deployment{Address: addr, TxHash: tx.Hash(), Block: rcpt.BlockNumber.Uint64(), ChainID: chainID}, nil
}

// WaitMined polls for the receipt of hash until it exists or ctx ends.
func WaitMined(ctx context.Context, b interface {
	TransactionReceipt(ctx context.Context, txHash common.Hash) (*types.Receipt, error)
}, hash common.Hash, poll time.Duration) (*types.Receipt, error) {
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		r, err := b.TransactionReceipt(ctx, hash)
		if err == nil && r != nil {
			return r, nil
		}
		if err != nil && !IsNotFound(err) {
			return nil, fmt.Errorf("receipt of %s: %w", hash, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for transaction %s to be mined: %w", hash, ctx.Err())
		case <-t.C:
		}
	}
}

// IsNotFound reports whether err from a transaction or receipt lookup means
// "not known (yet)": go-ethereum's NotFound, or a node still indexing
// transactions.
func IsNotFound(err error) bool {
	return errors.Is(err, ethereum.NotFound) || strings.Contains(err.Error(), "indexing is in progress")
}

func baseFee(h *types.Header) *big.Int {
	if h.BaseFee == nil {
		return big.NewInt(0)
	}
	return h.BaseFee
}
