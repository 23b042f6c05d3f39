package slashing

import (
	"strings"
	"testing"
	"time"
)

func TestReleaseWatermarks(t *testing.T) {
	mainnetGenesis := time.Unix(1606824023, 0)
	g := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		genesis      time.Time
		slot         time.Duration
		perEpoch     uint64
		at           time.Time
		slotN, epoch uint64
	}{
		{"before genesis", g, 12 * time.Second, 32, g.Add(-time.Hour), 0, 0},
		{"at genesis", g, 12 * time.Second, 32, g, 0, 0},
		{"end of slot 0", g, 12 * time.Second, 32, g.Add(12*time.Second - time.Nanosecond), 0, 0},
		{"start of slot 1", g, 12 * time.Second, 32, g.Add(12 * time.Second), 1, 0},
		{"last slot of epoch 0", g, 12 * time.Second, 32, g.Add(31*12*time.Second + 5*time.Second), 31, 0},
		{"first slot of epoch 1", g, 12 * time.Second, 32, g.Add(32 * 12 * time.Second), 32, 1},
		{"mainnet on 2024-01-01", mainnetGenesis, 12 * time.Second, 32, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), 8103598, 253237},
		{"other timing", g, 6 * time.Second, 8, g.Add(100 * time.Second), 16, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ReleaseWatermarks(tc.genesis, tc.slot, tc.perEpoch, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			want := Watermarks{HasBlock: true, BlockSlot: tc.slotN, HasAttestation: true, SourceEpoch: tc.epoch, TargetEpoch: tc.epoch}
			if w != want {
				t.Fatalf("got %+v, want %+v", w, want)
			}
			c := Chain{GenesisTime: tc.genesis, SecondsPerSlot: tc.slot, SlotsPerEpoch: tc.perEpoch}
			if c.Slot(tc.at) != tc.slotN || c.Epoch(tc.at) != tc.epoch {
				t.Fatalf("Chain.Slot/Epoch: %d %d", c.Slot(tc.at), c.Epoch(tc.at))
			}
		})
	}
	for _, tc := range []struct {
		name     string
		genesis  time.Time
		slot     time.Duration
		perEpoch uint64
		want     string
	}{
		{"no genesis", time.Time{}, 12 * time.Second, 32, "no genesis time"},
		{"zero slot", g, 0, 32, "slot length 0s"},
		{"negative slot", g, -time.Second, 32, "slot length -1s"},
		{"zero epoch", g, 12 * time.Second, 0, "0 slots per epoch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReleaseWatermarks(tc.genesis, tc.slot, tc.perEpoch, g)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// What the next holder may sign after importing release-time watermarks:
// nothing at or before the release slot or epoch; blocks from the next
// slot, attestations once source and target are past the release epoch's
// checkpoint.
func TestReleaseWatermarksRefuseTheReleaseEpoch(t *testing.T) {
	g := time.Unix(1742213400, 0)
	release := g.Add(10*32*12*time.Second + 7*12*time.Second + 3*time.Second) // epoch 10, slot 327
	w, err := ReleaseWatermarks(g, 12*time.Second, 32, release)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range []uint64{0, 326, 327} {
		if !refusesBlock(w, slot) {
			t.Errorf("block at slot %d allowed", slot)
		}
	}
	if refusesBlock(w, 328) {
		t.Error("block at slot 328 refused")
	}
	for _, a := range [][2]uint64{{9, 10}, {10, 10}, {9, 11}, {0, 12}} {
		if !refusesAttestation(w, a[0], a[1]) {
			t.Errorf("attestation %d->%d allowed", a[0], a[1])
		}
	}
	if refusesAttestation(w, 10, 11) {
		t.Error("attestation 10->11 refused")
	}
}
