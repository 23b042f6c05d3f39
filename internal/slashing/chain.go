package slashing

import (
	"errors"
	"fmt"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Chain is what slashing-protection custody needs to know about the beacon
// chain: its genesis validators root (which interchanges name, so that a
// history is never imported on another chain) and its clock (genesis time,
// slot and epoch lengths), for release-time watermarks.
type Chain struct {
	GenesisValidatorsRoot [32]byte
	GenesisTime           time.Time
	SecondsPerSlot        time.Duration
	SlotsPerEpoch         uint64
}

// Validate checks that c can compute slots and epochs.
func (c Chain) Validate() error {
	switch {
	case c.GenesisTime.IsZero():
		return errors.New("chain parameters: no genesis time")
	case c.SecondsPerSlot <= 0:
		return fmt.Errorf("chain parameters: slot length %s, want more than 0", c.SecondsPerSlot)
	case c.SlotsPerEpoch == 0:
		return errors.New("chain parameters: 0 slots per epoch")
	}
	return nil
}

// String describes c for banners and logs.
func (c Chain) String() string {
	return fmt.Sprintf("genesis validators root %s, genesis %s, %s slots, %d slots per epoch",
		FormatRoot(c.GenesisValidatorsRoot), c.GenesisTime.UTC().Format(time.RFC3339), c.SecondsPerSlot, c.SlotsPerEpoch)
}

// Slot is the slot t falls in: 0 at and before genesis.
func (c Chain) Slot(t time.Time) uint64 {
	if !t.After(c.GenesisTime) || c.SecondsPerSlot <= 0 {
		return 0
	}
	return uint64(t.Sub(c.GenesisTime) / c.SecondsPerSlot)
}

// Epoch is the epoch t falls in: 0 at and before genesis.
func (c Chain) Epoch(t time.Time) uint64 {
	if c.SlotsPerEpoch == 0 {
		return 0
	}
	return c.Slot(t) / c.SlotsPerEpoch
}

// ReleaseWatermarks returns the watermarks that cover whatever a key's
// holder may have signed up to its release at the time at, on a chain of
// the given genesis time, slot length and epoch length: a signed block at
// the release slot and an attestation with source = target = the release
// epoch. A validator client that imports them signs no block at or before
// the release slot and no attestation with a target at or before the
// release epoch, nor one whose source is before it (EIP-3076's conditions
// 2, 4 and 5). The source watermark is stricter than the previous holder's
// real history needs (its attestations' sources were at most the release
// epoch), which only costs the next holder the attestations of the epoch
// or two until the chain justifies the release epoch; it never lets it
// sign anything an earlier holder may have signed. A release at or before
// genesis gives slot 0 and epoch 0 (nothing was signed yet).
func ReleaseWatermarks(genesis time.Time, secondsPerSlot time.Duration, slotsPerEpoch uint64, at time.Time) (Watermarks, error) {
	c := Chain{GenesisTime: genesis, SecondsPerSlot: secondsPerSlot, SlotsPerEpoch: slotsPerEpoch}
	if err := c.Validate(); err != nil {
		return Watermarks{}, err
	}
	slot := c.Slot(at)
	epoch := slot / slotsPerEpoch
	return store.Protection{HasBlock: true, BlockSlot: slot, HasAttestation: true, SourceEpoch: epoch, TargetEpoch: epoch}, nil
}
