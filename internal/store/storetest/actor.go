package storetest

import (
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// testAuditActor: every decision the store records, in its own
// transaction or appended by a caller (store.RecordAudit), names the
// actor of its context (the token subject of an authenticated call), and
// "server" when the context names none.
func testAuditActor(t *testing.T, s store.Store) {
	const subject = "user:system:serviceaccount:validators:validator"
	for _, tc := range []struct {
		actor string // "" = a context without actor
		want  string
	}{{subject, subject}, {"", store.ActorServer}} {
		before := len(auditTrail(t, s))
		ctx := t.Context()
		if tc.actor != "" {
			ctx = store.WithActor(ctx, tc.actor)
		}
		off := 0
		if tc.actor == "" {
			off = 100
		}
		addKeys(t, s, store.StateAvailable, at(0), 1+off, 2+off, 3+off, 4+off)
		must(t, s.AddPending(ctx, store.AddParams{Pod: "pod-p", Want: 2, Keys: nks(10+off, 11+off), Now: at(1), AuditReason: "minted"}))
		must(t, s.FailDeposit(ctx, PK(10+off), "reverted", at(2)))
		if _, err := s.RecoverDeposit(ctx, PK(10+off), 9, "found on chain", at(3)); err != nil {
			t.Fatal(err)
		}
		c, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", Want: 2, Now: at(4)}) // records its assign event
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Release(ctx, store.ReleaseParams{Pod: "pod-a", Until: at(5), Now: at(5), Reason: "pod deleted"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Quarantine(ctx, c.Taken[:1], "seen signing", at(6)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CoolDown(ctx, c.Taken[:1], at(7), at(7)); err != nil {
			t.Fatal(err)
		}
		must(t, s.Retire(ctx, PK(3+off), "compromised", at(8)))
		if _, err := s.Exit(ctx, store.ExitParams{Pubkeys: pks(4 + off), Reason: "fleet shrinks", Now: at(9)}); err != nil {
			t.Fatal(err)
		}
		must(t, s.AppendAudit(ctx, store.AuditEvent{Time: at(10), Action: "release-blocked", Pod: "pod-b"}))

		events := auditTrail(t, s)[before:]
		want := []string{store.AuditMint, "deposit-failed", "deposit-recovered", store.AuditAssign, "release",
			"still-signing", "quiet", "retire", "exit", "release-blocked"}
		if len(events) != len(want) {
			t.Fatalf("actor %q: %d events %+v, want %d (%v)", tc.actor, len(events), events, len(want), want)
		}
		for i, e := range events {
			if e.Action != want[i] || e.Actor != tc.want {
				t.Errorf("actor %q: event %d = %s by %q, want %s by %q", tc.actor, i, e.Action, e.Actor, want[i], tc.want)
			}
		}
	}
}
