package main

import (
	"strings"
	"testing"
)

// Each key's deposit is reported once sent and once in a block (again when
// its transaction or block changes); the summary counts where they are.
func TestDepositProgressLines(t *testing.T) {
	p := &progress{pod: "p-0"}
	pk, tx := "0x"+strings.Repeat("8a", 48), "0x"+strings.Repeat("ab", 32)
	steps := []struct {
		d    pendingDeposit
		want string // "" = nothing reported
	}{
		{pendingDeposit{pubkey: pk}, ""},
		{pendingDeposit{pubkey: pk, tx: tx}, "pod p-0: deposit of key " + pk + " sent: transaction " + tx},
		{pendingDeposit{pubkey: pk, tx: tx}, ""},
		{pendingDeposit{pubkey: pk, tx: tx, block: 41, toGo: 2}, "pod p-0: deposit of key " + pk + " in block 41 (transaction " + tx + "), 2 more blocks to go"},
		{pendingDeposit{pubkey: pk, tx: tx, block: 41, toGo: 1}, ""},
		{pendingDeposit{pubkey: pk, tx: tx, block: 42, toGo: 1}, "pod p-0: deposit of key " + pk + " in block 42 (transaction " + tx + "), 1 more block to go"},
	}
	for i, st := range steps {
		got, ok := p.changed(st.d)
		if got != st.want || ok != (st.want != "") {
			t.Errorf("step %d: %q %v, want %q", i, got, ok, st.want)
		}
	}
	got := depositSummary([]pendingDeposit{{pubkey: "a"}, {pubkey: "b", tx: "t"}, {pubkey: "c", tx: "u", block: 41, toGo: 1},
		{pubkey: "d", tx: "v", block: 43, toGo: 2}})
	if want := "4 deposits: 1 not sent yet, 1 sent and in no block yet, 2 in blocks 41-43 (at most 2 more blocks to go)"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}
