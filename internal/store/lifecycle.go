package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The validator lifecycle as the beacon chain reports it. Each key may
// carry the last reading of its validator (ValidatorStatus), which
// RecordValidators stores and acts on; Exit marks keys whose voluntary exit
// the server signs. What a reading or an exit does to a key is decided by
// the pure functions below (ChainRule, ExitRule), which both backends call
// inside their transactions, so the rules are written once; the
// conformance suite (storetest) runs them against every backend.

// Beacon API validator statuses (the beacon-APIs' ValidatorStatus enum).
const (
	StatusPendingInitialized = "pending_initialized"
	StatusPendingQueued      = "pending_queued"
	StatusActiveOngoing      = "active_ongoing"
	StatusActiveExiting      = "active_exiting"
	StatusActiveSlashed      = "active_slashed"
	StatusExitedUnslashed    = "exited_unslashed"
	StatusExitedSlashed      = "exited_slashed"
	StatusWithdrawalPossible = "withdrawal_possible"
	StatusWithdrawalDone     = "withdrawal_done"
)

// ValidatorStatuses lists the beacon API statuses in lifecycle order.
var ValidatorStatuses = []string{StatusPendingInitialized, StatusPendingQueued, StatusActiveOngoing, StatusActiveExiting,
	StatusActiveSlashed, StatusExitedUnslashed, StatusExitedSlashed, StatusWithdrawalPossible, StatusWithdrawalDone}

// ValidatorStatus is what a beacon node reported of a key's validator at
// one reading. A key without a reading is one the node did not know (yet):
// that never means its deposit was not made (the node sees a deposit only
// after the follow distance and the deposit queue, hours later); the
// depositor's record and the contract's logs say whether it was.
type ValidatorStatus struct {
	Index uint64
	// Status is the beacon API's status (ValidatorStatuses).
	Status  string
	Balance uint64 // gwei
	// ActivationEpoch and ExitEpoch are FAR_FUTURE_EPOCH (2^64-1) while
	// not set.
	ActivationEpoch, ExitEpoch uint64
	Slashed                    bool
	// Epoch is the epoch of the head state read, At when it was read.
	Epoch uint64
	At    time.Time
}

// ValidatorReading is one key's reading for RecordValidators.
type ValidatorReading struct {
	Pubkey Pubkey
	Status ValidatorStatus
}

// Terminal reports whether the validator can never attest usefully again:
// slashed, exited, or withdrawable. Such a key is retired.
func (v ValidatorStatus) Terminal() bool {
	switch v.Status {
	case StatusActiveSlashed, StatusExitedUnslashed, StatusExitedSlashed, StatusWithdrawalPossible, StatusWithdrawalDone:
		return true
	}
	return v.Slashed
}

// Exiting reports whether the validator's exit has been initiated (exit
// epoch set) or it was slashed: a key a pod runs that turns so is an alarm
// unless the server exited it itself.
func (v ValidatorStatus) Exiting() bool {
	return v.Slashed || v.Status == StatusActiveExiting || v.Terminal()
}

// ChainDecision is what a reading does to a key.
type ChainDecision struct {
	// Retire: the key leaves circulation for good (Reason says why, in the
	// chain's words).
	Retire bool
	Reason string
	// Alert: a key a pod holds turned slashed or exiting without the
	// server exiting it (logged at ERROR, counted, alerted on).
	Alert bool
}

// ChainRule decides what cur, the new reading of a key in state, does to
// it; prev is the key's earlier reading (nil for none). Slashed, exited and
// withdrawable validators are retired from every state that may circulate
// (available, assigned, cooling-down, still-signing, exiting); a key a pod
// holds leaves the pod then (its validator can never attest usefully
// again). A held key that turns slashed or exiting raises an alert once
// per change of its reading. Pending-deposit keys belong to the depositor,
// retired and deposit-failed keys are left alone.
func ChainRule(state State, prev *ValidatorStatus, cur ValidatorStatus) ChainDecision {
	var d ChainDecision
	switch state {
	case StateAvailable, StateAssigned, StateCoolingDown, StateStillSigning, StateExiting:
	default:
		return d
	}
	if state == StateAssigned && cur.Exiting() &&
		(prev == nil || prev.Status != cur.Status || prev.Slashed != cur.Slashed) {
		d.Alert = true
	}
	if cur.Terminal() {
		d.Retire = true
		d.Reason = ChainReason(cur)
	}
	return d
}

