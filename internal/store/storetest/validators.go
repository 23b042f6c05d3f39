package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The validator lifecycle: readings from the beacon node, retirement on
// the chain's word, voluntary exits (store.Lifecycle).
var validatorTests = []testCase{
	{name: "RecordValidators/Readings", fn: testRecordReadings},
	{name: "RecordValidators/Retire", fn: testRecordRetire},
	{name: "RecordValidators/Errors", fn: testRecordErrors},
	{name: "Exit", fn: testExit},
	{name: "Exit/Refused", fn: testExitRefused},
}

const farFuture = ^uint64(0)

func reading(i int, status string, exit uint64, slashed bool, epoch uint64, t time.Time) store.ValidatorReading {
	return store.ValidatorReading{Pubkey: PK(i), Status: store.ValidatorStatus{
		Index: uint64(100 + i), Status: status, Balance: 32_000_000_000 - uint64(i), ActivationEpoch: 3,
		ExitEpoch: exit, Slashed: slashed, Epoch: epoch, At: t,
	}}
}

func testRecordReadings(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	addKeys(t, s, store.StatePendingDeposit, at(0), 3)
	before := takeSnapshot(t, s)
	changes, err := s.RecordValidators(t.Context(), []store.ValidatorReading{
		reading(1, store.StatusActiveOngoing, farFuture, false, 7, at(5)),
		reading(3, store.StatusPendingQueued, farFuture, false, 7, at(5)),
		reading(99, store.StatusExitedSlashed, 9, true, 7, at(5)), // unknown: skipped
	}, at(5))
	must(t, err)
	if len(changes) != 0 {
		t.Errorf("changes %+v, want none", changes)
	}
	unchanged(t, s, before)
	got, err := s.Validators(t.Context(), pks(1, 2, 3, 99))
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("Validators = %+v, want k1 and k3", got)
	}
	want := reading(1, store.StatusActiveOngoing, farFuture, false, 7, at(5)).Status
	if g := got[PK(1)]; g.Index != want.Index || g.Status != want.Status || g.Balance != want.Balance || g.ActivationEpoch != 3 ||
		g.ExitEpoch != farFuture || g.Slashed || g.Epoch != 7 || !g.At.Equal(us(at(5))) {
		t.Errorf("k1 reading %+v, want %+v", g, want)
	}
	// A later reading replaces the earlier one.
	_, err = s.RecordValidators(t.Context(), []store.ValidatorReading{reading(1, store.StatusActiveExiting, 12, false, 8, at(6))}, at(6))
	must(t, err)
	got, err = s.Validators(t.Context(), pks(1))
	must(t, err)
	if g := got[PK(1)]; g.Status != store.StatusActiveExiting || g.ExitEpoch != 12 || g.Epoch != 8 || !g.At.Equal(us(at(6))) {
		t.Errorf("k1 reading after the second call %+v", g)
	}
	// An exiting available key (exit not ours) is no alert: no pod runs it.
	if k := getKey(t, s, PK(1)); k.State != store.StateAvailable {
		t.Errorf("k1 became %s", k.State)
	}
}

