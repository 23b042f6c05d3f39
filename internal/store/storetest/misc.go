package storetest

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

var miscTests = []testCase{
	{name: "ReserveIndices", fn: testReserveIndices},
	{name: "ReserveIndices/Exhaustion", fn: testReserveIndicesExhaustion},
	{name: "Bind", fn: testBind},
	{name: "Ping", fn: testPing},
	{name: "Validation", fn: testValidation},
	{name: "CanceledContext", fn: testCanceledContext},
}

func reserve(t *testing.T, s store.Store, n int) uint32 {
	t.Helper()
	first, err := s.ReserveIndices(t.Context(), n)
	if err != nil {
		t.Fatalf("ReserveIndices(%d): %v", n, err)
	}
	return first
}

func testReserveIndices(t *testing.T, s store.Store) {
	for _, step := range []struct {
		n    int
		want uint32
	}{{3, 0}, {1, 3}, {10, 4}, {1, 14}} {
		if got := reserve(t, s, step.n); got != step.want {
			t.Errorf("ReserveIndices(%d) = %d, want %d", step.n, got, step.want)
		}
	}
	for _, n := range []int{0, -1, math.MinInt} {
		_, err := s.ReserveIndices(t.Context(), n)
		wantErr(t, err, store.ErrInvalidArgument)
	}
	if got := reserve(t, s, 1); got != 15 {
		t.Errorf("ReserveIndices(1) after invalid calls = %d, want 15", got)
	}
}

func testReserveIndicesExhaustion(t *testing.T, s store.Store) {
	if strconv.IntSize < 64 {
		t.Skip("needs a 64-bit int")
	}
	if got := reserve(t, s, 1<<32-1); got != 0 {
		t.Fatalf("ReserveIndices(2^32-1) = %d, want 0", got)
	}
	if got := reserve(t, s, 1); got != math.MaxUint32 {
		t.Fatalf("ReserveIndices(1) = %d, want %d", got, uint32(math.MaxUint32))
	}
	for range 2 {
		if first, err := s.ReserveIndices(t.Context(), 1); err == nil {
			t.Fatalf("ReserveIndices past index 2^32-1 = %d, want an error", first)
		}
	}
	if first, err := s.ReserveIndices(t.Context(), 1<<33); err == nil {
		t.Fatalf("ReserveIndices(2^33) = %d, want an error", first)
	}
}

func testBind(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, s.Bind(ctx, "kek", "fingerprint-1"))
	must(t, s.Bind(ctx, "kek", "fingerprint-1"))
	wantErr(t, s.Bind(ctx, "kek", "fingerprint-2"), store.ErrBindingMismatch)
	wantErr(t, s.Bind(ctx, "kek", ""), store.ErrBindingMismatch)
	must(t, s.Bind(ctx, "network", "fingerprint-2"))
	must(t, s.Bind(ctx, "kek", "fingerprint-1"))
	must(t, s.Bind(ctx, "empty", ""))
	wantErr(t, s.Bind(ctx, "empty", "x"), store.ErrBindingMismatch)
	wantErr(t, s.Bind(ctx, "", "x"), store.ErrInvalidArgument)
}

func testPing(t *testing.T, s store.Store) {
	must(t, s.Ping(t.Context()))
	addKeys(t, s, store.StateAvailable, at(0), 1)
	must(t, s.Ping(t.Context()))
}

