package store

import (
	"errors"
	"testing"
)

func TestChainRule(t *testing.T) {
	far := ^uint64(0)
	st := func(status string, slashed bool) ValidatorStatus {
		return ValidatorStatus{Index: 9, Status: status, Slashed: slashed, ExitEpoch: far, Epoch: 4}
	}
	for _, tc := range []struct {
		state         State
		prev          *ValidatorStatus
		cur           ValidatorStatus
		retire, alert bool
	}{
		{StateAvailable, nil, st(StatusActiveOngoing, false), false, false},
		{StateAvailable, nil, st(StatusActiveExiting, false), false, false},
		{StateAvailable, nil, st(StatusExitedUnslashed, false), true, false},
		{StateCoolingDown, nil, st(StatusWithdrawalPossible, false), true, false},
		{StateStillSigning, nil, st(StatusWithdrawalDone, false), true, false},
		{StateExiting, nil, st(StatusActiveExiting, false), false, false},
		{StateExiting, nil, st(StatusExitedUnslashed, false), true, false},
		{StateAssigned, nil, st(StatusActiveOngoing, false), false, false},
		{StateAssigned, nil, st(StatusActiveExiting, false), false, true},
		{StateAssigned, ptr(st(StatusActiveExiting, false)), st(StatusActiveExiting, false), false, false},
		{StateAssigned, ptr(st(StatusActiveOngoing, false)), st(StatusActiveSlashed, true), true, true},
		{StateAssigned, nil, st(StatusActiveOngoing, true), true, true}, // slashed flag without the status yet
		{StateAssigned, ptr(st(StatusActiveExiting, false)), st(StatusExitedUnslashed, false), true, true},
		{StatePendingDeposit, nil, st(StatusExitedSlashed, true), false, false},
		{StateRetired, nil, st(StatusExitedSlashed, true), false, false},
		{StateDepositFailed, nil, st(StatusActiveSlashed, true), false, false},
	} {
		d := ChainRule(tc.state, tc.prev, tc.cur)
		if d.Retire != tc.retire || d.Alert != tc.alert || (d.Reason != "") != tc.retire {
			t.Errorf("ChainRule(%s, %v, %s slashed=%t) = %+v, want retire %t alert %t", tc.state, tc.prev, tc.cur.Status, tc.cur.Slashed, d, tc.retire, tc.alert)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestExitRule(t *testing.T) {
	var pk Pubkey
	for _, tc := range []struct {
		state  State
		force  bool
		change bool
		err    error
	}{
		{StateAvailable, false, true, nil},
		{StateCoolingDown, false, true, nil},
		{StateStillSigning, false, true, nil},
		{StateExiting, false, false, nil},
		{StateAssigned, false, false, ErrWrongState},
		{StateAssigned, true, true, nil},
		{StatePendingDeposit, true, false, ErrWrongState},
		{StateRetired, true, false, ErrWrongState},
		{StateDepositFailed, true, false, ErrWrongState},
	} {
		change, err := ExitRule(pk, tc.state, "pod-a", tc.force)
		if change != tc.change || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("ExitRule(%s, force %t) = %t, %v; want %t, %v", tc.state, tc.force, change, err, tc.change, tc.err)
		}
	}
}