func testRecordRetire(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4, 5, 6, 7)
	addKeys(t, s, store.StatePendingDeposit, at(0), 8)
	claim(t, s, "pod-a", "A", 3, at(1)) // k1 k2 k3
	claim(t, s, "pod-c", "C", 1, at(1)) // k4
	release(t, s, "pod-c", "C", at(100), at(2))
	_, err := s.Exit(t.Context(), store.ExitParams{Pubkeys: pks(5), Reason: "fleet shrinks", Now: at(2)})
	must(t, err)
	ctx := store.WithActor(t.Context(), "beacon-node")
	changes, err := s.RecordValidators(ctx, []store.ValidatorReading{
		reading(1, store.StatusActiveOngoing, farFuture, false, 7, at(3)),
		reading(2, store.StatusActiveSlashed, 20, true, 7, at(3)),   // assigned, slashed: retired, alert
		reading(3, store.StatusActiveExiting, 20, false, 7, at(3)),  // assigned, exiting: alert, stays
		reading(4, store.StatusWithdrawalDone, 5, false, 7, at(3)),  // cooling-down: retired
		reading(5, store.StatusExitedUnslashed, 6, false, 7, at(3)), // exiting: retired
		reading(6, store.StatusActiveOngoing, farFuture, true, 7, at(3)),
		reading(7, store.StatusPendingQueued, farFuture, false, 7, at(3)),
		reading(8, store.StatusExitedUnslashed, 6, false, 7, at(3)), // pending-deposit: the depositor's
	}, at(3))
	must(t, err)
	type change struct {
		pk            store.Pubkey
		state         store.State
		pod           string
		retire, alert bool
	}
	want := []change{
		{PK(2), store.StateAssigned, "pod-a", true, true},
		{PK(3), store.StateAssigned, "pod-a", false, true},
		{PK(4), store.StateCoolingDown, "", true, false},
		{PK(5), store.StateExiting, "", true, false},
		{PK(6), store.StateAvailable, "", true, false},
	}
	if len(changes) != len(want) {
		t.Fatalf("changes %+v, want %+v", changes, want)
	}
	for i, c := range changes {
		w := want[i]
		if c.Pubkey != w.pk || c.State != w.state || c.Pod != w.pod || c.Decision.Retire != w.retire || c.Decision.Alert != w.alert {
			t.Errorf("change %d: %s %s pod %q %+v, want %+v", i, name(c.Pubkey), c.State, c.Pod, c.Decision, w)
		}
	}
	for _, i := range []int{2, 4, 5, 6} {
		k := getKey(t, s, PK(i))
		if k.State != store.StateRetired || k.Pod != "" || !k.Since.Equal(us(at(3))) || k.RetiredReason == "" {
			t.Errorf("k%d after the reading: %s", i, describe(k))
		}
	}
	if k := getKey(t, s, PK(2)); k.RetiredReason != "beacon node: validator 102 is active_slashed, exit epoch 20 (read at epoch 7)" {
		t.Errorf("k2 reason %q", k.RetiredReason)
	}
	if k := getKey(t, s, PK(6)); k.RetiredReason != "beacon node: validator 106 is active_ongoing (slashed) (read at epoch 7)" {
		t.Errorf("k6 reason %q", k.RetiredReason)
	}
	for i, st := range map[int]store.State{1: store.StateAssigned, 3: store.StateAssigned, 7: store.StateAvailable, 8: store.StatePendingDeposit} {
		if k := getKey(t, s, PK(i)); k.State != st {
			t.Errorf("k%d became %s, want %s", i, k.State, st)
		}
	}
	trail := auditTrail(t, s)
	var retired []store.AuditEvent
	for _, e := range trail {
		if e.Action == "retire" {
			retired = append(retired, e)
		}
	}
	if len(retired) != 4 || retired[0].Pod != "pod-a" || retired[0].PodUID != "A" || retired[0].Actor != "beacon-node" ||
		retired[0].Pubkeys[0] != PK(2) || retired[0].Reason != getKey(t, s, PK(2)).RetiredReason {
		t.Errorf("retire events %+v", retired)
	}
	// pod-a lost k2: a claim tops it up from the pool (k7), never with a
	// retired or exiting key.
	c := claim(t, s, "pod-a", "A", 3, at(4))
	wantClaim(t, c, pks(1, 3, 7), 0, 1)
	// The same reading again: no new alert for k3, nothing retired twice.
	changes, err = s.RecordValidators(ctx, []store.ValidatorReading{
		reading(3, store.StatusActiveExiting, 20, false, 8, at(5)),
		reading(2, store.StatusActiveSlashed, 20, true, 8, at(5)),
	}, at(5))
	must(t, err)
	if len(changes) != 0 {
		t.Errorf("repeated readings changed %+v", changes)
	}
	// k3 exits for good: retired, leaves pod-a, and the changed reading
	// alerts again.
	changes, err = s.RecordValidators(ctx, []store.ValidatorReading{reading(3, store.StatusExitedUnslashed, 20, false, 21, at(6))}, at(6))
	must(t, err)
	if len(changes) != 1 || !changes[0].Decision.Retire || !changes[0].Decision.Alert {
		t.Errorf("k3 exited: changes %+v", changes)
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 2, store.StateRetired: 5, store.StatePendingDeposit: 1})
}

func testRecordErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	before := takeSnapshot(t, s)
	_, err := s.RecordValidators(t.Context(), []store.ValidatorReading{reading(1, store.StatusExitedSlashed, 1, true, 1, zeroTime)}, at(1))
	wantErr(t, err, store.ErrInvalidArgument)
	r := reading(1, store.StatusExitedSlashed, 1, true, 1, at(1))
	_, err = s.RecordValidators(t.Context(), []store.ValidatorReading{r, r}, at(1))
	wantErr(t, err, store.ErrInvalidArgument)
	unchanged(t, s, before)
	if got, err := s.Validators(t.Context(), pks(1)); err != nil || len(got) != 0 {
		t.Errorf("Validators after refused calls = %v, %v", got, err)
	}
}

