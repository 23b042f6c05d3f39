package store

import (
	"context"
	"log/slog"
	"time"
)

// Audit actions recorded with RecordAudit, right after the change they
// describe (the store's own transactions record "release", "retire",
// "deposit-failed", "still-signing", "quiet", "exit" and
// "deposit-recovered"). The actor is the one of the context: the token
// subject when auth is on ("user:system:serviceaccount:ns:name"), else the
// component ("pod-watcher", "depositor", "cli:import", ...) or "server".
const (
	AuditAssign           = "assign"            // keys moved from the pool into a pod
	AuditMint             = "mint"              // new keys, for a pod (Pod set) or as spares
	AuditImport           = "import"            // keys imported as available
	AuditDepositSent      = "deposit-sent"      // a deposit transaction recorded and broadcast (Reason: hash, nonce)
	AuditDepositConfirmed = "deposit-confirmed" // a deposit confirmed on chain (Reason: block, hash; the key's new state)
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

// NewPubkeys returns the public keys of keys, in their order.
func NewPubkeys(keys []NewKey) []Pubkey {
	pks := make([]Pubkey, len(keys))
	for i := range keys {
		pks[i] = keys[i].Pubkey
	}
	return pks
}