// Invalid arguments fail with ErrInvalidArgument and change nothing.
func testValidation(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	addKeys(t, s, store.StatePendingDeposit, at(0), 4)
	claim(t, s, "pod-a", "A", 1, at(1))
	before := takeSnapshot(t, s)
	ctx := t.Context()
	var zero time.Time
	late := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	cp := func(pod string, want int, now time.Time) func() error {
		return func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: pod, Want: want, Now: now})
			return err
		}
	}
	ap := func(pod string, want int, keys []store.NewKey, now time.Time) func() error {
		return func() error {
			_, err := s.AddAssigned(ctx, store.AddParams{Pod: pod, Want: want, Keys: keys, Now: now})
			return err
		}
	}
	rel := func(pod string, until, now time.Time) func() error {
		return func() error {
			_, err := s.Release(ctx, store.ReleaseParams{Pod: pod, Until: until, Now: now})
			return err
		}
	}
	calls := map[string]func() error{
		"Claim want -1": cp("pod-b", -1, at(2)),
		"Claim want 0 with a token": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 0, Now: at(2), ReserveToken: "t", ReserveUntil: at(9)})
			return err
		},
		"Claim want 0 all or nothing": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 0, Now: at(2), AllOrNothing: true})
			return err
		},
		"Claim empty pod":             cp("", 1, at(2)),
		"Claim zero now":              cp("pod-b", 1, zero),
		"Claim now in year 10000":     cp("pod-b", 1, late),
		"AddAssigned want 0":          ap("pod-b", 0, nks(10), at(2)),
		"AddAssigned empty pod":       ap("", 1, nks(10), at(2)),
		"AddAssigned no keys":         ap("pod-b", 1, nil, at(2)),
		"AddAssigned zero now":        ap("pod-b", 1, nks(10), zero),
		"AddKeys zero now":            func() error { return s.AddKeys(ctx, nks(10), store.StateAvailable, zero) },
		"Release empty pod":           rel("", at(10), at(2)),
		"Release zero now":            rel("pod-a", at(10), zero),
		"Release zero until":          rel("pod-a", zero, at(2)),
		"Release until before now":    rel("pod-a", at(1), at(2)),
		"Release until in year 10000": rel("pod-a", late, at(2)),
		"Retire zero now":             func() error { return s.Retire(ctx, PK(2), "r", zero) },
		"Sweep zero now":              func() error { _, err := s.Sweep(ctx, zero); return err },
		"ListKeys unknown state": func() error {
			return s.ListKeys(ctx, store.ListOptions{States: []store.State{store.StateAvailable, "gone"}}, func(store.Key) error { return nil })
		},
		"Bind empty name": func() error { return s.Bind(ctx, "", "v") },
		"Claim token with all or nothing": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), AllOrNothing: true, ReserveToken: "t", ReserveUntil: at(9)})
			return err
		},
		"Claim token without expiry": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), ReserveToken: "t"})
			return err
		},
		"Claim token expiring at now": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), ReserveToken: "t", ReserveUntil: at(2)})
			return err
		},
		"Claim token expiring before now": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), ReserveToken: "t", ReserveUntil: at(1)})
			return err
		},
		"Claim token expiring in year 10000": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), ReserveToken: "t", ReserveUntil: late})
			return err
		},
		"Claim token too long": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), ReserveToken: strings.Repeat("t", store.MaxTokenLength+1), ReserveUntil: at(9)})
			return err
		},
		"AddAssigned token too long": func() error {
			_, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-b", Want: 1, Keys: nks(10), Now: at(2), ReserveToken: strings.Repeat("t", store.MaxTokenLength+1)})
			return err
		},
		"AddPending token without pod": func() error {
			return s.AddPending(ctx, store.AddParams{Keys: nks(10), Now: at(2), ReserveToken: "t"})
		},
		"RenewReservation empty pod":   func() error { return s.RenewReservation(ctx, "", "t", at(9)) },
		"RenewReservation empty token": func() error { return s.RenewReservation(ctx, "pod-b", "", at(9)) },
		"RenewReservation zero until":  func() error { return s.RenewReservation(ctx, "pod-b", "t", zero) },
		"RenewReservation token too long": func() error {
			return s.RenewReservation(ctx, "pod-b", strings.Repeat("t", store.MaxTokenLength+1), at(9))
		},
		"ReleaseReservation empty pod":   func() error { return s.ReleaseReservation(ctx, "", "t") },
		"ReleaseReservation empty token": func() error { return s.ReleaseReservation(ctx, "pod-b", "") },
		"AddPending want 0": func() error {
			return s.AddPending(ctx, store.AddParams{Pod: "pod-b", Keys: nks(10), Now: at(2)})
		},
		"AddPending UID without pod": func() error {
			return s.AddPending(ctx, store.AddParams{PodUID: "U", Want: 1, Keys: nks(10), Now: at(2)})
		},
		"AddPending zero now": func() error { return s.AddPending(ctx, store.AddParams{Keys: nks(10)}) },
		"SetDepositTx no raw": func() error {
			return s.SetDepositTx(ctx, PK(4), store.DepositTx{Nonce: 1}, at(2))
		},
		"SetDepositTx zero now":   func() error { return s.SetDepositTx(ctx, PK(4), txFor(4), zero) },
		"ConfirmDeposit block 0":  func() error { _, err := s.ConfirmDeposit(ctx, PK(4), 0, at(2)); return err },
		"ConfirmDeposit zero now": func() error { _, err := s.ConfirmDeposit(ctx, PK(4), 1, zero); return err },
		"FailDeposit no reason":   func() error { return s.FailDeposit(ctx, PK(4), "", at(2)) },
		"FailDeposit zero now":    func() error { return s.FailDeposit(ctx, PK(4), "r", zero) },
		"AppendAudit no action":   func() error { return s.AppendAudit(ctx, store.AuditEvent{Time: at(2)}) },
		"AppendAudit zero time":   func() error { return s.AppendAudit(ctx, store.AuditEvent{Action: "x"}) },
		"ListAudit limit 0":       func() error { _, err := s.ListAudit(ctx, 0, 0); return err },
		"Load assigned without pod": func() error {
			return s.Load(ctx, store.Snapshot{}, []store.Key{{
				Pubkey: PK(20), State: store.StateAssigned, Origin: store.OriginRandom,
				Since: at(0), CreatedAt: at(0), SealedSecret: sealed(20),
			}})
		},
	}
	for what, call := range calls {
		if err := call(); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("%s: error = %v, want ErrInvalidArgument", what, err)
		}
	}
	unchanged(t, s, before)
}