// ChainReason is the audit reason of a key retired on a reading.
func ChainReason(v ValidatorStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "beacon node: validator %d is %s", v.Index, v.Status)
	if v.Slashed && !strings.Contains(v.Status, "slashed") {
		b.WriteString(" (slashed)")
	}
	if v.ExitEpoch != ^uint64(0) {
		fmt.Fprintf(&b, ", exit epoch %d", v.ExitEpoch)
	}
	fmt.Fprintf(&b, " (read at epoch %d)", v.Epoch)
	return b.String()
}

// ChainChange is one key a RecordValidators call acted on.
type ChainChange struct {
	Pubkey Pubkey
	// State is the key's state before the call, Pod its pod then.
	State    State
	Pod      string
	Decision ChainDecision
	Status   ValidatorStatus
}

// ExitParams marks keys exiting.
type ExitParams struct {
	Pubkeys []Pubkey
	// Force allows keys a pod holds (they leave the pod).
	Force  bool
	Reason string
	Now    time.Time
}

// ExitRule decides whether a key in state may be marked exiting: keys that
// may circulate may (a key a pod holds only with force: its validator
// client signs with it), an exiting key again (no change), others not.
// change says whether the key moves.
func ExitRule(pk Pubkey, state State, pod string, force bool) (change bool, err error) {
	switch state {
	case StateAvailable, StateCoolingDown, StateStillSigning:
		return true, nil
	case StateExiting:
		return false, nil
	case StateAssigned:
		if force {
			return true, nil
		}
		return false, fmt.Errorf("key %s is assigned to pod %s, whose validator client signs with it: exiting it takes it from the pod "+
			"(the pod drops it at its next request and misses its duties until the exit epoch); force it to exit anyway: %w", pk, pod, ErrWrongState)
	case StatePendingDeposit:
		return false, fmt.Errorf("key %s is pending-deposit: its deposit is not confirmed, so it is no validator to exit: %w", pk, ErrWrongState)
	default:
		return false, fmt.Errorf("key %s is %s: it cannot exit: %w", pk, state, ErrWrongState)
	}
}

// ValidateExit checks the arguments of Store.Exit.
func ValidateExit(p ExitParams) error {
	if len(p.Pubkeys) == 0 {
		return fmt.Errorf("exit: no keys: %w", ErrInvalidArgument)
	}
	if strings.TrimSpace(p.Reason) == "" {
		return fmt.Errorf("exit: empty reason: %w", ErrInvalidArgument)
	}
	return ValidateTime("exit time", p.Now)
}

// ValidateRecordValidators checks the arguments of Store.RecordValidators.
func ValidateRecordValidators(readings []ValidatorReading, now time.Time) error {
	seen := make(map[Pubkey]bool, len(readings))
	for i := range readings {
		if seen[readings[i].Pubkey] {
			return fmt.Errorf("record validators: reading of key %s given twice: %w", readings[i].Pubkey, ErrInvalidArgument)
		}
		seen[readings[i].Pubkey] = true
		if err := ValidateTime("reading time", readings[i].Status.At); err != nil {
			return fmt.Errorf("record validators: %w", err)
		}
	}
	if err := ValidateTime("record time", now); err != nil {
		return fmt.Errorf("record validators: %w", err)
	}
	return nil
}

// Lifecycle is the part of Store that keeps the chain's word about keys.
type Lifecycle interface {
	// RecordValidators stores each reading with its key (replacing the
	// key's earlier one; unknown pubkeys are skipped) and applies
	// ChainRule to the key's state, all in one transaction: keys it
	// retires become retired as Retire does (audit event "retire" with
	// the rule's reason and the actor of ctx). It returns the keys a
	// decision acted on (Retire or Alert), in pubkey order.
	RecordValidators(ctx context.Context, readings []ValidatorReading, now time.Time) ([]ChainChange, error)

	// Validators returns the stored reading of each of pubkeys that has
	// one.
	Validators(ctx context.Context, pubkeys []Pubkey) (map[Pubkey]ValidatorStatus, error)

	// Exit marks keys whose voluntary exit is signed, all or none, in one
	// transaction: ExitRule decides each (the first refusal fails the
	// call, changing nothing); a key that moves becomes exiting
	// (RetiredReason = p.Reason, Since = p.Now, Pod, PodUID and
	// CoolingUntil cleared; LastPod and ReleasedAt kept) and an audit
	// event "exit" is appended per pod the keys left (and one for keys
	// that had none): Pubkeys in pubkey order, the reason, the actor of
	// ctx. Exiting keys are never handed out; RecordValidators retires
	// them once the chain shows them exited. It returns every key's
	// record after the call (without secret and deposit), in the order
	// given. ErrNotFound for an unknown key.
	Exit(ctx context.Context, p ExitParams) ([]Key, error)
}
