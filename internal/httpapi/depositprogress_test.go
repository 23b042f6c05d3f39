package httpapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/store"
)

// progressChain answers deposit progress as a server with on-chain
// deposits does (fake: unit test of the JSON; the chain is tested in
// depositor and test/integration).
type progressChain struct {
	fakeChain
	prog map[[32]byte]depositor.Progress
}

func (c progressChain) DepositProgress(_ context.Context, hashes [][32]byte) (map[[32]byte]depositor.Progress, error) {
	out := map[[32]byte]depositor.Progress{}
	for _, h := range hashes {
		if p, ok := c.prog[h]; ok {
			out[h] = p
		}
	}
	return out, nil
}

// GET /api/v1/keys?pod= carries the keys' deposit transactions as gRPC's
// ListKeys does: the hash, the block holding it and, for a pending key, the
// blocks to go (from the chain); a confirmed key its recorded block.
func TestListKeysDepositProgress(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	pending, confirmed := pk(0xa1, 1), pk(0xa1, 2)
	h1, h2 := [32]byte{1, 2, 3}, [32]byte{4, 5, 6}
	keys := &fakeLister{keys: []store.Key{
		{Pubkey: pending, State: store.StatePendingDeposit, Pod: "p-0", Since: now, DepositTx: &store.DepositTx{Hash: h1}},
		{Pubkey: confirmed, State: store.StateAssigned, Pod: "p-0", Since: now, DepositTx: &store.DepositTx{Hash: h2, Block: 40}},
	}}
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: keys, Logger: quietLogger(t),
		Chain: progressChain{prog: map[[32]byte]depositor.Progress{h1: {Block: 41, ToGo: 2}}}})
	rec := do(t, h, "GET", "/api/v1/keys?pod=p-0", "")
	var body struct {
		Keys []struct {
			Pubkey string  `json:"pubkey"`
			TxHash string  `json:"deposit_tx_hash"`
			Block  uint64  `json:"deposit_block"`
			ToGo   *uint64 `json:"deposit_blocks_to_go"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 200 || len(body.Keys) != 2 {
		t.Fatalf("GET /api/v1/keys?pod=p-0: %d %s (%v)", rec.Code, rec.Body, err)
	}
	seen := 0
	for _, k := range body.Keys {
		seen++
		switch k.Pubkey {
		case pending.String():
			if k.TxHash != "0x0102030000000000000000000000000000000000000000000000000000000000" || k.Block != 41 || k.ToGo == nil || *k.ToGo != 2 {
				t.Errorf("pending key: %+v", k)
			}
		case confirmed.String():
			if k.TxHash != "0x0405060000000000000000000000000000000000000000000000000000000000" || k.Block != 40 || k.ToGo != nil {
				t.Errorf("confirmed key: %+v", k)
			}
		default:
			seen--
		}
	}
	if seen != 2 {
		t.Errorf("%d of the keys listed, want both: %s", seen, rec.Body)
	}
}
