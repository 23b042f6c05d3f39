package grpcapi

import (
	"context"
	"log/slog"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/store"
)

// addValidatorStatus fills the validator status of page's keys (infos[i]
// is page[i]) from the stored readings, for a request's progress (waiting
// for activation with --require-active). Without readings, or when they
// cannot be read, the listing still answers without them.
func (b *base) addValidatorStatus(ctx context.Context, page []store.Key, infos []*pkmanagerv1.KeyInfo) {
	if b.validators == nil || len(page) == 0 {
		return
	}
	pks := make([]store.Pubkey, len(page))
	for i, k := range page {
		pks[i] = k.Pubkey
	}
	vs, err := b.validators.Validators(ctx, pks)
	if err != nil {
		b.logger.WarnContext(ctx, "list keys: the validator statuses are left out", slog.Any("error", err))
		return
	}
	for i, k := range page {
		if v, ok := vs[k.Pubkey]; ok {
			infos[i].ValidatorStatus = v.Status
		}
	}
}
