package depositor

import (
	"context"
	"fmt"

	"github.com/ethereum/go-ethereum/common"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Progress is how far a deposit transaction is on its way to confirmation.
type Progress struct {
	// Block is the block holding the transaction; 0 while it is in none.
	Block uint64
	// ToGo is how many more blocks must follow before the sender confirms
	// the deposit (Config.Confirmations deep); 0 once it may. While the
	// transaction is in no block it is Confirmations.
	ToGo uint64
}

// blocksToGo is the sender's confirmation rule (track): a deposit in block
// is confirmed once head+1 >= block+n.
func blocksToGo(block, head, n uint64) uint64 {
	if block == 0 {
		return n
	}
	if head+1 >= block+n {
		return 0
	}
	return block + n - (head + 1)
}

// Progress reads from the chain where each transaction is: the block that
// holds it and the blocks to go before the sender confirms it. It asks the
// chain, not this process's sender, so every replica answers alike. A
// transaction the node does not know is in no block.
func (d *Depositor) Progress(ctx context.Context, hashes [][32]byte) (map[[32]byte]Progress, error) {
	out := make(map[[32]byte]Progress, len(hashes))
	if len(hashes) == 0 {
		return out, nil
	}
	head, err := d.cfg.Chain.BlockNumber(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the block number: %w", err)
	}
	blocks := make([]uint64, len(hashes))
	if err := parallel(ctx, len(hashes), 8, func(i int) error {
		r, err := d.cfg.Chain.TransactionReceipt(ctx, common.Hash(hashes[i]))
		switch {
		case err == nil && r != nil && r.BlockNumber != nil:
			blocks[i] = r.BlockNumber.Uint64()
		case err != nil && !depositcontract.IsNotFound(err):
			return fmt.Errorf("receipt of deposit transaction %s: %w", common.Hash(hashes[i]), err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for i, h := range hashes {
		out[h] = Progress{Block: blocks[i], ToGo: blocksToGo(blocks[i], head, d.cfg.Confirmations)}
	}
	return out, nil
}

// ProgressReader reads deposit progress from the chain (a server with
// on-chain deposits, answering from its Depositor's Progress).
type ProgressReader interface {
	DepositProgress(ctx context.Context, hashes [][32]byte) (map[[32]byte]Progress, error)
}

// PendingProgress returns, by public key, the progress of the deposits of
// the pending-deposit keys among keys whose transaction is recorded (keys
// listed with their deposits): what every API adds to a listing of them.
func PendingProgress(ctx context.Context, r ProgressReader, keys []store.Key) (map[store.Pubkey]Progress, error) {
	var hashes [][32]byte
	for _, k := range keys {
		if k.State == store.StatePendingDeposit && k.DepositTx != nil && k.DepositTx.Hash != ([32]byte{}) {
			hashes = append(hashes, k.DepositTx.Hash)
		}
	}
	if len(hashes) == 0 {
		return nil, nil
	}
	prog, err := r.DepositProgress(ctx, hashes)
	if err != nil {
		return nil, err
	}
	out := make(map[store.Pubkey]Progress, len(hashes))
	for _, k := range keys {
		if k.State != store.StatePendingDeposit || k.DepositTx == nil {
			continue
		}
		if p, ok := prog[k.DepositTx.Hash]; ok {
			out[k.Pubkey] = p
		}
	}
	return out, nil
}
