package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
)

// While a request waits for its deposits, the progress it prints names
// each key's deposit transaction, the block holding it and the blocks to
// go; the transactions are the ones on chain (each a successful deposit of
// that key, in the block printed).
func TestRequestProgressShowsDeposits(t *testing.T) {
	// 2 confirmations: a deposit is in a block 12 s before it is confirmed
	// (an idle dev chain makes the next block then), far longer than a
	// progress interval.
	s := startServer(t, t.TempDir(), "--dev-block-time", "1s", "--confirmations", "2")
	m := regexp.MustCompile(`dev chain JSON-RPC (\S+)`).FindStringSubmatch(s.banner)
	if m == nil {
		t.Fatalf("no dev chain JSON-RPC in the banner:\n%s", s.banner)
	}
	out := mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "dep-0", "--keys", "2", "--insecure-kdf",
		"--out", filepath.Join(t.TempDir(), "k"), "--progress-interval", "200ms")
	if !strings.Contains(out, "pod dep-0 holds 2 keys (recycled 0, minted 2)") {
		t.Fatalf("request:\n%s", out)
	}

	sent := regexp.MustCompile(`pod dep-0: deposit of key (0x[0-9a-f]{96}) sent: transaction (0x[0-9a-f]{64})`).FindAllStringSubmatch(out, -1)
	inBlock := regexp.MustCompile(`pod dep-0: deposit of key (0x[0-9a-f]{96}) in block (\d+) \(transaction (0x[0-9a-f]{64})\), (\d+) more blocks? to go`).FindAllStringSubmatch(out, -1)
	if len(inBlock) < 2 {
		t.Fatalf("want a line per key with the block holding its deposit:\n%s", out)
	}
	if !regexp.MustCompile(`pod dep-0: waiting for deposits: 0 of 2 keys ready; 2 deposits: 2 in blocks? \d+(-\d+)? \(at most 1 more block to go\)`).MatchString(out) {
		t.Fatalf("no summary with the blocks to go:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ec, err := ethclient.DialContext(ctx, m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	txOf := map[string]string{} // pubkey -> transaction, every line agreeing
	check := func(pubkey, tx string) *types.Receipt {
		t.Helper()
		if prev, ok := txOf[pubkey]; ok && prev != tx {
			t.Fatalf("key %s: transactions %s and %s printed", pubkey, prev, tx)
		}
		txOf[pubkey] = tx
		r, err := ec.TransactionReceipt(ctx, common.HexToHash(tx))
		if err != nil {
			t.Fatalf("transaction %s printed for key %s: %v", tx, pubkey, err)
		}
		pk, _ := hex.DecodeString(strings.TrimPrefix(pubkey, "0x"))
		found := false
		for _, l := range r.Logs {
			found = found || bytes.Contains(l.Data, pk)
		}
		if r.Status != types.ReceiptStatusSuccessful || !found {
			t.Fatalf("transaction %s printed for key %s: status %d, a deposit log of the key: %v", tx, pubkey, r.Status, found)
		}
		return r
	}
	for _, l := range sent {
		check(l[1], l[2])
	}
	for _, l := range inBlock {
		r := check(l[1], l[3])
		if b, _ := strconv.ParseUint(l[2], 10, 64); r.BlockNumber.Uint64() != b {
			t.Fatalf("key %s: block %d printed, the chain has transaction %s in block %d", l[1], b, l[3], r.BlockNumber)
		}
	}
	if len(txOf) != 2 {
		t.Fatalf("transactions of %d keys printed, want 2:\n%s", len(txOf), out)
	}
}
