package deposit

import (
	"errors"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

func TestSelectForExport(t *testing.T) {
	c := func(pk string, st store.State, s ChainStatus) ExportCandidate {
		return ExportCandidate{Entry: CLIEntry{Pubkey: pk}, State: st, Status: s}
	}
	cands := []ExportCandidate{
		c("a", store.StateAssigned, StatusNotOnChain),
		c("b", store.StateAssigned, StatusOnChain),
		c("c", store.StatePendingDeposit, StatusNotOnChain),
		c("d", store.StateDepositFailed, StatusNotOnChain),
		c("e", store.StateAvailable, StatusOnChain),
	}
	got, om, err := SelectForExport(cands, false)
	if err != nil || len(got) != 2 || got[0].Pubkey != "a" || got[1].Pubkey != "d" || om != (Omitted{OnChain: 2, Pending: 1}) {
		t.Errorf("SelectForExport = %v, %+v, %v; want a and d, 2 on chain and 1 pending left out", got, om, err)
	}
	if s := om.String(); s == "" {
		t.Error("Omitted.String is empty")
	}
	if got, om, err := SelectForExport(cands, true); err != nil || len(got) != len(cands) || om.Total() != 0 {
		t.Errorf("SelectForExport(all) = %d entries, %+v, %v", len(got), om, err)
	}
	// Unknown status: refused unless all.
	unknown := append(cands, c("f", store.StateAssigned, StatusUnknown))
	if _, _, err := SelectForExport(unknown, false); !errors.Is(err, ErrChainUnknown) {
		t.Errorf("unknown status: err = %v, want ErrChainUnknown", err)
	}
	if got, _, err := SelectForExport(unknown, true); err != nil || len(got) != len(unknown) {
		t.Errorf("unknown status with all: %d entries, %v", len(got), err)
	}
}
