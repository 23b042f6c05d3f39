package server

import (
	"context"

	"github.com/pkmanager/pkmanager/internal/depositor"
)

// DepositProgress says, for each deposit transaction, the block holding it
// and the blocks to go before the deposit is confirmed (depositor.Progress),
// read from the chain. Without on-chain deposits it knows nothing (nil).
func (s *Server) DepositProgress(ctx context.Context, hashes [][32]byte) (map[[32]byte]depositor.Progress, error) {
	if s.deposits == nil || s.deposits.dep == nil {
		return nil, nil
	}
	return s.deposits.dep.Progress(ctx, hashes)
}
