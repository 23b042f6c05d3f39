package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Errors of the on-chain deposit path (Config.Depositor). Returned errors
// wrap them.
var (
	// ErrDepositFailed: the deposit of one or more keys meant for the pod
	// failed (reverted or rejected); those keys are in state deposit-failed
	// and are never handed out.
	ErrDepositFailed = errors.New("deposit failed")
	// ErrDepositsUnavailable: deposits cannot be made now (e.g. the funder
	// cannot pay them); nothing was sent for this request.
	ErrDepositsUnavailable = errors.New("deposits unavailable")
)

// Depositor gets the deposits of minted keys on chain (see package
// depositor). The allocator records minted keys as pending-deposit, tells
// the depositor, and waits until the keys are confirmed or failed. The
// sender may run in another process (another replica): waiting also polls
// the store.
type Depositor interface {
	// CheckFunds checks, before anything is minted or recorded, that n
	// more deposits can be paid.
	CheckFunds(ctx context.Context, n int) error
	// Notify wakes this process's sender, if it runs here.
	Notify()
	// Changed returns a channel closed at the next settlement made by this
	// process's sender.
	Changed() <-chan struct{}
	// Blocked returns why this process's sender cannot send now, or nil.
	Blocked() error
	// PollInterval is how often a waiter looks at the store.
	PollInterval() time.Duration
}

// PendingStore is what the deposit path needs from the store besides Store.
type PendingStore interface {
	AddPending(ctx context.Context, p store.AddParams) error
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	GetKey(ctx context.Context, pubkey store.Pubkey) (store.Key, error)
}

// requestOnChain serves a request when deposits are made on chain: it claims
// the pod's keys, reserving its shortfall (token); when it holds the
// reservation it mints the shortfall as pending-deposit keys intended for
// the pod (the store deletes the reservation as it adds them), then waits
// (holding the pod's in-process lock only) until each of the pod's pending
// keys is confirmed or failed, and claims again. Pending keys minted by
// another request, here or on another replica, are waited for the same
// way; while another request holds the reservation, claim waits for it.
func (a *Allocator) requestOnChain(ctx context.Context, pod, podUID string, n int, token string) (Result, error) {
	ps, ok := a.cfg.Store.(PendingStore)
	if !ok {
		return Result{}, errors.New("allocator: the store cannot hold pending deposits")
	}
	dep := a.cfg.Depositor
	recycled, minted := 0, 0
	for round := 0; ; round++ {
		claim, r, err := a.claimActive(ctx, pod, podUID, n, token)
		if err != nil {
			return Result{}, err
		}
		recycled += r
		res := claim.Reservation // nil, or this request's own
		if res == nil && len(claim.Pending) == 0 {
			// With a token the claim reserves any shortfall: the pod
			// holds its keys.
			return a.answer(ctx, pod, n, claim.Keys, recycled, minted, true)
		}
		if round == maxRounds {
			if res != nil {
				a.releaseReservation(ctx, pod, token)
			}
			return Result{}, fmt.Errorf("pod %s: keys it waited for left it, or its mint reservation was lost, %d times; try again", pod, round)
		}
		wait := make([]store.Pubkey, 0, len(claim.Pending)+n)
		for _, k := range claim.Pending {
			wait = append(wait, k.Pubkey)
		}
		if res != nil {
			newKeys, err := a.mintReserved(ctx, pod, token, res.Count, func(ctx context.Context) error {
				if err := dep.CheckFunds(ctx, res.Count); err != nil {
					return fmt.Errorf("%w: %w", ErrDepositsUnavailable, err)
				}
				return nil
			})
			if err != nil {
				return Result{}, err
			}
			err = ps.AddPending(ctx, store.AddParams{Pod: pod, PodUID: podUID, Want: n, Keys: newKeys, Now: a.cfg.Now(), ReserveToken: token, StrictUID: a.cfg.StrictUID,
				AuditReason: fmt.Sprintf("minted for a request of %d keys; pending-deposit until their deposits are confirmed", n)})
			if errors.Is(err, store.ErrReservationLost) {
				a.reservationLost(ctx, pod, len(newKeys))
				continue
			}
			if err != nil {
				a.releaseReservation(ctx, pod, token)
				return Result{}, fmt.Errorf("store %d minted keys for pod %s: %w", len(newKeys), pod, err)
			}
			minted += len(newKeys)
			a.cfg.Observer.KeysMinted(len(newKeys))
			dep.Notify()
			for _, k := range newKeys {
				wait = append(wait, k.Pubkey)
			}
			a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "keys minted; waiting for their deposits",
				slog.String("pod", pod), slog.Int("minted", len(newKeys)), slog.Int("waiting", len(wait)))
		}
		if err := a.waitDeposits(ctx, ps, pod, wait); err != nil {
			return Result{}, err
		}
	}
}

// waitDeposits waits until none of pubkeys is pending-deposit for pod. It
// fails with ErrDepositFailed when any of them went to deposit-failed, and
// with ErrDepositsUnavailable when this process's sender cannot send and
// some of the pod's keys are not sent yet.
func (a *Allocator) waitDeposits(ctx context.Context, ps PendingStore, pod string, pubkeys []store.Pubkey) error {
	dep := a.cfg.Depositor
	remaining := make(map[store.Pubkey]bool, len(pubkeys))
	for _, pk := range pubkeys {
		remaining[pk] = true
	}
	var failed []string
	poll := dep.PollInterval()
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		changed := dep.Changed() // before looking, so no settlement is missed
		pending := make(map[store.Pubkey]bool)
		unsent := 0
		err := ps.ListKeys(ctx, store.ListOptions{States: []store.State{store.StatePendingDeposit}, Pod: pod, WithDeposit: true},
			func(k store.Key) error {
				pending[k.Pubkey] = true
				if remaining[k.Pubkey] && k.DepositTx == nil {
					unsent++
				}
				return nil
			})
		if err != nil {
			return fmt.Errorf("wait for the deposits of pod %s: %w", pod, err)
		}
		for pk := range remaining {
			if pending[pk] {
				continue
			}
			delete(remaining, pk)
			k, err := ps.GetKey(ctx, pk)
			if err != nil {
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				return fmt.Errorf("wait for the deposits of pod %s: %w", pod, err)
			}
			if k.State == store.StateDepositFailed {
				failed = append(failed, fmt.Sprintf("%s: %s", k.Pubkey, k.RetiredReason))
			}
		}
		if len(remaining) == 0 {
			break
		}
		if unsent > 0 {
			if err := dep.Blocked(); err != nil {
				return fmt.Errorf("%w: %d keys for pod %s wait for their deposits: %w", ErrDepositsUnavailable, unsent, pod, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the deposits of %d keys of pod %s (they stay pending-deposit for the pod; ask again to keep waiting): %w",
				len(remaining), pod, ctx.Err())
		case <-changed:
		case <-t.C:
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %d of the keys minted for pod %s are in state deposit-failed and were not handed out: %s",
			ErrDepositFailed, len(failed), pod, strings.Join(failed, "; "))
	}
	return nil
}
