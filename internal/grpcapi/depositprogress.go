package grpcapi

import (
	"context"
	"log/slog"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/store"
)

// DepositProgress is implemented by a Chain that can say how far pending
// deposits are (*server.Server with on-chain deposits): the block holding
// each transaction and the blocks to go before it is confirmed.
type DepositProgress interface {
	DepositProgress(ctx context.Context, hashes [][32]byte) (map[[32]byte]depositor.Progress, error)
}

// addDepositProgress fills the deposit block and blocks to go of the
// pending-deposit keys among page (infos[i] is page[i]) from the chain. A
// chain that cannot answer leaves them unset: the listing still answers.
func (b *base) addDepositProgress(ctx context.Context, page []store.Key, infos []*pkmanagerv1.KeyInfo) {
	dp, ok := b.chain.(DepositProgress)
	if !ok {
		return
	}
	var hashes [][32]byte
	for _, k := range page {
		if k.State == store.StatePendingDeposit && k.DepositTx != nil && k.DepositTx.Hash != ([32]byte{}) {
			hashes = append(hashes, k.DepositTx.Hash)
		}
	}
	if len(hashes) == 0 {
		return
	}
	prog, err := dp.DepositProgress(ctx, hashes)
	if err != nil {
		b.logger.WarnContext(ctx, "list keys: the progress of pending deposits is left out", slog.Any("error", err))
		return
	}
	for i, k := range page {
		if k.State != store.StatePendingDeposit || k.DepositTx == nil {
			continue
		}
		if p, ok := prog[k.DepositTx.Hash]; ok {
			infos[i].DepositBlock, infos[i].DepositBlocksToGo = p.Block, p.ToGo
		}
	}
}
