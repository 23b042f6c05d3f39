package server

import (
	"context"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/redact"
)

// scrubbedChain is the execution node's client as the server's parts (the
// depositor, the deposit index) see it: every error leaves it scrubbed
// (package redact). go-ethereum's errors quote the node's URL ("Post
// \"https://host/v3/KEY\": dial tcp ..."), which often holds an API key,
// and they end up in logs, API answers and /assignments. A scrubbed error
// unwraps to the original, so errors.Is(err, ethereum.NotFound) and the
// JSON-RPC error interfaces still work.
type scrubbedChain struct{ c depositor.Chain }

var _ depositor.Chain = scrubbedChain{}

func (s scrubbedChain) ChainID(ctx context.Context) (*big.Int, error) {
	v, err := s.c.ChainID(ctx)
	return v, redact.Error(err)
}

func (s scrubbedChain) BlockNumber(ctx context.Context) (uint64, error) {
	v, err := s.c.BlockNumber(ctx)
	return v, redact.Error(err)
}

func (s scrubbedChain) HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error) {
	v, err := s.c.HeaderByNumber(ctx, number)
	return v, redact.Error(err)
}

func (s scrubbedChain) BalanceAt(ctx context.Context, account common.Address, blockNumber *big.Int) (*big.Int, error) {
	v, err := s.c.BalanceAt(ctx, account, blockNumber)
	return v, redact.Error(err)
}

func (s scrubbedChain) NonceAt(ctx context.Context, account common.Address, blockNumber *big.Int) (uint64, error) {
	v, err := s.c.NonceAt(ctx, account, blockNumber)
	return v, redact.Error(err)
}

func (s scrubbedChain) SuggestGasTipCap(ctx context.Context) (*big.Int, error) {
	v, err := s.c.SuggestGasTipCap(ctx)
	return v, redact.Error(err)
}

func (s scrubbedChain) EstimateGas(ctx context.Context, call ethereum.CallMsg) (uint64, error) {
	v, err := s.c.EstimateGas(ctx, call)
	return v, redact.Error(err)
}

func (s scrubbedChain) CallContract(ctx context.Context, call ethereum.CallMsg, blockNumber *big.Int) ([]byte, error) {
	v, err := s.c.CallContract(ctx, call, blockNumber)
	return v, redact.Error(err)
}

func (s scrubbedChain) CodeAt(ctx context.Context, account common.Address, blockNumber *big.Int) ([]byte, error) {
	v, err := s.c.CodeAt(ctx, account, blockNumber)
	return v, redact.Error(err)
}

func (s scrubbedChain) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	return redact.Error(s.c.SendTransaction(ctx, tx))
}

func (s scrubbedChain) TransactionReceipt(ctx context.Context, txHash common.Hash) (*types.Receipt, error) {
	v, err := s.c.TransactionReceipt(ctx, txHash)
	return v, redact.Error(err)
}

func (s scrubbedChain) TransactionByHash(ctx context.Context, hash common.Hash) (*types.Transaction, bool, error) {
	tx, pending, err := s.c.TransactionByHash(ctx, hash)
	return tx, pending, redact.Error(err)
}

func (s scrubbedChain) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	v, err := s.c.FilterLogs(ctx, q)
	return v, redact.Error(err)
}
