package storetest

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var dumpTests = []testCase{
	{name: "Dump/EveryField", fn: testDumpEveryField},
	{name: "Dump/StopOnError", fn: testDumpStop},
	{name: "DumpLoad/RoundTrip", withFresh: testDumpLoadRoundTrip},
	{name: "Load/AsGiven", fn: testLoadAsGiven},
	{name: "Load/NotEmpty", withFresh: testLoadNotEmpty},
	{name: "Load/Invalid", fn: testLoadInvalid},
}

// fillEveryState builds a store with keys in every state and every kind of
// field: origins, derivation indices, deposits or none, transactions
// (unconfirmed, confirmed, created by a confirmation, kept by a failure),
// pods with and without UIDs, intended and spare pending keys, released and
// never-released available keys; plus bindings, reserved indices and an
// audit trail with automatic and caller events.
func fillEveryState(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	keys := nks(1, 2, 3, 4, 5)
	keys[1].Origin, keys[1].DerivationIndex, keys[1].HasDerivationIndex = store.OriginDerived, 7, true
	keys[2].Origin, keys[2].Deposit = store.OriginImported, nil
	must(t, s.AddKeys(ctx, keys, store.StateAvailable, at(0)))
	wantClaim(t, claim(t, s, "pod-a", "A", 2, at(1)), pks(1, 2), 0, 2)
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(1)), pks(3), 0, 1)
	wantClaim(t, claim(t, s, "pod-c", "C", 1, at(1)), pks(4), 0, 1)
	release(t, s, "pod-c", "C", at(500), at(2)) // k4 cooling until 500
	wantClaim(t, claim(t, s, "pod-d", "D", 1, at(2)), pks(5), 0, 1)
	release(t, s, "pod-d", "D", at(3), at(3))
	if n, err := s.Sweep(ctx, at(3)); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want k5", n, err)
	}
	addKeys(t, s, store.StateAvailable, at(4), 6) // never released
	addPending(t, s, "pod-a", "A", 4, nks(7, 8), at(5))
	setTx(t, s, 7, at(6))
	must(t, s.AddPending(ctx, store.AddParams{Keys: nks(9, 10, 12), Now: at(5)}))
	setTx(t, s, 10, at(6))
	must(t, s.FailDeposit(store.WithActor(ctx, "deposit-watcher"), PK(10), "reverted", at(7)))
	must(t, s.Retire(store.WithActor(ctx, "user:alice"), PK(6), "compromised", at(8)))
	addPending(t, s, "pod-e", "", 1, nks(11), at(9))
	setTx(t, s, 12, at(9))
	confirm(t, s, PK(12), 42, at(10)) // available, with a confirmed transaction
	must(t, s.AddKeys(ctx, nks(13), store.StatePendingDeposit, at(10)))
	confirm(t, s, PK(13), 43, at(11)) // available, transaction created by the confirmation
	if got := reserve(t, s, 9); got != 0 {
		t.Fatalf("ReserveIndices(9) = %d, want 0", got)
	}
	must(t, s.Bind(ctx, "kek", "fp-1"))
	must(t, s.Bind(ctx, "empty", ""))
	must(t, s.AppendAudit(store.WithActor(ctx, "pod-watcher"), store.AuditEvent{
		Time: at(12), Action: "release-blocked", Pod: "pod-a", PodUID: "A", Pubkeys: pks(2, 1), Reason: "still running",
	}))
	// pod-f releases k14 and k15 with slashing protection for k14; k15 is
	// seen signing afterwards.
	if _, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-f", PodUID: "F", Want: 2, Keys: nks(14, 15), Now: at(13)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-f", PodUID: "F", Until: at(600), Now: at(14), Reason: "done",
		Protection: map[store.Pubkey]store.Protection{PK(14): {HasBlock: true, BlockSlot: 100, HasAttestation: true, SourceEpoch: 2, TargetEpoch: 3}}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Quarantine(ctx, pks(15), "seen signing in epoch 9", at(15)); err != nil || n != 1 {
		t.Fatalf("Quarantine = %d, %v", n, err)
	}
	// k16 is exiting (its voluntary exit signed).
	addKeys(t, s, store.StateAvailable, at(15), 16)
	if _, err := s.Exit(store.WithActor(ctx, "user:alice"), store.ExitParams{Pubkeys: pks(16), Reason: "fleet shrinks", Now: at(16)}); err != nil {
		t.Fatalf("Exit: %v", err)
	}

	states := make(map[store.State]bool)
	for _, k := range list(t, s, store.ListOptions{}) {
		states[k.State] = true
	}
	if len(states) != len(store.States) {
		t.Fatalf("test setup: states %v, want every state", slices.Collect(maps.Keys(states)))
	}
}

