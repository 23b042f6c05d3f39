package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var depositTests = []testCase{
	{name: "SetDepositTx", fn: testSetDepositTx},
	{name: "SetDepositTx/Errors", fn: testSetDepositTxErrors},
	{name: "ConfirmDeposit/ToPod", fn: testConfirmDepositToPod},
	{name: "ConfirmDeposit/ToPool", fn: testConfirmDepositToPool},
	{name: "ConfirmDeposit/Errors", fn: testConfirmDepositErrors},
	{name: "FailDeposit", fn: testFailDeposit},
	{name: "FailDeposit/Errors", fn: testFailDepositErrors},
}

func testSetDepositTx(t *testing.T, s store.Store) {
	addKeys(t, s, store.StatePendingDeposit, at(0), 1, 2)
	tx := txFor(1)
	must(t, s.SetDepositTx(t.Context(), PK(1), tx, at(1)))
	tx.Raw[0] ^= 0xff // the store must have copied it
	want := store.Key{
		Pubkey: PK(1), State: store.StatePendingDeposit, Origin: store.OriginRandom,
		Since: us(at(0)), CreatedAt: us(at(0)), SealedSecret: sealed(1), Deposit: deposit(1),
		DepositTx: recordedTx(txFor(1), at(1)),
	}
	got := getKey(t, s, PK(1))
	wantKey(t, got, want)
	// Returned bytes are the caller's to change.
	if got.DepositTx != nil {
		got.DepositTx.Raw[0] ^= 0xff
		wantKey(t, getKey(t, s, PK(1)), want)
	}

	// A re-signed transaction with the same nonce replaces the record.
	re := txFor(1)
	re.Hash[0] ^= 0x01
	re.Raw = append(re.Raw, 0x99)
	must(t, s.SetDepositTx(t.Context(), PK(1), re, at(2)))
	want.DepositTx = recordedTx(re, at(2))
	wantKey(t, getKey(t, s, PK(1)), want)
	if k := getKey(t, s, PK(2)); k.DepositTx != nil {
		t.Errorf("k2 has a deposit transaction it was never given: %s", describe(k))
	}

	// Listings fill it only with WithDeposit.
	for _, k := range list(t, s, store.ListOptions{WithDeposit: true}) {
		full := getKey(t, s, k.Pubkey)
		full.SealedSecret = nil
		wantKey(t, k, full)
	}
	for _, k := range list(t, s, store.ListOptions{}) {
		if k.DepositTx != nil {
			t.Errorf("ListKeys without WithDeposit: key %s has a DepositTx", name(k.Pubkey))
		}
	}
	wantCounts(t, s, map[store.State]int{store.StatePendingDeposit: 2})
}

func testSetDepositTxErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	addKeys(t, s, store.StatePendingDeposit, at(0), 4, 5)
	claim(t, s, "pod-a", "A", 1, at(1)) // k1
	must(t, s.Retire(t.Context(), PK(3), "r", at(1)))
	must(t, s.FailDeposit(t.Context(), PK(4), "reverted", at(1)))
	setTx(t, s, 5, at(1))
	before := takeSnapshot(t, s)
	ctx := t.Context()
	for _, i := range []int{1, 2, 3, 4} { // assigned, available, retired, deposit-failed
		wantErr(t, s.SetDepositTx(ctx, PK(i), txFor(i), at(2)), store.ErrWrongState)
	}
	wantErr(t, s.SetDepositTx(ctx, PK(99), txFor(99), at(2)), store.ErrNotFound)
	noRaw, emptyRaw := txFor(5), txFor(5)
	noRaw.Raw, emptyRaw.Raw = nil, []byte{}
	for what, err := range map[string]error{
		"nil Raw":    s.SetDepositTx(ctx, PK(5), noRaw, at(2)),
		"empty Raw":  s.SetDepositTx(ctx, PK(5), emptyRaw, at(2)),
		"zero now":   s.SetDepositTx(ctx, PK(5), txFor(5), time.Time{}),
		"year 10000": s.SetDepositTx(ctx, PK(5), txFor(5), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)),
	} {
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("SetDepositTx with %s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	unchanged(t, s, before)
}

func testConfirmDepositToPod(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	wantClaim(t, claim(t, s, "pod-a", "A", 1, at(1)), pks(1), 0, 1)
	addPending(t, s, "pod-a", "A", 3, nks(2, 3), at(2))
	setTx(t, s, 2, at(3))

	k := confirm(t, s, PK(2), 1234, at(4))
	tx := recordedTx(txFor(2), at(3))
	tx.Block = 1234
	want := store.Key{
		Pubkey: PK(2), State: store.StateAssigned, Origin: store.OriginRandom,
		Pod: "pod-a", PodUID: "A", LastPod: "pod-a",
		Since: us(at(4)), CreatedAt: us(at(2)), Deposit: deposit(2), DepositTx: tx,
	}
	wantKey(t, k, want) // no SealedSecret in the result
	want.SealedSecret = sealed(2)
	wantKey(t, getKey(t, s, PK(2)), want)

	// The key has joined the pod's set; k3 is still pending.
	c := claim(t, s, "pod-a", "A", 3, at(5))
	wantClaim(t, c, pks(1, 2), 0, 0)
	wantPending(t, c, pks(3))
	if len(c.Keys) == 2 {
		want.Deposit, want.DepositTx = nil, nil // a Claim fills neither
		wantKey(t, c.Keys[1], want)
	}
	if got := pubkeysOf(list(t, s, store.ListOptions{Pod: "pod-a"})); len(got) != 3 {
		t.Errorf("ListKeys(pod-a) = %s, want [k1 k2 k3]", names(got))
	}
	wantCounts(t, s, map[store.State]int{store.StateAssigned: 2, store.StatePendingDeposit: 1})

	// Confirmed is final: a second confirmation is the wrong state.
	before := takeSnapshot(t, s)
	_, err := s.ConfirmDeposit(t.Context(), PK(2), 1235, at(6))
	wantErr(t, err, store.ErrWrongState)
	unchanged(t, s, before)

	// Released with the pod like any assigned key.
	if n := release(t, s, "pod-a", "A", at(10), at(7)); n != 2 {
		t.Errorf("Release(pod-a) = %d, want 2", n)
	}
}

func testConfirmDepositToPool(t *testing.T, s store.Store) {
	must(t, s.AddPending(t.Context(), store.AddParams{Keys: nks(1, 2), Now: at(1)}))
	addKeys(t, s, store.StateAvailable, at(2), 3)

	// No transaction was recorded (a deposit found on chain): one is created.
	k := confirm(t, s, PK(1), 77, at(3))
	want := store.Key{
		Pubkey: PK(1), State: store.StateAvailable, Origin: store.OriginRandom,
		Since: us(at(3)), CreatedAt: us(at(1)), Deposit: deposit(1),
		DepositTx: &store.DepositTx{Block: 77, RecordedAt: us(at(3))},
	}
	wantKey(t, k, want)
	want.SealedSecret = sealed(1)
	wantKey(t, getKey(t, s, PK(1)), want)
	wantCounts(t, s, map[store.State]int{store.StateAvailable: 2, store.StatePendingDeposit: 1})

	// It is claimable, in pool order (never released, CreatedAt 1 before 2).
	wantClaim(t, claim(t, s, "pod-b", "", 1, at(4)), pks(1), 0, 1)
	// k2 is still pending, and pending spares are never taken.
	c := claim(t, s, "pod-c", "", 2, at(4))
	wantClaim(t, c, pks(3), 1, 1)
	wantPending(t, c, nil)
	if k := getKey(t, s, PK(2)); k.State != store.StatePendingDeposit {
		t.Errorf("k2 state = %s, want pending-deposit", k.State)
	}
}

func testConfirmDepositErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	addKeys(t, s, store.StatePendingDeposit, at(0), 3, 4)
	claim(t, s, "pod-a", "", 1, at(1)) // k1
	must(t, s.FailDeposit(t.Context(), PK(4), "reverted", at(1)))
	before := takeSnapshot(t, s)
	ctx := t.Context()
	for _, i := range []int{1, 2, 4} { // assigned, available, deposit-failed
		_, err := s.ConfirmDeposit(ctx, PK(i), 5, at(2))
		wantErr(t, err, store.ErrWrongState)
	}
	_, err := s.ConfirmDeposit(ctx, PK(99), 5, at(2))
	wantErr(t, err, store.ErrNotFound)
	for what, call := range map[string]func() error{
		"block 0":  func() error { _, err := s.ConfirmDeposit(ctx, PK(3), 0, at(2)); return err },
		"zero now": func() error { _, err := s.ConfirmDeposit(ctx, PK(3), 5, time.Time{}); return err },
	} {
		if err := call(); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("ConfirmDeposit with %s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	unchanged(t, s, before)
}

func testFailDeposit(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	addPending(t, s, "pod-a", "A", 2, nks(2, 3), at(1))
	setTx(t, s, 2, at(2))

	ctx := store.WithActor(t.Context(), "deposit-watcher")
	must(t, s.FailDeposit(ctx, PK(2), "transaction reverted", at(3)))
	wantKey(t, getKey(t, s, PK(2)), store.Key{
		Pubkey: PK(2), State: store.StateDepositFailed, Origin: store.OriginRandom,
		LastPod: "pod-a", RetiredReason: "transaction reverted",
		Since: us(at(3)), CreatedAt: us(at(1)), SealedSecret: sealed(2), Deposit: deposit(2),
		DepositTx: recordedTx(txFor(2), at(2)),
	})
	wantEvents(t, auditTrail(t, s), []store.AuditEvent{{
		Seq: 1, Time: us(at(3)), Action: "deposit-failed", Pod: "pod-a", PodUID: "A",
		Pubkeys: pks(2), Reason: "transaction reverted", Actor: "deposit-watcher",
	}})

	// The pod lost the key: it now counts 1 pending and tops up from the pool.
	c := claim(t, s, "pod-a", "A", 2, at(4))
	wantClaim(t, c, pks(1), 0, 1)
	wantPending(t, c, pks(3))
	if got := pubkeysOf(list(t, s, store.ListOptions{Pod: "pod-a"})); len(got) != 2 || got[0] != PK(1) || got[1] != PK(3) {
		t.Errorf("ListKeys(pod-a) = %s, want [k1 k3]", names(got))
	}

	// A failed key is never handed out, nor swept, nor confirmed.
	before := takeSnapshot(t, s)
	c = claim(t, s, "pod-b", "", 1, at(5))
	wantClaim(t, c, nil, 1, 0)
	c, err := s.Claim(t.Context(), store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(5), AllOrNothing: true})
	must(t, err)
	if c.Available != 0 || len(c.Keys) != 0 {
		t.Errorf("AllOrNothing claim: %d keys, Available %d; want none: deposit-failed keys are not claimable", len(c.Keys), c.Available)
	}
	if n, err := s.Sweep(t.Context(), at(1_000_000)); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v; want 0", n, err)
	}
	_, err = s.ConfirmDeposit(t.Context(), PK(2), 9, at(6))
	wantErr(t, err, store.ErrWrongState)
	unchanged(t, s, before)

	// A spare with no pod: LastPod stays as it was (empty here); the event
	// has no pod; an empty actor is the server.
	must(t, s.AddPending(t.Context(), store.AddParams{Keys: nks(4), Now: at(6)}))
	must(t, s.FailDeposit(t.Context(), PK(4), "rejected by the node", at(7)))
	if k := getKey(t, s, PK(4)); k.State != store.StateDepositFailed || k.LastPod != "" || k.RetiredReason != "rejected by the node" || k.DepositTx != nil {
		t.Errorf("k4 = %s, want deposit-failed without LastPod or DepositTx", describe(k))
	}
	trail := auditTrail(t, s)
	wantEvents(t, trail[len(trail)-1:], []store.AuditEvent{{
		Seq: 3, Time: us(at(7)), Action: "deposit-failed", Pubkeys: pks(4), Reason: "rejected by the node", Actor: store.ActorServer,
	}})
	wantCounts(t, s, map[store.State]int{store.StateDepositFailed: 2, store.StateAssigned: 1, store.StatePendingDeposit: 1})

	// An operator may retire it.
	must(t, s.Retire(t.Context(), PK(2), "operator gave up", at(8)))
	if k := getKey(t, s, PK(2)); k.State != store.StateRetired || k.RetiredReason != "operator gave up" || k.LastPod != "pod-a" {
		t.Errorf("retired k2 = %s, want retired with the new reason and LastPod kept", describe(k))
	}
}

func testFailDepositErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2)
	addKeys(t, s, store.StatePendingDeposit, at(0), 3, 4)
	claim(t, s, "pod-a", "", 1, at(1)) // k1
	must(t, s.FailDeposit(t.Context(), PK(4), "reverted", at(1)))
	before := takeSnapshot(t, s)
	ctx := t.Context()
	for _, i := range []int{1, 2, 4} { // assigned, available, deposit-failed
		wantErr(t, s.FailDeposit(ctx, PK(i), "again", at(2)), store.ErrWrongState)
	}
	wantErr(t, s.FailDeposit(ctx, PK(99), "unknown", at(2)), store.ErrNotFound)
	wantErr(t, s.FailDeposit(ctx, PK(3), "", at(2)), store.ErrInvalidArgument)
	wantErr(t, s.FailDeposit(ctx, PK(3), "r", time.Time{}), store.ErrInvalidArgument)
	unchanged(t, s, before)
	if k := getKey(t, s, PK(4)); k.RetiredReason != "reverted" {
		t.Errorf("k4 reason = %q, want the first one", k.RetiredReason)
	}
}