func testExit(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3, 4, 5)
	claim(t, s, "pod-a", "A", 2, at(1)) // k1 k2
	claim(t, s, "pod-b", "B", 1, at(1)) // k3
	release(t, s, "pod-b", "B", at(100), at(2))
	_, err := s.Quarantine(t.Context(), pks(4), "live", at(2))
	must(t, err)
	ctx := store.WithActor(t.Context(), "user:admin")
	keys, err := s.Exit(ctx, store.ExitParams{Pubkeys: pks(5, 3, 4, 2), Force: true, Reason: "voluntary exit signed (operator)", Now: at(3)})
	must(t, err)
	if got := pubkeysOf(keys); len(got) != 4 || got[0] != PK(5) || got[3] != PK(2) {
		t.Errorf("Exit returned %s, want the keys in the order given", names(got))
	}
	for _, k := range keys {
		if k.State != store.StateExiting || k.Pod != "" || k.PodUID != "" || !k.CoolingUntil.IsZero() ||
			k.RetiredReason != "voluntary exit signed (operator)" || !k.Since.Equal(us(at(3))) {
			t.Errorf("after Exit: %s", describe(k))
		}
	}
	if k := getKey(t, s, PK(2)); k.LastPod != "pod-a" {
		t.Errorf("k2 LastPod %q", k.LastPod)
	}
	if k := getKey(t, s, PK(3)); !k.ReleasedAt.Equal(us(at(2))) {
		t.Errorf("k3 lost its release: %s", describe(k))
	}
	trail := auditTrail(t, s)
	wantEvents(t, trail[len(trail)-2:], []store.AuditEvent{
		{Seq: 5, Time: us(at(3)), Action: "exit", Pubkeys: pks(3, 4, 5), Reason: "voluntary exit signed (operator)", Actor: "user:admin"},
		{Seq: 6, Time: us(at(3)), Action: "exit", Pod: "pod-a", PodUID: "A", Pubkeys: pks(2), Reason: "voluntary exit signed (operator)", Actor: "user:admin"},
	})
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 1, store.StateExiting: 4})
	// Exiting keys are never handed out, swept or cooled down.
	c := claim(t, s, "pod-c", "C", 1, at(1_000_000))
	wantClaim(t, c, nil, 1, 0)
	if n, err := s.Sweep(t.Context(), at(1_000_000)); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v", n, err)
	}
	if n, err := s.CoolDown(t.Context(), pks(2, 3), at(10), at(4)); err != nil || n != 0 {
		t.Errorf("CoolDown = %d, %v", n, err)
	}
	// Exiting again (a retried submission) changes nothing.
	before := takeSnapshot(t, s)
	if _, err := s.Exit(ctx, store.ExitParams{Pubkeys: pks(2, 3), Reason: "again", Now: at(5)}); err != nil {
		t.Errorf("Exit of exiting keys: %v", err)
	}
	unchanged(t, s, before)
}

func testExitRefused(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	addKeys(t, s, store.StatePendingDeposit, at(0), 4)
	claim(t, s, "pod-a", "A", 1, at(1)) // k1
	must(t, s.Retire(t.Context(), PK(3), "gone", at(1)))
	before := takeSnapshot(t, s)
	for _, tc := range []struct {
		name string
		p    store.ExitParams
		err  error
	}{
		{"assigned without force", store.ExitParams{Pubkeys: pks(2, 1), Reason: "r", Now: at(2)}, store.ErrWrongState},
		{"pending-deposit", store.ExitParams{Pubkeys: pks(2, 4), Force: true, Reason: "r", Now: at(2)}, store.ErrWrongState},
		{"retired", store.ExitParams{Pubkeys: pks(3), Force: true, Reason: "r", Now: at(2)}, store.ErrWrongState},
		{"unknown", store.ExitParams{Pubkeys: pks(2, 99), Reason: "r", Now: at(2)}, store.ErrNotFound},
		{"no keys", store.ExitParams{Reason: "r", Now: at(2)}, store.ErrInvalidArgument},
		{"no reason", store.ExitParams{Pubkeys: pks(2), Now: at(2)}, store.ErrInvalidArgument},
		{"no time", store.ExitParams{Pubkeys: pks(2), Reason: "r"}, store.ErrInvalidArgument},
	} {
		_, err := s.Exit(t.Context(), tc.p)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: Exit error %v, want %v", tc.name, err, tc.err)
		}
	}
	unchanged(t, s, before)
}
