package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// A release carries the holder's slashing-protection watermarks into the
// store in its own transaction, and a request hands out when each key was
// last released; watermarks for a key the pod does not hold refuse the
// whole release.
func TestReleaseWithProtection(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.request(t, "validator-a", 2)
	other := e.request(t, "validator-b", 1)
	for _, k := range a.Keys {
		if !k.ReleasedAt.IsZero() {
			t.Fatalf("a new key has a release time: %s", k.ReleasedAt)
		}
	}
	pa, pb := a.Keys[0].Pubkey, other.Keys[0].Pubkey

	bad := map[store.Pubkey]store.Protection{pa: {HasBlock: true, BlockSlot: 5}, pb: {HasBlock: true, BlockSlot: 6}}
	if _, err := e.alloc.ReleaseWithProtection(ctx, "validator-a", "", bad); !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("watermarks for another pod's key: %v", err)
	}
	if n := e.counts(t)[store.StateAssigned]; n != 3 {
		t.Fatalf("a refused release changed the store: %d assigned", n)
	}
	got, err := e.st.Protections(ctx, []store.Pubkey{pa, pb})
	if err != nil || len(got) != 0 {
		t.Fatalf("a refused release stored watermarks: %v %v", got, err)
	}

	releaseAt := e.clock.Now()
	prot := map[store.Pubkey]store.Protection{pa: {HasBlock: true, BlockSlot: 100, HasAttestation: true, SourceEpoch: 2, TargetEpoch: 3}}
	rel, err := e.alloc.ReleaseWithProtection(ctx, "validator-a", "", prot)
	if err != nil || rel.Released != 2 {
		t.Fatalf("release: %+v %v", rel, err)
	}
	got, err = e.st.Protections(ctx, []store.Pubkey{pa, a.Keys[1].Pubkey})
	if err != nil || len(got) != 1 || got[pa] != prot[pa] {
		t.Fatalf("stored watermarks %+v %v", got, err)
	}

	// The next holder learns when its recycled keys were released.
	e.clock.Advance(11 * time.Minute)
	c := e.request(t, "validator-c", 2)
	for _, k := range c.Keys {
		if !k.ReleasedAt.Equal(releaseAt) {
			t.Fatalf("recycled key %s: released at %s, want %s", k.Pubkey, k.ReleasedAt, releaseAt)
		}
	}
}
