package slashing

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Store is what custody reads from the store.
type Store interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	Protections(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.Protection, error)
}

// ChainFunc returns the chain parameters, or an error wrapping
// ErrChainUnknown that says what to configure.
type ChainFunc func() (Chain, error)

// Custody is the API layers' side of slashing-protection custody (gRPC and
// HTTP use the same one): it checks the interchange a pod uploads with its
// release, and builds the interchange a request hands to the next holder.
// A nil *Custody knows no chain: uploads are refused, requests get none.
type Custody struct {
	chain ChainFunc
	store Store
}

// NewCustody returns custody over st with the chain parameters of chain.
func NewCustody(chain ChainFunc, st Store) *Custody {
	return &Custody{chain: chain, store: st}
}

// Chain returns the chain parameters (an error wrapping ErrChainUnknown
// when there are none).
func (c *Custody) Chain() (Chain, error) {
	if c == nil || c.chain == nil {
		return Chain{}, fmt.Errorf("%w: this server has no slashing-protection custody", ErrChainUnknown)
	}
	return c.chain()
}

// Upload checks the interchange data that pod uploads with its release
// and returns the watermarks to merge into its keys (store.ReleaseParams.
// Protection). Only keys the pod holds (assigned to it now) may appear;
// the store checks that again in the release's own transaction. Empty data
// is no upload (nil, nil). Without chain parameters any upload is refused
// (ErrChainUnknown); a bad file is refused with an error wrapping
// ErrInvalid that says what is wrong and where. Either way nothing is
// released.
func (c *Custody) Upload(ctx context.Context, pod string, data []byte) (map[store.Pubkey]store.Protection, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	chain, err := c.Chain()
	if err != nil {
		return nil, fmt.Errorf("release pod %s with a slashing-protection interchange: %w", pod, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("release pod %s: %w: %d bytes, more than the %d accepted", pod, ErrInvalid, len(data), MaxFileBytes)
	}
	held := make(map[store.Pubkey]bool)
	err = c.store.ListKeys(ctx, store.ListOptions{Pod: pod, States: []store.State{store.StateAssigned}}, func(k store.Key) error {
		held[k.Pubkey] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("release pod %s: read the keys it holds: %w", pod, err)
	}
	marks, err := Parse(data, chain.GenesisValidatorsRoot, func(pk store.Pubkey) error {
		switch {
		case held[pk]:
			return nil
		case len(held) == 0:
			// Also a retry of a release that went through: the history
			// was recorded with it.
			return fmt.Errorf("pod %s does not hold this key: it holds no keys (released already?); a history is recorded only with the release of its keys", pod)
		}
		return fmt.Errorf("pod %s does not hold this key (it holds %d): upload the history of the pod's own keys only", pod, len(held))
	})
	if err != nil {
		return nil, fmt.Errorf("release pod %s: %w", pod, err)
	}
	return marks, nil
}

// Handed is a key a request hands to a pod.
type Handed struct {
	Pubkey store.Pubkey
	// ReleasedAt is when a pod last released the key (store.Key.
	// ReleasedAt); zero if it never had a holder before.
	ReleasedAt time.Time
}

// Export is the slashing-protection history a request hands out.
type Export struct {
	// Interchange is the EIP-3076 interchange (Write) for the keys that
	// have a history; nil when none has (or the chain is unknown).
	Interchange []byte
	// Keys counts the keys in Interchange.
	Keys int
	// Known: the chain parameters are known, and GenesisValidatorsRoot is
	// the chain's.
	Known                 bool
	GenesisValidatorsRoot [32]byte
}

// ForRequest builds the interchange for keys handed to a pod: for every
// key that ever had a holder, the watermarks its holders uploaded merged
// with release-time watermarks at its last release (ReleaseWatermarks),
// so that the new holder's validator client refuses whatever an earlier
// holder may have signed, uploaded or not. Keys that never had a holder
// and have no uploaded history get no entry. Without chain parameters the
// export is empty (the interchange would need the chain's genesis
// validators root, and release-time watermarks its clock).
func (c *Custody) ForRequest(ctx context.Context, keys []Handed) (Export, error) {
	chain, err := c.Chain()
	if err != nil {
		return Export{}, nil
	}
	out := Export{Known: true, GenesisValidatorsRoot: chain.GenesisValidatorsRoot}
	if len(keys) == 0 {
		return out, nil
	}
	pks := make([]store.Pubkey, len(keys))
	for i, k := range keys {
		pks[i] = k.Pubkey
	}
	stored, err := c.store.Protections(ctx, pks)
	if err != nil {
		return Export{}, fmt.Errorf("read slashing-protection history: %w", err)
	}
	marks := make(map[store.Pubkey]Watermarks, len(keys))
	for _, k := range keys {
		w := stored[k.Pubkey]
		if !k.ReleasedAt.IsZero() {
			rw, err := ReleaseWatermarks(chain.GenesisTime, chain.SecondsPerSlot, chain.SlotsPerEpoch, k.ReleasedAt)
			if err != nil {
				return Export{}, err
			}
			w = w.Merge(rw)
		}
		if !w.Empty() {
			marks[k.Pubkey] = w
		}
	}
	if len(marks) == 0 {
		return out, nil
	}
	if out.Interchange, err = Write(chain.GenesisValidatorsRoot, marks); err != nil {
		return Export{}, err
	}
	out.Keys = len(marks)
	return out, nil
}
