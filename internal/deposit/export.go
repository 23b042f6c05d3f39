package deposit

import (
	"errors"
	"fmt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// ChainStatus says whether a key's deposit is on chain, as far as the
// server can tell.
type ChainStatus int

// Chain statuses.
const (
	// StatusUnknown: the server has no view of the chain and recorded no
	// deposit for the key.
	StatusUnknown ChainStatus = iota
	// StatusNotOnChain: the chain has no deposit for the key.
	StatusNotOnChain
	// StatusOnChain: the chain has a deposit for the key.
	StatusOnChain
)

// ErrChainUnknown: an export was asked for keys whose deposits the server
// cannot check on chain.
var ErrChainUnknown = errors.New("cannot tell which deposits are already on chain")

// ExportCandidate is a key's deposit data with what is known about it.
type ExportCandidate struct {
	Entry  CLIEntry
	State  store.State
	Status ChainStatus
}

// Omitted counts the deposits an export left out, by reason.
type Omitted struct {
	// OnChain: the chain already has the key's deposit.
	OnChain int
	// Pending: the key is pending-deposit, the server's own to deposit.
	Pending int
}

// Total is the number of deposits left out.
func (o Omitted) Total() int { return o.OnChain + o.Pending }

// String describes what was left out and why ("" when nothing was).
func (o Omitted) String() string {
	switch {
	case o.Total() == 0:
		return ""
	case o.Pending == 0:
		return fmt.Sprintf("left out %d whose deposit is already on chain", o.OnChain)
	case o.OnChain == 0:
		return fmt.Sprintf("left out %d pending-deposit (the server sends their deposits)", o.Pending)
	}
	return fmt.Sprintf("left out %d whose deposit is already on chain and %d pending-deposit (the server sends their deposits)", o.OnChain, o.Pending)
}

// SelectForExport picks the deposits that a deposit tool may be fed without
// paying any deposit twice: those the chain does not have, of keys the
// server does not deposit itself (not pending-deposit). With all, it picks
// every candidate. Without all, a candidate whose status is unknown fails
// the export with ErrChainUnknown, saying how many there are.
func SelectForExport(cands []ExportCandidate, all bool) ([]CLIEntry, Omitted, error) {
	var (
		out     []CLIEntry
		om      Omitted
		unknown int
	)
	for _, c := range cands {
		switch {
		case all:
		case c.Status == StatusOnChain:
			om.OnChain++
			continue
		case c.State == store.StatePendingDeposit:
			om.Pending++
			continue
		case c.Status == StatusUnknown:
			unknown++
			continue
		}
		out = append(out, c.Entry)
	}
	if unknown > 0 {
		return nil, om, fmt.Errorf("%w: the server has no view of the chain (start it with --eth1-rpc and --deposit-contract, also with --deposits export), "+
			"so it cannot tell which of %d deposits are already paid; export them anyway with --all (a deposit tool then pays again for any that are)",
			ErrChainUnknown, unknown)
	}
	return out, om, nil
}

// ErrNotOnChain: the chain has no deposit for a key that needs one.
var ErrNotOnChain = errors.New("no deposit on chain")

// OnChain is what the server knows about a key's deposit on chain.
type OnChain struct {
	Status ChainStatus
	// Block holds the deposit when Status is StatusOnChain.
	Block uint64
}
