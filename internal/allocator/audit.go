package allocator

import (
	"context"
	"fmt"
	"slices"

	"github.com/pkmanager/pkmanager/internal/store"
)

// recordAssign records keys taken from the pool for a pod.
func (a *Allocator) recordAssign(ctx context.Context, pod, podUID string, taken []store.Pubkey, want int) {
	if len(taken) == 0 {
		return
	}
	store.RecordAudit(ctx, a.cfg.Store, a.cfg.Logger, store.AuditEvent{
		Time: a.cfg.Now(), Action: store.AuditAssign, Pod: pod, PodUID: podUID, Pubkeys: taken,
		Reason: fmt.Sprintf("taken from the pool for a request of %d keys", want),
	})
}

// recordMint records keys minted for a pod ("" for spares).
func (a *Allocator) recordMint(ctx context.Context, pod, podUID string, keys []store.NewKey, reason string) {
	store.RecordAudit(ctx, a.cfg.Store, a.cfg.Logger, store.AuditEvent{
		Time: a.cfg.Now(), Action: store.AuditMint, Pod: pod, PodUID: podUID, Pubkeys: store.NewPubkeys(keys), Reason: reason,
	})
}

// without returns pks less those in drop.
func without(pks, drop []store.Pubkey) []store.Pubkey {
	out := make([]store.Pubkey, 0, len(pks))
	for _, pk := range pks {
		if !slices.Contains(drop, pk) {
			out = append(out, pk)
		}
	}
	return out
}
