package lodestartest

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestDevChainSurvivesAPause: a dev chain whose beacon node (and its own
// validator client, in the same process group) is frozen for 12 slots, as a
// paused virtual machine would be, makes blocks again once it resumes. A lone
// node cannot catch up from peers: Lodestar 1.5.1 calls itself synced only
// while its head is within its slot import tolerance (one epoch by default)
// of the clock, and refuses its validators' duties otherwise, so after such a
// gap the chain stopped for good (a CI run's Lodestar test failed so, with the
// machine's wall clock 40 s ahead of the test's monotonic clock). StartChain
// gives its nodes an hour of tolerance (--sync.slotImportTolerance).
func TestDevChainSurvivesAPause(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	chain := StartChain(t, ChainOptions{Validators: 8, SecondsPerSlot: 2, StartValidators: "0..7"})
	if err := sleepUntil(ctx, chain.SlotStart(3), "slot 3"); err != nil {
		t.Fatal(err)
	}
	before, err := chain.HeadSlot(ctx)
	if err != nil || before == 0 {
		t.Fatalf("head slot %d before the pause (%v), want blocks", before, err)
	}
	pgid := chain.bn.cmd.Process.Pid
	gap := uint64(12)
	if err := syscall.Kill(-pgid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := chain.Slot()
	time.Sleep(time.Duration(gap) * time.Duration(chain.SecondsPerSlot) * time.Second)
	if err := syscall.Kill(-pgid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := chain.Slot()
	t.Logf("beacon node frozen from slot %d to slot %d (head slot %d before)", frozen, resumed, before)

	// Within 4 slots of the resume a block at a slot after it.
	deadline := chain.SlotStart(resumed + 5)
	for {
		head, err := chain.HeadSlot(ctx)
		if err == nil && head > resumed {
			t.Logf("head slot %d at clock slot %d", head, chain.Slot())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no block after the pause: head slot %d (%v) at clock slot %d, resumed at slot %d", head, err, chain.Slot(), resumed)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := chain.CheckAlive(ctx); err != nil {
		t.Fatal(err)
	}
}
