package lodestar

import (
	"context"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
)

// TestOnLodestar runs the real-chain scenarios side by side on one Lodestar
// dev chain (one beacon node; each scenario has its own pkmanager server,
// validator clients and pool keys): the beacon node's own validator client
// runs interop validators 0..14, which keeps the chain going; 15..18 are the
// scenarios' pools, and nobody runs 19 (a control group of one).
func TestOnLodestar(t *testing.T) {
	chain := lodestartest.StartChain(t, lodestartest.ChainOptions{Validators: 20, SecondsPerSlot: 2, StartValidators: "0..14"})
	t.Logf("beacon node %s, %d s slots, %d slots per epoch, genesis %s", chain.URL, chain.SecondsPerSlot, chain.SlotsPerEpoch, chain.GenesisTime)
	// Start once the chain has: before genesis Lodestar answers no liveness
	// (not even for epoch 0), so the server's hand-out checks fail. A beacon
	// node that started late is started again with twice the genesis delay,
	// which leaves genesis ahead when StartChain returns.
	if d := time.Until(chain.SlotStart(1)); d > 0 {
		t.Logf("waiting %s for the chain's first slot", d.Round(time.Second))
		time.Sleep(d)
	}
	t.Run("StillSigningKeyIsNotReused", func(t *testing.T) {
		t.Parallel()
		stillSigningKeyIsNotReused(t, chain, 15, 16)
	})
	t.Run("SyncSidecar", func(t *testing.T) {
		t.Parallel()
		syncSidecar(t, chain, 17, 18, 19)
	})
}

// stepper returns a t.Logf that prefixes the seconds since the call.
func stepper(t *testing.T) func(format string, args ...any) {
	t0 := time.Now()
	return func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(t0).Seconds()}, args...)...)
	}
}

// nobodySlashed fails t for every slashed validator of the head state.
func nobodySlashed(ctx context.Context, t *testing.T, chain *lodestartest.Chain) {
	t.Helper()
	vals, err := chain.Validators(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		if v.Slashed {
			t.Errorf("validator %d slashed", v.Index)
		}
	}
}
