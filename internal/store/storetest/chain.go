package storetest

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Records of chain facts: the deposit index, recovered deposits, bindings.
var chainTests = []testCase{
	{name: "DepositIndex/Advance", fn: testDepositIndexAdvance},
	{name: "DepositIndex/Rewind", fn: testDepositIndexRewind},
	{name: "DepositIndex/NewSource", fn: testDepositIndexNewSource},
	{name: "DepositIndex/Errors", fn: testDepositIndexErrors},
	{name: "DepositIndex/NotInDump", withFresh: testDepositIndexNotInDump},
	{name: "RecoverDeposit", fn: testRecoverDeposit},
	{name: "RecoverDeposit/Errors", fn: testRecoverDepositErrors},
	{name: "Bindings", fn: testBindings},
}

func cursor(source string, next uint64, h byte) store.IndexCursor {
	c := store.IndexCursor{Source: source, Next: next}
	if h != 0 {
		c.Hash[0], c.Hash[31] = h, ^h
	}
	return c
}

func wantCursor(t *testing.T, s store.Store, want store.IndexCursor) {
	t.Helper()
	got, err := s.DepositIndexCursor(t.Context())
	must(t, err)
	if got != want {
		t.Errorf("DepositIndexCursor = %+v, want %+v", got, want)
	}
}

func lookup(t *testing.T, s store.Store, keys ...uint64) map[uint64][]uint64 {
	t.Helper()
	got, err := s.LookupDepositIndex(t.Context(), keys)
	must(t, err)
	return got
}

func wantLookup(t *testing.T, got, want map[uint64][]uint64) {
	t.Helper()
	if !maps.EqualFunc(got, want, slices.Equal[[]uint64]) {
		t.Errorf("LookupDepositIndex = %v, want %v", got, want)
	}
}

func testDepositIndexAdvance(t *testing.T, s store.Store) {
	wantCursor(t, s, store.IndexCursor{})
	wantLookup(t, lookup(t, s, 1, 2), map[uint64][]uint64{})

	// Keys use the whole 64 bits (a key above 2^63 must come back as it is).
	big := uint64(1)<<63 | 5
	c1 := cursor("1/0xabc", 100, 7)
	must(t, s.MoveDepositIndex(t.Context(), store.IndexCursor{}, c1, []store.IndexEntry{
		{Key: 1, Block: 10}, {Key: big, Block: 99}, {Key: 1, Block: 3}, {Key: 2, Block: 50},
	}))
	wantCursor(t, s, c1)
	wantLookup(t, lookup(t, s, 1, big, 3, 1), map[uint64][]uint64{1: {3, 10}, big: {99}})

	// The next chunk; an entry given again is kept once.
	c2 := cursor("1/0xabc", 250, 8)
	must(t, s.MoveDepositIndex(t.Context(), c1, c2, []store.IndexEntry{{Key: 1, Block: 200}, {Key: 2, Block: 50}, {Key: 3, Block: 249}}))
	wantCursor(t, s, c2)
	wantLookup(t, lookup(t, s, 1, 2, 3), map[uint64][]uint64{1: {3, 10, 200}, 2: {50}, 3: {249}})

	// A move from a stale cursor changes nothing.
	err := s.MoveDepositIndex(t.Context(), c1, cursor("1/0xabc", 300, 9), []store.IndexEntry{{Key: 4, Block: 260}})
	wantErr(t, err, store.ErrCursorMoved)
	wantCursor(t, s, c2)
	wantLookup(t, lookup(t, s, 4), map[uint64][]uint64{})

	// The cursor and entries outlive a claim-free store's other work.
	addKeys(t, s, store.StateAvailable, at(0), 1)
	wantCursor(t, s, c2)
}

func testDepositIndexRewind(t *testing.T, s store.Store) {
	c1 := cursor("src", 100, 1)
	must(t, s.MoveDepositIndex(t.Context(), store.IndexCursor{}, c1, []store.IndexEntry{
		{Key: 1, Block: 10}, {Key: 1, Block: 60}, {Key: 2, Block: 59}, {Key: 3, Block: 99},
	}))
	// A reorganization: back to block 60, dropping entries of blocks >= 60.
	c2 := cursor("src", 60, 2)
	must(t, s.MoveDepositIndex(t.Context(), c1, c2, nil))
	wantCursor(t, s, c2)
	wantLookup(t, lookup(t, s, 1, 2, 3), map[uint64][]uint64{1: {10}, 2: {59}})
	// And forward again on the new branch.
	c3 := cursor("src", 120, 3)
	must(t, s.MoveDepositIndex(t.Context(), c2, c3, []store.IndexEntry{{Key: 3, Block: 61}}))
	wantLookup(t, lookup(t, s, 1, 2, 3), map[uint64][]uint64{1: {10}, 2: {59}, 3: {61}})
}

func testDepositIndexNewSource(t *testing.T, s store.Store) {
	c1 := cursor("chain-a", 100, 1)
	must(t, s.MoveDepositIndex(t.Context(), store.IndexCursor{}, c1, []store.IndexEntry{{Key: 1, Block: 10}, {Key: 2, Block: 90}}))
	// Another chain: every entry of the old one goes.
	c2 := cursor("chain-b", 5, 0)
	must(t, s.MoveDepositIndex(t.Context(), c1, c2, []store.IndexEntry{{Key: 3, Block: 4}}))
	wantCursor(t, s, c2)
	wantLookup(t, lookup(t, s, 1, 2, 3), map[uint64][]uint64{3: {4}})
}

