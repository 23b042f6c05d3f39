package bolt

import (
	"slices"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The RequireActive part of claim (store.ClaimParams.RequireActive): the
// rule is store.ReadyForDuties on each key's stored reading.

// pick says whether claim may take the pool key of index entry k (its
// pubkey read by pubkey): always without p.RequireActive, else only when
// its reading is ready for duties; a key that is still activating is
// counted in activating.
func (t *txn) pick(p *store.ClaimParams, k []byte, pubkey func([]byte) (store.Pubkey, error), activating *int) (bool, error) {
	if !p.RequireActive {
		return true, nil
	}
	pk, err := pubkey(k)
	if err != nil {
		return false, err
	}
	v, err := t.getStatus(pk)
	if err != nil {
		return false, err
	}
	if store.ReadyForDuties(v) {
		return true, nil
	}
	if store.Activating(v) {
		*activating++
	}
	return false, nil
}

func coolingPubkey(k []byte) (store.Pubkey, error) {
	_, pk, err := parseCoolingKey(k)
	return pk, err
}

// activeResult fills in res's Activating and Inactive (p.RequireActive
// only).
func (t *txn) activeResult(p *store.ClaimParams, res *store.Claim, activating int) error {
	if !p.RequireActive {
		return nil
	}
	res.Activating = activating
	for _, k := range res.Keys {
		v, err := t.getStatus(k.Pubkey)
		if err != nil {
			return err
		}
		if !store.ReadyForDuties(v) {
			res.Inactive = append(res.Inactive, k.Pubkey)
		}
	}
	slices.SortFunc(res.Inactive, comparePK)
	return nil
}