// A done context fails every call with its error and changes nothing.
func testCanceledContext(t *testing.T, s store.Store) {
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	addPending(t, s, "pod-a", "A", 2, nks(4), at(0))
	claim(t, s, "pod-a", "A", 2, at(1))
	// pod-r takes the last two pool keys and reserves its third.
	wantReservation(t, reserveClaim(t, s, "pod-r", "R", 3, "tok-r", at(1), at(60)), "tok-r", 1, at(60))
	before := takeSnapshot(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"Claim": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2)})
			return err
		},
		"AddAssigned": func() error {
			_, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-b", Want: 1, Keys: nks(10), Now: at(2)})
			return err
		},
		"AddKeys": func() error { return s.AddKeys(ctx, nks(11), store.StateAvailable, at(2)) },
		"Release": func() error {
			_, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-a", Until: at(3), Now: at(2)})
			return err
		},
		"Retire":         func() error { return s.Retire(ctx, PK(2), "r", at(2)) },
		"Sweep":          func() error { _, err := s.Sweep(ctx, at(2)); return err },
		"ReserveIndices": func() error { _, err := s.ReserveIndices(ctx, 5); return err },
		"Bind":           func() error { return s.Bind(ctx, "name", "canceled") },
		"AddPending": func() error {
			return s.AddPending(ctx, store.AddParams{Pod: "pod-b", Want: 1, Keys: nks(12), Now: at(2)})
		},
		"SetDepositTx":   func() error { return s.SetDepositTx(ctx, PK(4), txFor(4), at(2)) },
		"ConfirmDeposit": func() error { _, err := s.ConfirmDeposit(ctx, PK(4), 1, at(2)); return err },
		"FailDeposit":    func() error { return s.FailDeposit(ctx, PK(4), "r", at(2)) },
		"AppendAudit":    func() error { return s.AppendAudit(ctx, store.AuditEvent{Time: at(2), Action: "x"}) },
		"ListAudit":      func() error { _, err := s.ListAudit(ctx, 0, 1); return err },
		"Dump": func() error {
			_, err := s.Dump(ctx, func(store.Key) error { return nil })
			return err
		},
		"Load": func() error { return s.Load(ctx, store.Snapshot{}, nil) },
		"Claim with a token": func() error {
			_, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 1, Now: at(2), ReserveToken: "t", ReserveUntil: at(9)})
			return err
		},
		"RenewReservation":   func() error { return s.RenewReservation(ctx, "pod-r", "tok-r", at(90)) },
		"ReleaseReservation": func() error { return s.ReleaseReservation(ctx, "pod-r", "tok-r") },
		"Quarantine":         func() error { _, err := s.Quarantine(ctx, pks(1), "seen signing", at(2)); return err },
		"CoolDown":           func() error { _, err := s.CoolDown(ctx, pks(1), at(9), at(2)); return err },
		"RecoverDeposit":     func() error { _, err := s.RecoverDeposit(ctx, PK(4), 1, "found", at(2)); return err },
		"MoveDepositIndex": func() error {
			return s.MoveDepositIndex(ctx, store.IndexCursor{}, store.IndexCursor{Source: "chain", Next: 10}, nil)
		},
		"RecordValidators": func() error { _, err := s.RecordValidators(ctx, nil, at(2)); return err },
		"Exit": func() error {
			_, err := s.Exit(ctx, store.ExitParams{Pubkeys: pks(1), Reason: "asked", Now: at(2)})
			return err
		},
		// Reads fail too.
		"GetKey":             func() error { _, err := s.GetKey(ctx, PK(1)); return err },
		"ListKeys":           func() error { return s.ListKeys(ctx, store.ListOptions{}, func(store.Key) error { return nil }) },
		"Counts":             func() error { _, err := s.Counts(ctx); return err },
		"Protections":        func() error { _, err := s.Protections(ctx, pks(1)); return err },
		"Bindings":           func() error { _, err := s.Bindings(ctx); return err },
		"Validators":         func() error { _, err := s.Validators(ctx, pks(1)); return err },
		"DepositIndexCursor": func() error { _, err := s.DepositIndexCursor(ctx); return err },
		"LookupDepositIndex": func() error { _, err := s.LookupDepositIndex(ctx, []uint64{1}); return err },
		"Ping":               func() error { return s.Ping(ctx) },
	}
	for what, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: error = %v, want context.Canceled", what, err)
		}
	}
	unchanged(t, s, before)
	// The reservation is as it was: live, with its expiry.
	wantReservation(t, reserveClaim(t, s, "pod-r", "R", 3, "tok-other", at(3), at(60)), "tok-r", 1, at(60))
	if got := reserve(t, s, 1); got != 0 {
		t.Errorf("ReserveIndices after a canceled one = %d, want 0", got)
	}
	must(t, s.Bind(t.Context(), "name", "live"))
}