func testDepositIndexErrors(t *testing.T, s store.Store) {
	err := s.MoveDepositIndex(t.Context(), store.IndexCursor{}, store.IndexCursor{Next: 10}, nil)
	wantErr(t, err, store.ErrInvalidArgument)
	err = s.MoveDepositIndex(t.Context(), store.IndexCursor{}, cursor("src", 10, 1), []store.IndexEntry{{Key: 1, Block: 10}})
	wantErr(t, err, store.ErrInvalidArgument)
	wantCursor(t, s, store.IndexCursor{})
	wantLookup(t, lookup(t, s, 1), map[uint64][]uint64{})
}

// The index is chain data: a Dump does not carry it, and a store filled by
// Load starts with an empty index.
func testDepositIndexNotInDump(t *testing.T, s store.Store, fresh func() store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	must(t, s.MoveDepositIndex(t.Context(), store.IndexCursor{}, cursor("src", 10, 1), []store.IndexEntry{{Key: 1, Block: 5}}))
	var keys []store.Key
	snap, err := s.Dump(t.Context(), func(k store.Key) error {
		keys = append(keys, k)
		return nil
	})
	must(t, err)
	d := fresh()
	must(t, d.Load(t.Context(), snap, keys))
	wantCursor(t, d, store.IndexCursor{})
	wantLookup(t, lookup(t, d, 1), map[uint64][]uint64{})
	// A store whose index is in use is still empty for Load.
	e := fresh()
	must(t, e.MoveDepositIndex(t.Context(), store.IndexCursor{}, cursor("src", 10, 1), nil))
	must(t, e.Load(t.Context(), snap, keys))
}

func testRecoverDeposit(t *testing.T, s store.Store) {
	addPending(t, s, "pod-a", "A", 1, nks(1), at(1))
	setTx(t, s, 1, at(2))
	must(t, s.FailDeposit(t.Context(), PK(1), "reverted", at(3)))
	must(t, s.AddPending(t.Context(), store.AddParams{Keys: nks(2), Now: at(3)}))
	must(t, s.FailDeposit(t.Context(), PK(2), "rejected", at(4)))

	ctx := store.WithActor(t.Context(), "user:ops")
	k, err := s.RecoverDeposit(ctx, PK(1), 77, "deposit found on chain in block 77", at(5))
	must(t, err)
	tx := recordedTx(txFor(1), at(2))
	tx.Block = 77
	want := store.Key{
		Pubkey: PK(1), State: store.StateAvailable, Origin: store.OriginRandom, LastPod: "pod-a",
		Since: us(at(5)), CreatedAt: us(at(1)), Deposit: deposit(1), DepositTx: tx,
	}
	wantKey(t, k, want)
	want.SealedSecret = sealed(1)
	wantKey(t, getKey(t, s, PK(1)), want)

	// Without a recorded transaction, one is made for the block.
	k, err = s.RecoverDeposit(t.Context(), PK(2), 80, "found", at(6))
	must(t, err)
	if k.State != store.StateAvailable || k.RetiredReason != "" || k.DepositTx == nil || k.DepositTx.Block != 80 ||
		!k.DepositTx.RecordedAt.Equal(us(at(6))) || k.DepositTx.Hash != ([32]byte{}) || len(k.DepositTx.Raw) != 0 {
		t.Errorf("k2 = %s, DepositTx %+v; want available with a DepositTx of block 80 recorded now", describe(k), k.DepositTx)
	}
	wantEvents(t, auditTrail(t, s)[2:], []store.AuditEvent{
		{Seq: 3, Time: us(at(5)), Action: "deposit-recovered", Pubkeys: pks(1), Reason: "deposit found on chain in block 77", Actor: "user:ops"},
		{Seq: 4, Time: us(at(6)), Action: "deposit-recovered", Pubkeys: pks(2), Reason: "found", Actor: store.ActorServer},
	})
	wantCounts(t, s, map[store.State]int{store.StateAvailable: 2})
	// A recovered key is in the pool like any other.
	c := claim(t, s, "pod-b", "", 2, at(7))
	wantClaim(t, c, pks(1, 2), 0, 2)
}

func testRecoverDepositErrors(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1)
	addKeys(t, s, store.StatePendingDeposit, at(0), 2)
	must(t, s.AddPending(t.Context(), store.AddParams{Keys: nks(3), Now: at(0)}))
	must(t, s.FailDeposit(t.Context(), PK(3), "reverted", at(1)))
	before := takeSnapshot(t, s)
	for _, c := range []struct {
		pk     store.Pubkey
		block  uint64
		reason string
		want   error
	}{
		{PK(9), 5, "r", store.ErrNotFound},
		{PK(1), 5, "r", store.ErrWrongState},
		{PK(2), 5, "r", store.ErrWrongState},
		{PK(3), 0, "r", store.ErrInvalidArgument},
		{PK(3), 5, "", store.ErrInvalidArgument},
	} {
		_, err := s.RecoverDeposit(t.Context(), c.pk, c.block, c.reason, at(2))
		if !errors.Is(err, c.want) {
			t.Errorf("RecoverDeposit(%s, %d, %q) = %v, want %v", name(c.pk), c.block, c.reason, err, c.want)
		}
	}
	unchanged(t, s, before)
}

func testBindings(t *testing.T, s store.Store) {
	got, err := s.Bindings(t.Context())
	must(t, err)
	if got == nil || len(got) != 0 {
		t.Errorf("Bindings of an empty store = %#v, want an empty map", got)
	}
	must(t, s.Bind(t.Context(), "kek-id", "abc"))
	must(t, s.Bind(t.Context(), "b", ""))
	got, err = s.Bindings(t.Context())
	must(t, err)
	if want := map[string]string{"kek-id": "abc", "b": ""}; !maps.Equal(got, want) {
		t.Errorf("Bindings = %v, want %v", got, want)
	}
}
