package store

import (
	"context"
	"fmt"
	"time"
)

// Front returns s behind the checking front: every call first fails,
// changing nothing, when its ctx is done (an error wrapping ctx.Err()) or
// an argument breaks the contract (ErrInvalidArgument, the checks of
// validate.go), and only then reaches s. The two rules are kept here once,
// so that a backend holds only its transaction bodies; storeurl.Open and
// storetest.Run put every backend behind the front, and a backend used
// without it does not check its arguments.
//
// The front of a fronted store is that store. Unwrap returns the backend;
// As finds the backend's optional interfaces (Clock, Owners, SessionLock)
// through it.
func Front(s Store) Store {
	if f, ok := s.(*front); ok {
		return f
	}
	return &front{s: s}
}

// As reports whether s, or a store it wraps (Unwrap, as Front's does),
// implements the optional interface T, and returns that store as T: the
// way to reach a backend's features (store.As[store.Owners](s)) through the
// front.
func As[T any](s Store) (T, bool) {
	for s != nil {
		if t, ok := s.(T); ok {
			return t, true
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	var zero T
	return zero, false
}

type front struct{ s Store }

var _ Store = (*front)(nil)

// Unwrap returns the store behind the front.
func (f *front) Unwrap() Store { return f.s }

// check is the prologue of every call: ctx's error, wrapped with what the
// call does (format and args, as fmt.Sprintf), else valid, the error of the
// call's argument check (nil for a call without arguments to check).
func check(ctx context.Context, valid error, format string, args ...any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
	}
	return valid
}

func (f *front) Claim(ctx context.Context, p ClaimParams) (Claim, error) {
	if err := check(ctx, p.Validate(), "claim for pod %s", p.Pod); err != nil {
		return Claim{}, err
	}
	return f.s.Claim(ctx, p)
}

func (f *front) AddAssigned(ctx context.Context, p AddParams) (Claim, error) {
	if err := check(ctx, p.Validate(), "add keys for pod %s", p.Pod); err != nil {
		return Claim{}, err
	}
	return f.s.AddAssigned(ctx, p)
}

func (f *front) AddPending(ctx context.Context, p AddParams) error {
	if err := check(ctx, p.ValidatePending(), "add pending keys for pod %q", p.Pod); err != nil {
		return err
	}
	return f.s.AddPending(ctx, p)
}

func (f *front) RenewReservation(ctx context.Context, pod, token string, until time.Time) error {
	if err := check(ctx, ValidateRenewReservation(pod, token, until), "renew mint reservation of pod %s", pod); err != nil {
		return err
	}
	return f.s.RenewReservation(ctx, pod, token, until)
}

func (f *front) ReleaseReservation(ctx context.Context, pod, token string) error {
	if err := check(ctx, ValidateReleaseReservation(pod, token), "release mint reservation of pod %s", pod); err != nil {
		return err
	}
	return f.s.ReleaseReservation(ctx, pod, token)
}

func (f *front) SetDepositTx(ctx context.Context, pubkey Pubkey, tx DepositTx, now time.Time) error {
	if err := check(ctx, ValidateSetDepositTx(pubkey, tx, now), "record deposit transaction of key %s", pubkey); err != nil {
		return err
	}
	return f.s.SetDepositTx(ctx, pubkey, tx, now)
}

func (f *front) ConfirmDeposit(ctx context.Context, pubkey Pubkey, block uint64, now time.Time) (Key, error) {
	if err := check(ctx, ValidateConfirmDeposit(pubkey, block, now), "confirm deposit of key %s", pubkey); err != nil {
		return Key{}, err
	}
	return f.s.ConfirmDeposit(ctx, pubkey, block, now)
}

func (f *front) FailDeposit(ctx context.Context, pubkey Pubkey, reason string, now time.Time) error {
	if err := check(ctx, ValidateFailDeposit(pubkey, reason, now), "fail deposit of key %s", pubkey); err != nil {
		return err
	}
	return f.s.FailDeposit(ctx, pubkey, reason, now)
}

func (f *front) AddKeys(ctx context.Context, keys []NewKey, state State, now time.Time) error {
	if err := check(ctx, ValidateAddKeys(keys, state, now), "add keys"); err != nil {
		return err
	}
	return f.s.AddKeys(ctx, keys, state, now)
}

func (f *front) Release(ctx context.Context, p ReleaseParams) (int, error) {
	if err := check(ctx, p.Validate(), "release pod %s", p.Pod); err != nil {
		return 0, err
	}
	return f.s.Release(ctx, p)
}

func (f *front) Retire(ctx context.Context, pubkey Pubkey, reason string, now time.Time) error {
	if err := check(ctx, ValidateRetire(pubkey, now), "retire key %s", pubkey); err != nil {
		return err
	}
	return f.s.Retire(ctx, pubkey, reason, now)
}

func (f *front) AppendAudit(ctx context.Context, e AuditEvent) error {
	if err := check(ctx, e.Validate(), "append audit event"); err != nil {
		return err
	}
	return f.s.AppendAudit(ctx, e)
}

func (f *front) ListAudit(ctx context.Context, after uint64, limit int) ([]AuditEvent, error) {
	if err := check(ctx, ValidateListAudit(limit), "list audit events"); err != nil {
		return nil, err
	}
	return f.s.ListAudit(ctx, after, limit)
}

func (f *front) Sweep(ctx context.Context, now time.Time) (int, error) {
	if err := check(ctx, ValidateSweep(now), "sweep"); err != nil {
		return 0, err
	}
	return f.s.Sweep(ctx, now)
}

func (f *front) GetKey(ctx context.Context, pubkey Pubkey) (Key, error) {
	if err := check(ctx, nil, "get key %s", pubkey); err != nil {
		return Key{}, err
	}
	return f.s.GetKey(ctx, pubkey)
}

func (f *front) ListKeys(ctx context.Context, opts ListOptions, fn func(Key) error) error {
	if err := check(ctx, opts.Validate(), "list keys"); err != nil {
		return err
	}
	return f.s.ListKeys(ctx, opts, fn)
}

func (f *front) Counts(ctx context.Context) (map[State]int, error) {
	if err := check(ctx, nil, "count keys"); err != nil {
		return nil, err
	}
	return f.s.Counts(ctx)
}

func (f *front) PodSizes(ctx context.Context) (map[string]int, error) {
	if err := check(ctx, nil, "list pod sizes"); err != nil {
		return nil, err
	}
	return f.s.PodSizes(ctx)
}

func (f *front) ReserveIndices(ctx context.Context, count int) (uint32, error) {
	if err := check(ctx, ValidateReserveIndices(count), "reserve derivation indices"); err != nil {
		return 0, err
	}
	return f.s.ReserveIndices(ctx, count)
}

func (f *front) Bind(ctx context.Context, name, value string) error {
	if err := check(ctx, ValidateBind(name), "bind %s", name); err != nil {
		return err
	}
	return f.s.Bind(ctx, name, value)
}

func (f *front) Dump(ctx context.Context, fn func(Key) error) (Snapshot, error) {
	if err := check(ctx, nil, "dump store"); err != nil {
		return Snapshot{}, err
	}
	return f.s.Dump(ctx, fn)
}

func (f *front) Load(ctx context.Context, snap Snapshot, keys []Key) error {
	if err := check(ctx, ValidateLoad(snap, keys), "load store"); err != nil {
		return err
	}
	return f.s.Load(ctx, snap, keys)
}

func (f *front) Quarantine(ctx context.Context, pubkeys []Pubkey, reason string, now time.Time) (int, error) {
	if err := check(ctx, ValidateQuarantine(reason, now), "quarantine keys"); err != nil {
		return 0, err
	}
	return f.s.Quarantine(ctx, pubkeys, reason, now)
}

func (f *front) CoolDown(ctx context.Context, pubkeys []Pubkey, until, now time.Time) (int, error) {
	if err := check(ctx, ValidateCoolDown(until, now), "cool down keys"); err != nil {
		return 0, err
	}
	return f.s.CoolDown(ctx, pubkeys, until, now)
}

func (f *front) Protections(ctx context.Context, pubkeys []Pubkey) (map[Pubkey]Protection, error) {
	if err := check(ctx, nil, "read slashing protection"); err != nil {
		return nil, err
	}
	return f.s.Protections(ctx, pubkeys)
}

func (f *front) RecoverDeposit(ctx context.Context, pubkey Pubkey, block uint64, reason string, now time.Time) (Key, error) {
	if err := check(ctx, ValidateRecoverDeposit(pubkey, block, reason, now), "recover deposit of key %s", pubkey); err != nil {
		return Key{}, err
	}
	return f.s.RecoverDeposit(ctx, pubkey, block, reason, now)
}

func (f *front) Bindings(ctx context.Context) (map[string]string, error) {
	if err := check(ctx, nil, "read bindings"); err != nil {
		return nil, err
	}
	return f.s.Bindings(ctx)
}

func (f *front) DepositIndexCursor(ctx context.Context) (IndexCursor, error) {
	if err := check(ctx, nil, "read the deposit index cursor"); err != nil {
		return IndexCursor{}, err
	}
	return f.s.DepositIndexCursor(ctx)
}

func (f *front) MoveDepositIndex(ctx context.Context, from, to IndexCursor, entries []IndexEntry) error {
	if err := check(ctx, ValidateMoveDepositIndex(to, entries), "move the deposit index"); err != nil {
		return err
	}
	return f.s.MoveDepositIndex(ctx, from, to, entries)
}

func (f *front) LookupDepositIndex(ctx context.Context, keys []uint64) (map[uint64][]uint64, error) {
	if err := check(ctx, nil, "look up the deposit index"); err != nil {
		return nil, err
	}
	return f.s.LookupDepositIndex(ctx, keys)
}

func (f *front) RecordValidators(ctx context.Context, readings []ValidatorReading, now time.Time) ([]ChainChange, error) {
	if err := check(ctx, ValidateRecordValidators(readings, now), "record validators"); err != nil {
		return nil, err
	}
	return f.s.RecordValidators(ctx, readings, now)
}

func (f *front) Validators(ctx context.Context, pubkeys []Pubkey) (map[Pubkey]ValidatorStatus, error) {
	if err := check(ctx, nil, "read validators"); err != nil {
		return nil, err
	}
	return f.s.Validators(ctx, pubkeys)
}

func (f *front) Exit(ctx context.Context, p ExitParams) ([]Key, error) {
	if err := check(ctx, ValidateExit(p), "exit keys"); err != nil {
		return nil, err
	}
	return f.s.Exit(ctx, p)
}

func (f *front) Ping(ctx context.Context) error {
	if err := check(ctx, nil, "ping store"); err != nil {
		return err
	}
	return f.s.Ping(ctx)
}

func (f *front) Close() error { return f.s.Close() }
