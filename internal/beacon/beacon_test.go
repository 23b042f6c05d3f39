package beacon_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/store"
)

func testChain() beacon.Chain {
	return beacon.Chain{GenesisTime: time.Now().Add(-10 * time.Minute).Truncate(time.Second), GenesisValidatorsRoot: [32]byte{1, 2, 3},
		GenesisForkVersion: [4]byte{0x10, 0, 0, 0x38}, SecondsPerSlot: 2 * time.Second, SlotsPerEpoch: 8}
}

func pk(i byte) store.Pubkey {
	var p store.Pubkey
	p[0], p[1] = 0xa0, i
	return p
}

func TestChainTime(t *testing.T) {
	c := testChain()
	if c.EpochDuration() != 16*time.Second {
		t.Fatalf("epoch %s", c.EpochDuration())
	}
	at := c.GenesisTime.Add(35 * time.Second)
	if c.Epoch(at) != 2 || c.Slot(at) != 17 || !c.EpochStart(2).Equal(c.GenesisTime.Add(32*time.Second)) {
		t.Errorf("epoch %d slot %d start %s", c.Epoch(at), c.Slot(at), c.EpochStart(2))
	}
	if c.Epoch(c.GenesisTime.Add(-time.Hour)) != 0 {
		t.Error("before genesis")
	}
}

// Dial reads genesis and timing; indices and liveness are asked in the
// standard forms, or the older GET forms when a node serves only those; a
// node that does not answer fails the call (never "not live").
func TestNode(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		c := testChain()
		f := beacontest.NewFake(c, time.Now)
		f.Legacy = legacy
		defer f.Close()
		f.AddValidator(pk(1), 10)
		f.AddValidator(pk(2), 11)
		n, err := beacon.Dial(t.Context(), []string{f.URL()}, beacon.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Chain(); !got.Equal(c) {
			t.Fatalf("Chain = %+v, want %+v", got, c)
		}
		idx, err := n.Indices(t.Context(), []store.Pubkey{pk(1), pk(2), pk(3)})
		if err != nil || len(idx) != 2 || idx[pk(1)] != 10 || idx[pk(2)] != 11 {
			t.Fatalf("Indices = %v, %v", idx, err)
		}
		before := f.Calls()["GET validators"]
		if _, err := n.Indices(t.Context(), []store.Pubkey{pk(1)}); err != nil || f.Calls()["GET validators"] != before {
			t.Errorf("a known index was asked again")
		}
		e := c.Epoch(time.Now())
		f.SetLive(e-1, 10)
		live, err := n.Liveness(t.Context(), e-1, []uint64{10, 11})
		if err != nil || !live[10] || live[11] {
			t.Fatalf("legacy %v: Liveness = %v, %v", legacy, live, err)
		}
		if _, err := n.Liveness(t.Context(), e-5, []uint64{10}); err == nil {
			t.Errorf("liveness of an old epoch answered")
		}
		f.SetDown(true)
		if _, err := n.Liveness(t.Context(), e-1, []uint64{10}); !errors.Is(err, beacon.ErrUnavailable) {
			t.Errorf("Liveness with the node down = %v, want ErrUnavailable", err)
		}
	}
}

// With several nodes a call moves on to the next that answers.
func TestNodeFailover(t *testing.T) {
	c := testChain()
	a, b := beacontest.NewFake(c, time.Now), beacontest.NewFake(c, time.Now)
	defer a.Close()
	defer b.Close()
	for _, f := range []*beacontest.Fake{a, b} {
		f.AddValidator(pk(1), 5)
	}
	n, err := beacon.Dial(t.Context(), []string{a.URL(), b.URL()}, beacon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.SetDown(true)
	e := c.Epoch(time.Now())
	b.SetLive(e, 5)
	live, err := n.Liveness(t.Context(), e, []uint64{5})
	if err != nil || !live[5] {
		t.Fatalf("Liveness with the first node down = %v, %v", live, err)
	}
	// Nodes of another chain are refused at Dial.
	other := c
	other.GenesisValidatorsRoot[0] ^= 1
	o := beacontest.NewFake(other, time.Now)
	defer o.Close()
	a.SetDown(false)
	if _, err := beacon.Dial(t.Context(), []string{a.URL(), o.URL()}, beacon.Options{}); err == nil {
		t.Error("Dial accepted nodes of two chains")
	}
}
