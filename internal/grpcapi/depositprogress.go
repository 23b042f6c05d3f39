package grpcapi

import (
	"context"
	"log/slog"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/store"
)

// addDepositProgress fills the deposit block and blocks to go of the
// pending-deposit keys among page (infos[i] is page[i]) from the chain,
// when the Chain can say (a depositor.ProgressReader: *server.Server with
// on-chain deposits). A chain that cannot answer leaves them unset: the
// listing still answers.
func (b *base) addDepositProgress(ctx context.Context, page []store.Key, infos []*pkmanagerv1.KeyInfo) {
	r, ok := b.chain.(depositor.ProgressReader)
	if !ok {
		return
	}
	prog, err := depositor.PendingProgress(ctx, r, page)
	if err != nil {
		b.logger.WarnContext(ctx, "list keys: the progress of pending deposits is left out", slog.Any("error", err))
		return
	}
	for i, k := range page {
		if p, ok := prog[k.Pubkey]; ok {
			infos[i].DepositBlock, infos[i].DepositBlocksToGo = p.Block, p.ToGo
		}
	}
}
