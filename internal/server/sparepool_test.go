package server

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/sparepool"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// startPoolServer is a chain-mode server with a spare pool of target keys
// on the PostgreSQL store storeURL, serving until the test ends.
func startPoolServer(t *testing.T, storeURL string, chain *devchain.Chain, target int) *pgServer {
	t.Helper()
	return startPGServerWith(t, storeURL, func(o *Options) {
		o.Deposits = DepositOptions{Mode: DepositsChain, RPCURL: chain.RPCEndpoint(), Contract: chain.DepositContract(),
			FunderKey: chain.FunderKey(), PollInterval: 50 * time.Millisecond}
		o.SparePool = target
	})
}

func poolMetric(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if m := mf.GetMetric()[0]; m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// Two replicas with --spare-pool 3 on one PostgreSQL store and one chain:
// only the owner of the spare-pool role refills, the pool holds 3 deposited
// keys (not 6), requests on either replica take keys from it without
// minting, and the pool refills to 3 with one deposit per key; when the
// owner stops, the other replica takes over.
func TestSparePoolOnlyOwnerRefills(t *testing.T) {
	u := pgtest.NewSchema(t)
	chain := startDevChain(t)
	ra, rb := startPoolServer(t, u, chain, 3), startPoolServer(t, u, chain, 3)
	a, b := ra.srv, rb.srv
	settled := func(avail int) func() bool {
		return func() bool {
			c, err := a.store.Counts(t.Context())
			return err == nil && c[store.StateAvailable] == avail && c[store.StatePendingDeposit] == 0
		}
	}
	eventually(t, 60*time.Second, "3 available keys in the pool", settled(3))

	// Requests on both replicas, spread over several of the pools' rounds:
	// a pool on each replica would find the shortfall first now on one,
	// now on the other.
	const requests = 3
	for i := range requests {
		s := a
		if i%2 == 1 {
			s = b
		}
		res, err := s.alloc.Request(t.Context(), fmt.Sprintf("pod-%d", i), "", 1)
		if err != nil {
			t.Fatal(err)
		}
		if res.Minted != 0 || len(res.Keys) != 1 {
			t.Fatalf("request %d from a full pool minted %d keys, got %d", i, res.Minted, len(res.Keys))
		}
		eventually(t, 60*time.Second, "the pool refilled to 3", settled(3))
		time.Sleep(sparepool.DefaultInterval * 3 / 4)
	}
	eventually(t, 60*time.Second, "the pool refilled to 3", settled(3))
	time.Sleep(2 * sparepool.DefaultInterval) // more rounds on both: nothing above the target

	var total int
	if err := pgtest.Connect(t, u).QueryRow(t.Context(), `SELECT count(*) FROM pkm_keys`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if aa, ab := poolMetric(t, a, "pkmanager_spare_pool_active"), poolMetric(t, b, "pkmanager_spare_pool_active"); aa+ab != 1 {
		t.Fatalf("pkmanager_spare_pool_active %v and %v: want exactly one replica refilling", aa, ab)
	}
	ma, mb := poolMetric(t, a, "pkmanager_spare_pool_keys_minted_total"), poolMetric(t, b, "pkmanager_spare_pool_keys_minted_total")
	if total != 3+requests || ma+mb != 3+requests || (ma != 0 && mb != 0) {
		t.Fatalf("%d keys stored, pool minted %v on one replica and %v on the other; want %d keys, all from one replica", total, ma, mb, 3+requests)
	}
	n, err := depositcontract.DepositCount(t.Context(), chain.Client(), chain.DepositContract(), nil)
	if err != nil || n != 3+requests {
		t.Fatalf("deposit count %d, %v; want %d (one per key)", n, err, 3+requests)
	}

	// The owner stops: the other replica takes the role and refills what
	// the next request takes.
	owner, other := ra, rb
	if ma == 0 {
		owner, other = rb, ra
	}
	owner.stop()
	eventually(t, 30*time.Second, "the other replica to take the spare-pool role", func() bool {
		return poolMetric(t, other.srv, "pkmanager_spare_pool_active") == 1
	})
	if _, err := other.srv.alloc.Request(t.Context(), "pod-after", "", 2); err != nil {
		t.Fatal(err)
	}
	settledOn := func() bool {
		c, err := other.srv.store.Counts(t.Context())
		return err == nil && c[store.StateAvailable] == 3 && c[store.StatePendingDeposit] == 0
	}
	eventually(t, 60*time.Second, "the new owner refilled the pool to 3", settledOn)
	if m := poolMetric(t, other.srv, "pkmanager_spare_pool_keys_minted_total"); m != 2 {
		t.Fatalf("the new owner minted %v keys, want the 2 taken", m)
	}
}

// --spare-pool without on-chain deposits is refused: nothing would deposit
// its keys.
func TestSparePoolNeedsChainDeposits(t *testing.T) {
	_, err := New(t.Context(), Options{
		StoreURL: "bolt://" + filepath.Join(t.TempDir(), "pk.db"), KEK: testKEK(t), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: [4]byte{0x10, 0, 0, 0x38}},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		SparePool: 2,
	})
	if err == nil || !strings.Contains(err.Error(), "--spare-pool needs on-chain deposits") {
		t.Fatalf("New with --spare-pool in export mode: %v", err)
	}
}
