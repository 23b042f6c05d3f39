package httpapi

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/store"
)

// depositProgress reads the progress of the pending deposits among keys
// from the chain, when Chain can say (depositor.ProgressReader); nil when
// it cannot, also on an error (logged): the listing still answers.
func (s *server) depositProgress(ctx context.Context, keys []store.Key) map[store.Pubkey]depositor.Progress {
	r, ok := s.cfg.Chain.(depositor.ProgressReader)
	if !ok {
		return nil
	}
	prog, err := depositor.PendingProgress(ctx, r, keys)
	if err != nil {
		s.log.WarnContext(ctx, "list keys: the progress of pending deposits is left out", slog.Any("error", err))
		return nil
	}
	return prog
}

// appendDepositJSON adds k's deposit transaction to the JSON object b ends
// with, as gRPC's KeyInfo deposit_* fields: deposit_tx_hash,
// deposit_block (the block holding it; for a pending key from prog) and,
// for a pending key, deposit_blocks_to_go. Nothing without a transaction.
func appendDepositJSON(b []byte, k *store.Key, prog map[store.Pubkey]depositor.Progress) []byte {
	tx := k.DepositTx
	if tx == nil {
		return b
	}
	b = b[:len(b)-1]
	if tx.Hash != ([32]byte{}) {
		b = append(b, `,"deposit_tx_hash":"0x`...)
		n := len(b)
		b = append(b, make([]byte, 64)...)
		hexEncode(b[n:], tx.Hash[:])
		b = append(b, '"')
	}
	block := tx.Block
	p, pending := prog[k.Pubkey]
	if pending {
		block = p.Block
	}
	if block > 0 {
		b = strconv.AppendUint(append(b, `,"deposit_block":`...), block, 10)
	}
	if pending {
		b = strconv.AppendUint(append(b, `,"deposit_blocks_to_go":`...), p.ToGo, 10)
	}
	return append(b, '}')
}
