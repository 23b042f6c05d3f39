package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Audit actions. The first group (but AuditAssign) is recorded with
// RecordAudit, right after the change it describes; AuditAssign and the
// second group by the backends inside the transaction that makes the
// change. The actor is the one of the context: the token
// subject when auth is on ("user:system:serviceaccount:ns:name"), else the
// component ("pod-watcher", "depositor", "cli:import", ...) or "server".
const (
	AuditAssign           = "assign"            // keys moved from the pool into a pod
	AuditMint             = "mint"              // new keys, for a pod (Pod set) or as spares
	AuditImport           = "import"            // keys imported as available
	AuditDepositSent      = "deposit-sent"      // a deposit transaction recorded and broadcast (Reason: hash, nonce)
	AuditDepositConfirmed = "deposit-confirmed" // a deposit confirmed on chain (Reason: block, hash; the key's new state)
	AuditUIDAdopted       = "uid-adopted"       // a pod UID written on keys the pod held without one (UIDAdoptedEvent)

	AuditRelease          = "release"           // a pod's keys released (Reason: why, e.g. the watcher's rule)
	AuditRetire           = "retire"            // a key retired, never handed out again (Reason: why)
	AuditExit             = "exit"              // a voluntary exit recorded for keys (Reason)
	AuditDepositFailed    = "deposit-failed"    // a deposit that failed or was refused (Reason)
	AuditDepositRecovered = "deposit-recovered" // a deposit-failed key found deposited on chain after all
	AuditStillSigning     = "still-signing"     // released keys quarantined: their validators still sign
	AuditQuiet            = "quiet"             // quarantined keys seen quiet again
)

// AuditAppender appends audit events (a Store).
type AuditAppender interface {
	AppendAudit(ctx context.Context, e AuditEvent) error
}

// recordTimeout bounds RecordAudit, whose ctx may be done.
const recordTimeout = 5 * time.Second

// RecordAudit appends e to the audit trail right after the change it
// describes was committed (assignments, mints, imports, deposits sent and
// confirmed): also when ctx is done, and a failure is logged, not returned,
// as the change stands either way. The actor is e.Actor, else the one of
// ctx (ActorFrom).
func RecordAudit(ctx context.Context, st AuditAppender, logger *slog.Logger, e AuditEvent) {
	if e.Actor == "" {
		e.Actor = ActorFrom(ctx)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := st.AppendAudit(actx, e); err != nil && logger != nil {
		logger.WarnContext(ctx, "audit event not recorded", slog.String("action", e.Action),
			slog.String("pod", e.Pod), slog.Int("keys", len(e.Pubkeys)), slog.Any("error", err))
	}
}

// AssignReason is the Reason of the AuditAssign event of a claim that
// wants want keys (Store.Claim records it).
func AssignReason(want int) string {
	return fmt.Sprintf("taken from the pool for a request of %d keys", want)
}

// DefaultUIDReason is the Reason of an AuditUIDAdopted event whose call
// gave none.
const DefaultUIDReason = "the pod's request named its pod UID; its keys were recorded without one"

// UIDAdoptedEvent is the AuditUIDAdopted event that Claim, AddAssigned and
// AddPending record in their transaction when they write uid on keys the
// pod held without one (pubkeys: those keys, assigned and pending, in pubkey
// order); reason "" is DefaultUIDReason.
func UIDAdoptedEvent(now time.Time, pod, uid string, pubkeys []Pubkey, reason, actor string) AuditEvent {
	if reason == "" {
		reason = DefaultUIDReason
	}
	return AuditEvent{Time: now, Action: AuditUIDAdopted, Pod: pod, PodUID: uid, Pubkeys: pubkeys, Reason: reason, Actor: actor}
}

// MintEvent is the AuditMint event that AddAssigned and AddPending record
// in their transaction when p.AuditReason is set: Pod and PodUID as given,
// the keys in p's order, the actor of the call.
func (p *AddParams) MintEvent(actor string) (AuditEvent, bool) {
	if p.AuditReason == "" || len(p.Keys) == 0 {
		return AuditEvent{}, false
	}
	return AuditEvent{Time: p.Now, Action: AuditMint, Pod: p.Pod, PodUID: p.PodUID, Pubkeys: NewPubkeys(p.Keys),
		Reason: p.AuditReason, Actor: actor}, true
}

// NewPubkeys returns the public keys of keys, in their order.
func NewPubkeys(keys []NewKey) []Pubkey {
	pks := make([]Pubkey, len(keys))
	for i := range keys {
		pks[i] = keys[i].Pubkey
	}
	return pks
}