func dump(t *testing.T, s store.Store) ([]store.Key, store.Snapshot) {
	t.Helper()
	var keys []store.Key
	snap, err := s.Dump(t.Context(), func(k store.Key) error {
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return keys, snap
}

// wantSameDump checks that two dumps hold the same keys and snapshot.
func wantSameDump(t *testing.T, gotKeys []store.Key, got store.Snapshot, wantKeys []store.Key, want store.Snapshot) {
	t.Helper()
	if len(gotKeys) != len(wantKeys) {
		t.Errorf("dump has %d keys, want %d", len(gotKeys), len(wantKeys))
	} else {
		for i := range gotKeys {
			wantKey(t, gotKeys[i], wantKeys[i])
		}
	}
	if !maps.Equal(got.Bindings, want.Bindings) || got.Bindings == nil {
		t.Errorf("dump bindings = %v, want %v (never nil)", got.Bindings, want.Bindings)
	}
	if got.NextIndex != want.NextIndex {
		t.Errorf("dump NextIndex = %d, want %d", got.NextIndex, want.NextIndex)
	}
	wantEvents(t, got.Audit, want.Audit)
}

func testDumpEveryField(t *testing.T, s store.Store) {
	fillEveryState(t, s)
	keys, snap := dump(t, s)
	listed := list(t, s, store.ListOptions{})
	if got, want := pubkeysOf(keys), pubkeysOf(listed); !slices.Equal(got, want) {
		t.Fatalf("Dump keys = %s, want every key in pubkey order %s", names(got), names(want))
	}
	for _, k := range keys {
		wantKey(t, k, getKey(t, s, k.Pubkey)) // secret, deposit, transaction
	}
	if want := map[string]string{"kek": "fp-1", "empty": ""}; !maps.Equal(snap.Bindings, want) {
		t.Errorf("Bindings = %v, want %v", snap.Bindings, want)
	}
	if snap.NextIndex != 9 {
		t.Errorf("NextIndex = %d, want 9", snap.NextIndex)
	}
	wantEvents(t, snap.Audit, auditTrail(t, s))
	if len(snap.Audit) != 12 {
		t.Errorf("%d audit events, want 12 (4 assignments, 3 releases, a failure, a retirement, a caller's, a quarantine, an exit)", len(snap.Audit))
	}
	// Dumping changes nothing and gives the same again.
	again, snapAgain := dump(t, s)
	wantSameDump(t, again, snapAgain, keys, snap)
}

func testDumpStop(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	errStop := errors.New("stop here")
	calls := 0
	_, err := s.Dump(t.Context(), func(store.Key) error {
		if calls++; calls == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || calls != 2 {
		t.Errorf("Dump = %v after %d calls, want the error fn returned at call 2", err, calls)
	}
}

func testDumpLoadRoundTrip(t *testing.T, s store.Store, fresh func() store.Store) {
	fillEveryState(t, s)
	keys, snap := dump(t, s)
	d := fresh()
	must(t, d.Load(t.Context(), snap, keys))
	CheckInvariants(t, d)

	// Everything reads back the same: keys, counts, audit, and a new dump.
	before, after := takeSnapshot(t, s), takeSnapshot(t, d)
	if !reflect.DeepEqual(before.counts, after.counts) {
		t.Errorf("counts after Load = %v, want %v", after.counts, before.counts)
	}
	if len(before.keys) != len(after.keys) {
		t.Fatalf("%d keys after Load, want %d", len(after.keys), len(before.keys))
	}
	for i := range before.keys {
		wantKey(t, after.keys[i], before.keys[i])
	}
	wantEvents(t, after.audit, before.audit)
	keys2, snap2 := dump(t, d)
	wantSameDump(t, keys2, snap2, keys, snap)
	for _, pod := range []string{"pod-a", "pod-b", "pod-e"} {
		if g, w := pubkeysOf(list(t, d, store.ListOptions{Pod: pod})), pubkeysOf(list(t, s, store.ListOptions{Pod: pod})); !slices.Equal(g, w) {
			t.Errorf("ListKeys(%s) after Load = %s, want %s", pod, names(g), names(w))
		}
	}

	// And the loaded store carries on exactly like the original: the same
	// calls give the same answers on both.
	type outcome struct {
		Index        uint32
		BindErr      bool
		UIDErr       bool
		ClaimA       []store.Pubkey
		PendingA     []store.Pubkey
		ClaimX       []store.Pubkey
		ClaimY       []store.Pubkey
		Confirmed    store.Key
		ClaimE       []store.Pubkey
		AuditSeq     uint64
		Released     int
		ReleaseEvent store.AuditEvent
	}
	carryOn := func(st store.Store) outcome {
		t.Helper()
		ctx := t.Context()
		var o outcome
		o.Index = reserve(t, st, 1)
		o.BindErr = errors.Is(st.Bind(ctx, "kek", "fp-2"), store.ErrBindingMismatch)
		_, err := st.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "A-other", Want: 1, Now: at(20)})
		o.UIDErr = errors.Is(err, store.ErrPodUIDMismatch)
		c := claim(t, st, "pod-a", "", 4, at(20))
		o.ClaimA, o.PendingA = pubkeysOf(c.Keys), pubkeysOf(c.Pending)
		o.ClaimX = pubkeysOf(claim(t, st, "pod-x", "X", 2, at(21)).Keys)  // pool order
		o.ClaimY = pubkeysOf(claim(t, st, "pod-y", "Y", 3, at(500)).Keys) // k4 cools until 500
		o.Confirmed = norm(confirm(t, st, PK(11), 50, at(22)))
		o.ClaimE = pubkeysOf(claim(t, st, "pod-e", "E", 1, at(23)).Keys)
		must(t, st.AppendAudit(ctx, store.AuditEvent{Time: at(24), Action: "after"}))
		trail := auditTrail(t, st)
		o.AuditSeq = trail[len(trail)-1].Seq
		o.Released = release(t, st, "pod-a", "A", at(30), at(25))
		trail = auditTrail(t, st)
		o.ReleaseEvent = trail[len(trail)-1]
		CheckInvariants(t, st)
		return o
	}
	want, got := carryOn(s), carryOn(d)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the loaded store answers differently:\n got %+v\nwant %+v", got, want)
	}
	// Spot checks that the original behaves as the contract says (pod-e's
	// claim records its UID on k11: an event before "after").
	if want.Index != 9 || !want.BindErr || !want.UIDErr || want.AuditSeq != 16 {
		t.Errorf("original store: index %d, bind mismatch %t, UID mismatch %t, audit Seq %d; want 9, true, true, 16",
			want.Index, want.BindErr, want.UIDErr, want.AuditSeq)
	}
	if !slices.Equal(want.ClaimA, pks(1, 2)) || !slices.Equal(want.PendingA, pks(7, 8)) {
		t.Errorf("pod-a: keys %s, pending %s; want [k1 k2] and [k7 k8]", names(want.ClaimA), names(want.PendingA))
	}
	// Pool: k5 (released at 3), then never-released k12 (created 5), k13 (created 10).
	if !slices.Equal(want.ClaimX, pks(5, 12)) || !slices.Equal(want.ClaimY, pks(4, 13)) {
		t.Errorf("pool order: pod-x got %s, pod-y %s; want [k5 k12] and [k4 k13]", names(want.ClaimX), names(want.ClaimY))
	}
	if want.Confirmed.State != store.StateAssigned || want.Confirmed.Pod != "pod-e" || !slices.Equal(want.ClaimE, pks(11)) {
		t.Errorf("k11 confirmed = %s, pod-e claims %s; want k11 assigned to pod-e", describe(want.Confirmed), names(want.ClaimE))
	}
	if want.Released != 2 || !slices.Equal(want.ReleaseEvent.Pubkeys, pks(1, 2, 7, 8)) {
		t.Errorf("Release(pod-a) = %d, event %+v; want 2 keys cooling and [k1 k2 k7 k8] in the event", want.Released, want.ReleaseEvent)
	}
}

// Load keeps what it is given, whatever its order, and the store works
// from it: pool order, cooling deadlines, pods, pending keys, audit Seq.
func testLoadAsGiven(t *testing.T, s store.Store) {
	sub := 789 * time.Nanosecond // Load keeps microseconds like every call
	keys := []store.Key{
		{Pubkey: PK(6), State: store.StateAvailable, Origin: store.OriginRandom, LastPod: "old",
			Since: at(10).Add(sub), CreatedAt: at(2), ReleasedAt: at(9).Add(sub), SealedSecret: sealed(6)},
		{Pubkey: PK(1), State: store.StateAssigned, Origin: store.OriginDerived, DerivationIndex: 3, HasDerivationIndex: true,
			Pod: "pod-a", PodUID: "A", LastPod: "pod-a", Since: at(5), CreatedAt: at(1), ReleasedAt: at(4),
			SealedSecret: sealed(1), Deposit: deposit(1)},
		{Pubkey: PK(5), State: store.StateAvailable, Origin: store.OriginImported,
			Since: at(1), CreatedAt: at(1), SealedSecret: sealed(5)},
		{Pubkey: PK(4), State: store.StateCoolingDown, Origin: store.OriginRandom, LastPod: "pod-z",
			Since: at(8), CreatedAt: at(1), ReleasedAt: at(8), CoolingUntil: at(50), SealedSecret: sealed(4)},
		{Pubkey: PK(2), State: store.StatePendingDeposit, Origin: store.OriginRandom, Pod: "pod-a", PodUID: "A",
			Since: at(6), CreatedAt: at(6), SealedSecret: sealed(2), Deposit: deposit(2),
			DepositTx: &store.DepositTx{Nonce: 7, Hash: [32]byte{1, 2, 3}, Raw: []byte{9, 8, 7}, RecordedAt: at(7).Add(sub)}},
		{Pubkey: PK(3), State: store.StateDepositFailed, Origin: store.OriginRandom, LastPod: "pod-q", RetiredReason: "reverted",
			Since: at(7), CreatedAt: at(6), SealedSecret: sealed(3),
			DepositTx: &store.DepositTx{Nonce: 8, Block: 0, RecordedAt: at(6)}},
		{Pubkey: PK(7), State: store.StateRetired, Origin: store.OriginRandom, LastPod: "pod-a", RetiredReason: "",
			Since: at(9), CreatedAt: at(1), ReleasedAt: at(3), SealedSecret: sealed(7)},
	}
	snap := store.Snapshot{
		Bindings:  map[string]string{"kek": "fp"},
		NextIndex: 4,
		Audit: []store.AuditEvent{
			{Seq: 5, Time: at(3).Add(sub), Action: "release", Pod: "pod-a", Pubkeys: pks(1), Actor: "a"},
			{Seq: 9, Time: at(9), Action: "retire", Pubkeys: pks(7)},
		},
	}
	must(t, s.Load(t.Context(), snap, keys))
	for _, k := range keys {
		want := k
		for _, p := range []*time.Time{&want.Since, &want.CreatedAt, &want.ReleasedAt, &want.CoolingUntil} {
			*p = p.Truncate(time.Microsecond)
		}
		if want.DepositTx != nil {
			tx := *want.DepositTx
			tx.RecordedAt = tx.RecordedAt.Truncate(time.Microsecond)
			want.DepositTx = &tx
		}
		wantKey(t, getKey(t, s, k.Pubkey), want)
	}
	wantCounts(t, s, map[store.State]int{
		store.StatePendingDeposit: 1, store.StateAvailable: 2, store.StateAssigned: 1,
		store.StateCoolingDown: 1, store.StateRetired: 1, store.StateDepositFailed: 1,
	})
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{
		{Seq: 5, Time: us(at(3).Add(sub)), Action: "release", Pod: "pod-a", Pubkeys: pks(1), Actor: "a"},
		{Seq: 9, Time: us(at(9)), Action: "retire", Pubkeys: pks(7)},
	})
	wantErr(t, s.Bind(t.Context(), "kek", "other"), store.ErrBindingMismatch)
	if got := reserve(t, s, 1); got != 4 {
		t.Errorf("ReserveIndices after Load = %d, want 4", got)
	}

	// pod-a holds k1 and has k2 pending under A.
	_, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-a", PodUID: "B", Want: 1, Now: at(20)})
	wantErr(t, err, store.ErrPodUIDMismatch)
	c := claim(t, s, "pod-a", "A", 2, at(20))
	wantClaim(t, c, pks(1), 0, 0)
	wantPending(t, c, pks(2))
	// Pool: k6 (released at 9) before k5 (never released), although k5 was
	// created first and has the smaller pubkey; k4 only at 50.
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(20)), pks(6), 0, 1)
	wantClaim(t, claim(t, s, "pod-c", "", 2, at(49)), pks(5), 1, 1)
	wantClaim(t, claim(t, s, "pod-c", "", 2, at(50)), pks(4, 5), 0, 1)
	// The three claims that took keys recorded Seq 10-12.
	must(t, s.AppendAudit(t.Context(), store.AuditEvent{Time: at(21), Action: "next"}))
	if trail := auditTrail(t, s); trail[len(trail)-1].Seq != 13 {
		t.Errorf("Seq after a loaded trail ending at 9 = %d, want 13", trail[len(trail)-1].Seq)
	}
}

