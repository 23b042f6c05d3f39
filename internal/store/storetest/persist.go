package storetest

import (
	"reflect"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// testPersistence fills a store with keys in every state, reopens it and
// checks that everything reads back the same and that the reopened store
// keeps working from where the first one stopped (pool order, cooling-down
// deadlines, pod UIDs, pending keys, deposit transactions, derivation
// indices, bindings, the audit trail).
func testPersistence(t *testing.T, s store.Store, reopen ReopenFunc) {
	keys := nks(1, 2, 3, 4, 5, 6, 7, 8)
	keys[1].Origin, keys[1].DerivationIndex, keys[1].HasDerivationIndex = store.OriginDerived, 12, true
	keys[2].Deposit = nil
	must(t, s.AddKeys(t.Context(), keys[:6], store.StateAvailable, at(0)))
	must(t, s.AddKeys(t.Context(), keys[6:], store.StatePendingDeposit, at(0)))
	wantClaim(t, claim(t, s, "pod-a", "A", 2, at(1)), pks(1, 2), 0, 2)
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(1)), pks(3), 0, 1)
	wantClaim(t, claim(t, s, "pod-c", "C", 1, at(1)), pks(4), 0, 1)
	release(t, s, "pod-b", "", at(2), at(2))   // k3 released at 2
	release(t, s, "pod-c", "C", at(50), at(3)) // k4 cooling until 50
	if _, err := s.Sweep(t.Context(), at(2)); err != nil {
		t.Fatal(err)
	}
	must(t, s.Retire(t.Context(), PK(8), "gone", at(4)))
	if got := reserve(t, s, 7); got != 0 {
		t.Fatalf("ReserveIndices(7) = %d, want 0", got)
	}
	must(t, s.Bind(t.Context(), "kek", "fp-1"))
	addPending(t, s, "pod-a", "A", 3, nks(9), at(4)) // intended for pod-a
	setTx(t, s, 9, at(4))
	must(t, s.AddPending(t.Context(), store.AddParams{Keys: nks(10, 11), Now: at(4)}))
	must(t, s.FailDeposit(store.WithActor(t.Context(), "watcher"), PK(10), "reverted", at(4)))
	confirm(t, s, PK(11), 12, at(4)) // available, never released, created at 4
	CheckInvariants(t, s)
	before := takeSnapshot(t, s)
	if len(before.audit) != 7 { // 3 assignments, 2 releases, a retirement, a failure
		t.Fatalf("%d audit events before reopen, want 7", len(before.audit))
	}

	s = reopen(t, s)
	after := takeSnapshot(t, s)
	if !reflect.DeepEqual(before.counts, after.counts) {
		t.Errorf("counts after reopen = %v, before %v", after.counts, before.counts)
	}
	if len(before.keys) != len(after.keys) {
		t.Fatalf("%d keys after reopen, %d before", len(after.keys), len(before.keys))
	}
	for i := range before.keys {
		wantKey(t, after.keys[i], before.keys[i])
	}
	wantEvents(t, after.audit, before.audit)
	CheckInvariants(t, s)

	// The reopened store carries on.
	if got := reserve(t, s, 1); got != 7 {
		t.Errorf("ReserveIndices(1) after reopen = %d, want 7", got)
	}
	wantErr(t, s.Bind(t.Context(), "kek", "fp-2"), store.ErrBindingMismatch)
	must(t, s.Bind(t.Context(), "kek", "fp-1"))
	_, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "A-new", Want: 1, Now: at(5)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	// pod-a still counts its pending key.
	c := claim(t, s, "pod-a", "A", 3, at(5))
	wantClaim(t, c, pks(1, 2), 0, 0)
	wantPending(t, c, pks(9))
	// Pool order: k3 (released at 2) before never-released k5, k6 (created
	// at 0), then k11 (created at 4).
	wantClaim(t, claim(t, s, "pod-d", "", 1, at(5)), pks(3), 0, 1)
	wantClaim(t, claim(t, s, "pod-e", "", 3, at(5)), pks(5, 6, 11), 0, 3)
	// k4 is still cooling down until 50.
	wantClaim(t, claim(t, s, "pod-f", "", 1, at(49)), nil, 1, 0)
	wantClaim(t, claim(t, s, "pod-f", "", 1, at(50)), pks(4), 0, 1)
	release(t, s, "pod-a", "A", at(60), at(6)) // k9 becomes a spare
	must(t, s.AppendAudit(t.Context(), store.AuditEvent{Time: at(7), Action: "after-reopen"}))
	// 7 before the reopen, then 3 assignments, the release and this event.
	if trail := auditTrail(t, s); len(trail) != 12 || trail[11].Seq != 12 || trail[10].Action != "release" {
		t.Errorf("audit trail after reopen = %+v, want Seq to carry on to 12", trail)
	}

	// And what it wrote survives the next reopen too.
	before = takeSnapshot(t, s)
	s = reopen(t, s)
	after = takeSnapshot(t, s)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("store changed across the second reopen:\nbefore %v\n after %v", before, after)
	}
	if n, err := s.Sweep(t.Context(), at(60)); err != nil || n != 2 {
		t.Errorf("Sweep after the second reopen = %d, %v; want k1 and k2", n, err)
	}
	if got := reserve(t, s, 1); got != 8 {
		t.Errorf("ReserveIndices(1) after the second reopen = %d, want 8", got)
	}
	CheckInvariants(t, s)
}
