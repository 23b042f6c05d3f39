package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/pkmanager/pkmanager/internal/store"
)

// MintSpares mints n keys for no pod and has their deposits made on chain
// (the spare pool, package sparepool): the same path as a request's
// shortfall (requestOnChain) without a pod. The funds check comes first
// (ErrDepositsUnavailable when the funder cannot pay n more deposits at the
// fee cap: nothing is minted); the keys are stored as pending-deposit
// spares before the depositor is told, so a minted key is never lost and
// its deposit is sent once, by the sender; they become available once
// their deposits are confirmed. It needs Config.Depositor.
func (a *Allocator) MintSpares(ctx context.Context, n int) (int, error) {
	dep := a.cfg.Depositor
	ps, ok := a.cfg.Store.(PendingStore)
	if dep == nil || !ok {
		return 0, errors.New("allocator: spare keys need on-chain deposits")
	}
	if n <= 0 {
		return 0, nil
	}
	if err := dep.CheckFunds(ctx, n); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrDepositsUnavailable, err)
	}
	keys, err := a.cfg.Minter.Mint(ctx, n)
	if err != nil {
		return 0, fmt.Errorf("mint %d spare keys: %w", n, err)
	}
	if err := ps.AddPending(ctx, store.AddParams{Keys: keys, Now: a.cfg.Now(),
		AuditReason: "minted for the spare pool; pending-deposit until their deposits are confirmed"}); err != nil {
		return 0, fmt.Errorf("store %d minted spare keys: %w", len(keys), err)
	}
	a.cfg.Observer.KeysMinted(len(keys))
	dep.Notify()
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "spare keys minted; their deposits are sent", slog.Int("minted", len(keys)))
	return len(keys), nil
}
