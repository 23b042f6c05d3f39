package allocator_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/reusegate"
	"github.com/pkmanager/pkmanager/internal/store"
)

// fakeGate answers Vet from a set of live keys, or fails.
type fakeGate struct {
	mu          sync.Mutex
	live        map[store.Pubkey]bool
	err         error
	vetted      int
	quarantined int
}

func (g *fakeGate) Vet(_ context.Context, pks []store.Pubkey) ([]store.Pubkey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.vetted += len(pks)
	if g.err != nil {
		return nil, g.err
	}
	var out []store.Pubkey
	for _, pk := range pks {
		if g.live[pk] {
			out = append(out, pk)
		}
	}
	return out, nil
}

func (g *fakeGate) Quarantined(n int) { g.mu.Lock(); g.quarantined += n; g.mu.Unlock() }

// With a reuse gate, released keys are held until the gate clears them (not
// after the reuse delay), a recycled key the beacon node sees live is
// quarantined instead of handed out, and a beacon node that cannot answer
// fails the request without handing out, minting or draining anything.
func TestGateVetsRecycledKeys(t *testing.T) {
	g := &fakeGate{live: map[store.Pubkey]bool{}}
	e := newEnv(t, func(c *allocator.Config) { c.Gate = g })
	ctx := context.Background()
	a := e.request(t, "validator-a", 3)
	rel, err := e.alloc.Release(ctx, "validator-a", "")
	if err != nil || !rel.Gated || rel.Released != 3 {
		t.Fatalf("release: %+v %v", rel, err)
	}
	var held []store.Pubkey
	for pk := range pubkeys(a) {
		k, err := e.st.GetKey(ctx, pk)
		if err != nil || k.State != store.StateCoolingDown || !reusegate.Held(k.CoolingUntil) {
			t.Fatalf("released key: %s until %s (%v), want held for the gate", k.State, k.CoolingUntil, err)
		}
		held = append(held, pk)
	}
	e.clock.Advance(time.Hour) // the reuse delay is long over: still held
	if b := e.request(t, "validator-b", 3); b.Recycled != 0 {
		t.Fatalf("held keys recycled before the gate cleared them: %+v", b)
	}
	// The gate clears them; one is live again when it is about to be handed out.
	if _, err := e.st.CoolDown(ctx, held, e.clock.Now(), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	g.live[held[0]] = true
	c := e.request(t, "validator-c", 3)
	if c.Recycled != 2 || c.Minted != 1 || pubkeys(c)[held[0]] {
		t.Fatalf("validator-c: recycled %d minted %d, live key handed out: %v", c.Recycled, c.Minted, pubkeys(c)[held[0]])
	}
	if k, _ := e.st.GetKey(ctx, held[0]); k.State != store.StateStillSigning || g.quarantined != 1 {
		t.Fatalf("live key is %s, quarantined %d; want still-signing, 1", k.State, g.quarantined)
	}

	// The beacon node does not answer: nothing handed out, minted or lost.
	if _, err := e.alloc.Release(ctx, "validator-c", ""); err != nil {
		t.Fatal(err)
	}
	var cKeys []store.Pubkey
	for pk := range pubkeys(c) {
		cKeys = append(cKeys, pk)
	}
	if _, err := e.st.CoolDown(ctx, cKeys, e.clock.Now(), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	g.err = errors.New("dial tcp: connection refused")
	minted := e.minter.keys.Load()
	for range 3 {
		if _, err := e.alloc.Request(ctx, "validator-d", "", 3); !errors.Is(err, allocator.ErrChainUnavailable) {
			t.Fatalf("request with the beacon node down: %v, want ErrChainUnavailable", err)
		}
	}
	if e.minter.keys.Load() != minted {
		t.Errorf("minted %d keys while the beacon node was down", e.minter.keys.Load()-minted)
	}
	for _, pk := range cKeys {
		k, _ := e.st.GetKey(ctx, pk)
		if k.State != store.StateCoolingDown || k.CoolingUntil.After(e.clock.Now()) || k.Pod != "" {
			t.Errorf("key of the failed request: %s pod %q until %s, want back in the pool", k.State, k.Pod, k.CoolingUntil)
		}
	}
	g.err = nil
	if d := e.request(t, "validator-d", 3); d.Recycled != 3 || d.Minted != 0 {
		t.Errorf("after the beacon node is back: recycled %d minted %d, want 3 and 0", d.Recycled, d.Minted)
	}
}