// validLoad is a small consistent input for Load.
func validLoad() (store.Snapshot, []store.Key) {
	keys := []store.Key{
		{Pubkey: PK(1), State: store.StateAssigned, Origin: store.OriginRandom, Pod: "pod-a", PodUID: "A", LastPod: "pod-a",
			Since: at(1), CreatedAt: at(0), SealedSecret: sealed(1)},
		{Pubkey: PK(2), State: store.StatePendingDeposit, Origin: store.OriginRandom, Pod: "pod-a", PodUID: "A",
			Since: at(1), CreatedAt: at(1), SealedSecret: sealed(2)},
		{Pubkey: PK(3), State: store.StateAvailable, Origin: store.OriginRandom, Since: at(0), CreatedAt: at(0), SealedSecret: sealed(3)},
		{Pubkey: PK(4), State: store.StateCoolingDown, Origin: store.OriginRandom, LastPod: "pod-b",
			Since: at(2), CreatedAt: at(0), ReleasedAt: at(2), CoolingUntil: at(9), SealedSecret: sealed(4)},
		{Pubkey: PK(5), State: store.StateRetired, Origin: store.OriginRandom, RetiredReason: "r",
			Since: at(2), CreatedAt: at(0), SealedSecret: sealed(5)},
	}
	snap := store.Snapshot{
		Bindings:  map[string]string{"kek": "fp"},
		NextIndex: 3,
		Audit:     []store.AuditEvent{{Seq: 1, Time: at(2), Action: "release", Pod: "pod-b"}, {Seq: 2, Time: at(2), Action: "retire"}},
	}
	return snap, keys
}

