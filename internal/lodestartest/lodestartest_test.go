package lodestartest

import (
	"context"
	"testing"
	"time"
)

// The consensus specs' interop keys 0 and 1 (as `lodestar dev` lists them).
func TestInteropPubkey(t *testing.T) {
	for i, want := range []string{
		"0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c",
		"0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b",
	} {
		if got := InteropPubkey(i); got != want {
			t.Errorf("InteropPubkey(%d) = %s, want %s", i, got, want)
		}
	}
}

// TestDevChainKeymanagerHandoff proves the harness on a real chain: a dev chain
// of 8 interop validators whose own client runs 0..5. Interop validator 6 is
// pushed into an empty validator client A through the keymanager API with an
// empty EIP-3076 interchange and attests (liveness); it is deleted from A,
// whose DELETE returns its history for this chain; it stays quiet for an
// epoch; it is pushed with that history into client B and attests again.
// Validator 7 is never run (the control); nobody is slashed.
func TestDevChainKeymanagerHandoff(t *testing.T) {
	t0 := time.Now()
	step := func(format string, args ...any) {
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(t0).Seconds()}, args...)...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()

	chain := StartChain(t, ChainOptions{Validators: 8, SecondsPerSlot: 2, StartValidators: "0..5"})
	step("beacon node %s up; genesis in %s, genesis_validators_root %s, fork version %s, %d s slots, %d slots/epoch",
		chain.URL, time.Until(chain.GenesisTime).Round(time.Second), chain.GenesisValidatorsRoot, chain.GenesisForkVersion,
		chain.SecondsPerSlot, chain.SlotsPerEpoch)
	vcA := chain.StartValidatorClient(t)
	step("empty validator client A up, keymanager %s", vcA.URL)

	const pushed, control = 6, 7
	pk := InteropPubkey(pushed)
	ks, err := chain.Keystore(pushed)
	if err != nil {
		t.Fatal(err)
	}
	importA := chain.Epoch()
	st, err := vcA.ImportKeystores(ctx, []string{ks}, []string{KeystorePassword}, EmptyInterchange(chain.GenesisValidatorsRoot))
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Status != "imported" {
		t.Fatalf("import into A: %+v", st)
	}
	step("POST /eth/v1/keystores to A: %+v (clock epoch %d, slot %d)", st, importA, chain.Slot())
	if list, err := vcA.ListKeystores(ctx); err != nil || len(list) != 1 || list[0].ValidatingPubkey != pk {
		t.Fatalf("GET /eth/v1/keystores on A after import: %+v %v", list, err)
	}
	v, err := chain.Validator(ctx, pk)
	if err != nil {
		t.Fatal(err)
	}
	if v.Index != pushed || v.Status != "active_ongoing" || v.Slashed {
		t.Fatalf("validator %s: %+v, want index %d active_ongoing", pk, v, pushed)
	}
	vcB := chain.StartValidatorClient(t)
	step("empty validator client B up, keymanager %s", vcB.URL)

	liveA, err := chain.WaitLive(ctx, importA, 7, pushed)
	if err != nil {
		t.Fatal(err)
	}
	step("validator %d live from A in epoch %d (imported in epoch %d)", pushed, liveA, importA)
	// The genesis validators 0-5 are checked after the delete below: in the
	// chain's first epoch (liveA may be 0) its own validator client can
	// miss an early duty while it starts (seen on a loaded machine).
	l, err := chain.Liveness(ctx, liveA, pushed, control)
	if err != nil {
		t.Fatal(err)
	}
	if !l[pushed] || l[control] {
		t.Errorf("epoch %d: live %v, want %d live and %d not", liveA, l, pushed, control)
	}

	st, sp, deletes, err := vcA.RemoveKeystores(ctx, pk)
	if err != nil {
		t.Fatal(err)
	}
	deleted := chain.Epoch()
	step("DELETE /eth/v1/keystores on A: %+v, %d DELETE(s) until GET no longer listed it (clock epoch %d, slot %d)", st, deletes, deleted, chain.Slot())
	if st[0].Status != "deleted" {
		t.Fatalf("delete from A: %+v", st)
	}
	ic, err := ParseInterchange(sp)
	if err != nil {
		t.Fatal(err)
	}
	if ic.Metadata.InterchangeFormatVersion != "5" || ic.Metadata.GenesisValidatorsRoot != chain.GenesisValidatorsRoot {
		t.Errorf("interchange metadata %+v, want format 5 and root %s", ic.Metadata, chain.GenesisValidatorsRoot)
	}
	if len(ic.Data) != 1 {
		t.Errorf("interchange holds %d keys, want only the deleted one", len(ic.Data))
	}
	k := ic.Key(pk)
	if k == nil {
		t.Fatalf("no history of %s in the interchange: %.300s", pk, sp)
	}
	maxTarget, ok := k.MaxTargetEpoch()
	if !ok || maxTarget < liveA {
		t.Errorf("interchange: %d attestations, highest target %d; want one with target >= %d (live epoch)", len(k.SignedAttestations), maxTarget, liveA)
	}
	step("interchange: format %s, %d attestations (highest target %d), %d blocks", ic.Metadata.InterchangeFormatVersion,
		len(k.SignedAttestations), maxTarget, len(k.SignedBlocks))

	// Deleted means fenced: not seen from the epoch after the delete.
	quiet := deleted + 1
	if err := chain.WaitEpochDone(ctx, quiet); err != nil {
		t.Fatal(err)
	}
	genesis := []uint64{0, 1, 2, 3, 4, 5} // the chain's own validator client's
	l, err = chain.Liveness(ctx, quiet, append([]uint64{pushed, control}, genesis...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range append([]uint64{pushed, control}, genesis...) {
		if l[i] != (i != pushed && i != control) {
			t.Fatalf("epoch %d (after the delete): live %v, want %d and %d not live, %v live", quiet, l, pushed, control, genesis)
		}
	}
	step("epoch %d: validator %d quiet after the delete", quiet, pushed)

	importB := chain.Epoch()
	st, err = vcB.ImportKeystores(ctx, []string{ks}, []string{KeystorePassword}, sp)
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Status != "imported" {
		t.Fatalf("import into B: %+v", st)
	}
	step("POST /eth/v1/keystores to B with A's interchange: %+v (clock epoch %d, slot %d)", st, importB, chain.Slot())
	liveB, err := chain.WaitLive(ctx, importB, 7, pushed)
	if err != nil {
		t.Fatal(err)
	}
	step("validator %d live from B in epoch %d (imported in epoch %d: %d epoch(s) later)", pushed, liveB, importB, liveB-importB)

	cp, err := chain.WaitJustified(ctx, 1, 4*chain.EpochDuration())
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chain.Validators(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var slashed []uint64
	for _, v := range vals {
		if v.Slashed {
			slashed = append(slashed, v.Index)
		}
	}
	if len(vals) != 8 || len(slashed) > 0 {
		t.Errorf("%d validators, slashed: %v", len(vals), slashed)
	}
	// Lodestar 1.5.1 keeps liveness for the previous epoch only.
	if old, err := chain.Liveness(ctx, 0, pushed); err == nil {
		t.Errorf("liveness for epoch 0 in clock epoch %d: %v, want an error", chain.Epoch(), old)
	}
	step("justified epoch %d, finalized %d; nobody slashed; validator %d balance %d gwei, control %d balance %d gwei",
		cp.CurrentJustified, cp.Finalized, pushed, vals[pushed].Balance, control, vals[control].Balance)
}
