package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/depositindex"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/store"
)

// The server's view of the deposit contract (the deposit index), when it
// has an execution node: in chain mode, and in export mode with --eth1-rpc.
// It answers which deposits are already on chain for deposit-data exports,
// recovery of deposit-failed keys and the minting of derived keys.

// index returns the deposit index, or nil without a view of the chain.
func (s *Server) index() *depositindex.Index {
	if s.deposits == nil {
		return nil
	}
	return s.deposits.index
}

// DepositStatuses says for each of keys whether its deposit is on chain: a
// deposit the server recorded as confirmed is; otherwise the deposit index
// decides, and without one the status is unknown.
func (s *Server) DepositStatuses(ctx context.Context, keys []store.Key) ([]deposit.OnChain, error) {
	out := make([]deposit.OnChain, len(keys))
	var ask []store.Pubkey
	for i, k := range keys {
		if k.DepositTx != nil && k.DepositTx.Block > 0 {
			out[i] = deposit.OnChain{Status: deposit.StatusOnChain, Block: k.DepositTx.Block}
			continue
		}
		ask = append(ask, k.Pubkey)
	}
	ix := s.index()
	if ix == nil || len(ask) == 0 {
		return out, nil
	}
	found, err := ix.Find(ctx, ask)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", deposit.ErrChainUnknown, err)
	}
	for i, k := range keys {
		if out[i].Status == deposit.StatusOnChain {
			continue
		}
		out[i].Status = deposit.StatusNotOnChain
		if e, ok := found[k.Pubkey]; ok {
			out[i] = deposit.OnChain{Status: deposit.StatusOnChain, Block: e.Block}
		}
	}
	return out, nil
}

// RecoverKey returns a deposit-failed key to the pool once its deposit is
// on chain with the key's own withdrawal credentials and amount.
func (s *Server) RecoverKey(ctx context.Context, pubkey store.Pubkey) (store.Key, depositcontract.Event, error) {
	var none depositcontract.Event
	k, err := s.store.GetKey(ctx, pubkey)
	if err != nil {
		return store.Key{}, none, fmt.Errorf("recover key %s: %w", pubkey, err)
	}
	if k.State != store.StateDepositFailed {
		return store.Key{}, none, fmt.Errorf("recover key %s: it is %s; only deposit-failed keys are recovered: %w", pubkey, k.State, store.ErrWrongState)
	}
	ix := s.index()
	if ix == nil {
		return store.Key{}, none, fmt.Errorf("recover key %s: %w: the server has no view of the chain (start it with --eth1-rpc and --deposit-contract)", pubkey, deposit.ErrChainUnknown)
	}
	found, err := ix.Find(ctx, []store.Pubkey{pubkey})
	if err != nil {
		return store.Key{}, none, fmt.Errorf("recover key %s: %w: %w", pubkey, deposit.ErrChainUnknown, err)
	}
	e, ok := found[pubkey]
	if !ok {
		return store.Key{}, none, fmt.Errorf("recover key %s: %w up to block %d: deposit it first (its deposit data: pkmanager deposit-data), then run this again",
			pubkey, deposit.ErrNotOnChain, ix.LastSync().Head)
	}
	if why := depositor.ForeignDeposit(k.Deposit, e); why != "" {
		return store.Key{}, none, fmt.Errorf("recover key %s: %s; it stays deposit-failed: %w", pubkey, why, store.ErrWrongState)
	}
	reason := fmt.Sprintf("deposit found on chain (tx %s, block %d)", e.TxHash.Hex(), e.Block)
	rk, err := s.store.RecoverDeposit(ctx, pubkey, e.Block, reason, s.now())
	if err != nil {
		return store.Key{}, none, fmt.Errorf("recover key %s: %w", pubkey, err)
	}
	s.logger.InfoContext(ctx, "deposit-failed key recovered: its deposit is on chain; it is available",
		slog.String("pubkey", pubkey.String()), slog.String("tx", e.TxHash.Hex()), slog.Uint64("block", e.Block))
	return rk, e, nil
}

// DepositsOnChain describes the deposit of each of pubkeys that has one on
// chain (mint.ChainChecker: derived keys skip indices whose keys have one);
// ok is false without a view of the chain.
func (s *Server) DepositsOnChain(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]string, bool, error) {
	ix := s.index()
	if ix == nil {
		return nil, false, nil
	}
	found, err := ix.Find(ctx, pubkeys)
	if err != nil {
		return nil, false, err
	}
	out := make(map[store.Pubkey]string, len(found))
	for pk, e := range found {
		out[pk] = fmt.Sprintf("tx %s, block %d", e.TxHash.Hex(), e.Block)
	}
	return out, true, nil
}