func testLoadNotEmpty(t *testing.T, s store.Store, fresh func() store.Store) {
	snap, keys := validLoad()
	ctx := t.Context()
	for what, fill := range map[string]func(store.Store){
		"a key":            func(st store.Store) { addKeys(t, st, store.StatePendingDeposit, at(0), 99) },
		"a binding":        func(st store.Store) { must(t, st.Bind(ctx, "kek", "fp")) },
		"an audit event":   func(st store.Store) { must(t, st.AppendAudit(ctx, store.AuditEvent{Time: at(0), Action: "x"})) },
		"a reserved index": func(st store.Store) { reserve(t, st, 1) },
		"a retired key": func(st store.Store) {
			addKeys(t, st, store.StateAvailable, at(0), 98)
			must(t, st.Retire(ctx, PK(98), "r", at(0)))
		},
	} {
		st := fresh()
		fill(st)
		beforeKeys, beforeSnap := dump(t, st)
		before := takeSnapshot(t, st)
		if err := st.Load(ctx, snap, keys); !errors.Is(err, store.ErrNotEmpty) {
			t.Errorf("Load into a store with %s: error = %v, want ErrNotEmpty", what, err)
		}
		// Invalid input is refused as invalid, empty store or not.
		spoiled := slices.Clone(keys)
		spoiled[0].Pod = ""
		if err := st.Load(ctx, snap, spoiled); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("Load of invalid keys into a store with %s: error = %v, want ErrInvalidArgument", what, err)
		}
		unchanged(t, st, before)
		afterKeys, afterSnap := dump(t, st)
		wantSameDump(t, afterKeys, afterSnap, beforeKeys, beforeSnap)
	}
	// The store given to the test is empty: Load works, once.
	must(t, s.Load(ctx, snap, keys))
	wantErr(t, s.Load(ctx, snap, keys), store.ErrNotEmpty)
	wantErr(t, s.Load(ctx, store.Snapshot{}, nil), store.ErrNotEmpty)
}

func testLoadInvalid(t *testing.T, s store.Store) {
	type spoiler func(snap *store.Snapshot, keys []store.Key) []store.Key
	late := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := map[string]spoiler{
		"assigned without pod": func(_ *store.Snapshot, k []store.Key) []store.Key {
			k[0].Pod, k[0].PodUID, k[0].LastPod = "", "", ""
			return k
		},
		"assigned, LastPod not Pod": func(_ *store.Snapshot, k []store.Key) []store.Key { k[0].LastPod = "pod-z"; return k },
		"pending under another UID": func(_ *store.Snapshot, k []store.Key) []store.Key { k[1].PodUID = "B"; return k },
		"pending without UID":       func(_ *store.Snapshot, k []store.Key) []store.Key { k[1].PodUID = ""; return k },
		"assigned under two UIDs": func(_ *store.Snapshot, k []store.Key) []store.Key {
			extra := k[0]
			extra.Pubkey, extra.PodUID = PK(6), "A2"
			return append(k, extra)
		},
		"duplicate pubkey": func(_ *store.Snapshot, k []store.Key) []store.Key {
			dup := k[2]
			dup.State, dup.RetiredReason = store.StateRetired, "dup"
			return append(k, dup)
		},
		"undefined state":       func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].State = "lost"; return k },
		"empty state":           func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].State = ""; return k },
		"undefined origin":      func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].Origin = "found"; return k },
		"no sealed secret":      func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].SealedSecret = nil; return k },
		"derived without index": func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].Origin = store.OriginDerived; return k },
		"zero CreatedAt":        func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].CreatedAt = time.Time{}; return k },
		"zero Since":            func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].Since = time.Time{}; return k },
		"Since in year 10000":   func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].Since = late; return k },
		"available with a pod":  func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].Pod = "pod-a"; k[2].PodUID = "A"; return k },
		"retired with a pod":    func(_ *store.Snapshot, k []store.Key) []store.Key { k[4].Pod = "pod-r"; return k },
		"PodUID without pod":    func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].PodUID = "A"; return k },
		"cooling without until": func(_ *store.Snapshot, k []store.Key) []store.Key { k[3].CoolingUntil = time.Time{}; return k },
		"available with until":  func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].CoolingUntil = at(9); return k },
		"reason on available":   func(_ *store.Snapshot, k []store.Key) []store.Key { k[2].RetiredReason = "r"; return k },
		"tx without RecordedAt": func(_ *store.Snapshot, k []store.Key) []store.Key {
			k[1].DepositTx = &store.DepositTx{Nonce: 1, Raw: []byte{1}}
			return k
		},
		"audit Seq 0": func(s *store.Snapshot, k []store.Key) []store.Key {
			s.Audit = []store.AuditEvent{{Seq: 0, Time: at(1), Action: "x"}}
			return k
		},
		"audit Seq repeated": func(s *store.Snapshot, k []store.Key) []store.Key {
			s.Audit = []store.AuditEvent{{Seq: 1, Time: at(1), Action: "x"}, {Seq: 1, Time: at(1), Action: "y"}}
			return k
		},
		"audit Seq decreasing": func(s *store.Snapshot, k []store.Key) []store.Key {
			s.Audit = []store.AuditEvent{{Seq: 3, Time: at(1), Action: "x"}, {Seq: 2, Time: at(1), Action: "y"}}
			return k
		},
		"audit without action": func(s *store.Snapshot, k []store.Key) []store.Key {
			s.Audit = []store.AuditEvent{{Seq: 1, Time: at(1)}}
			return k
		},
		"audit without time": func(s *store.Snapshot, k []store.Key) []store.Key {
			s.Audit = []store.AuditEvent{{Seq: 1, Action: "x"}}
			return k
		},
		"binding without name": func(s *store.Snapshot, k []store.Key) []store.Key {
			s.Bindings = map[string]string{"kek": "fp", "": "v"}
			return k
		},
	}
	ctx := t.Context()
	for what, spoil := range cases {
		snap, keys := validLoad()
		keys = spoil(&snap, keys)
		if err := s.Load(ctx, snap, keys); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("Load with %s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	// Nothing of any attempt was kept: the store is still empty, and the
	// valid input loads.
	keys, snap := dump(t, s)
	if len(keys) != 0 || len(snap.Bindings) != 0 || snap.NextIndex != 0 || len(snap.Audit) != 0 {
		t.Fatalf("failed Loads left %d keys, bindings %v, next index %d, %d audit events", len(keys), snap.Bindings, snap.NextIndex, len(snap.Audit))
	}
	wantCounts(t, s, nil)
	validSnap, validKeys := validLoad()
	must(t, s.Load(ctx, validSnap, validKeys))
	wantCounts(t, s, map[store.State]int{
		store.StateAssigned: 1, store.StatePendingDeposit: 1, store.StateAvailable: 1,
		store.StateCoolingDown: 1, store.StateRetired: 1,
	})
}
