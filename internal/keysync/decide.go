package keysync

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/pkmanager/pkmanager/internal/keymanager"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Plan is what makes a validator client's keys equal to the pod's
// assignment.
type Plan struct {
	// Import: assigned to the pod, not in the client.
	Import []store.Pubkey
	// Delete: in the client, not assigned to the pod (any more).
	Delete []store.Pubkey
	// Stuck: in the client, not assigned, and read-only there (loaded from
	// the client's own configuration): the API cannot delete them.
	Stuck []store.Pubkey
}

// Empty reports whether the client already matches the assignment.
func (p Plan) Empty() bool { return len(p.Import)+len(p.Delete)+len(p.Stuck) == 0 }

// Decide compares the pod's assignment with the keys the client lists. Keys
// come out in pubkey order.
func Decide(assigned []store.Pubkey, client []keymanager.Key) Plan {
	want := make(map[store.Pubkey]bool, len(assigned))
	for _, pk := range assigned {
		want[pk] = true
	}
	have := make(map[store.Pubkey]bool, len(client))
	var p Plan
	for _, k := range client {
		if have[k.Pubkey] {
			continue
		}
		have[k.Pubkey] = true
		switch {
		case want[k.Pubkey]:
		case k.Readonly:
			p.Stuck = append(p.Stuck, k.Pubkey)
		default:
			p.Delete = append(p.Delete, k.Pubkey)
		}
	}
	for pk := range want {
		if !have[pk] {
			p.Import = append(p.Import, pk)
		}
	}
	for _, s := range [][]store.Pubkey{p.Import, p.Delete, p.Stuck} {
		sortPubkeys(s)
	}
	return p
}

// Fence is the verdict on one round of deleting keys: a DELETE and the GET
// after it.
type Fence int

const (
	// Fenced: every key is out of the client (GET lists none of them) and
	// no DELETE status was an error.
	Fenced Fence = iota
	// Again: some key is still listed (Lodestar 1.5.1 keeps signing with a
	// key after the first DELETE of it) or its status was an error; DELETE
	// once more.
	Again
	// Stuck: some key is listed read-only; no DELETE will remove it.
	Stuck
)

func (f Fence) String() string {
	switch f {
	case Fenced:
		return "fenced"
	case Again:
		return "again"
	case Stuck:
		return "stuck"
	}
	return fmt.Sprintf("fence(%d)", int(f))
}

// JudgeDelete judges a round: keys were deleted with statuses (one per key,
// in order), then the client listed `listed`. The reason says which keys
// are left and why (empty when Fenced). A status of not_found is as good as
// deleted: the key is not in the client, which GET confirms.
func JudgeDelete(keys []store.Pubkey, statuses []keymanager.Status, listed []keymanager.Key) (Fence, string) {
	deleting := make(map[store.Pubkey]bool, len(keys))
	for _, pk := range keys {
		deleting[pk] = true
	}
	var left, readonly, failed []string
	for _, k := range listed {
		if !deleting[k.Pubkey] {
			continue
		}
		if k.Readonly {
			readonly = append(readonly, k.Pubkey.String())
		} else {
			left = append(left, k.Pubkey.String())
		}
	}
	for i, st := range statuses {
		if i >= len(keys) {
			break
		}
		switch st.Status {
		case keymanager.StatusDeleted, keymanager.StatusNotActive, keymanager.StatusNotFound:
		default:
			msg := st.Status
			if st.Message != "" {
				msg += ": " + st.Message
			}
			failed = append(failed, keys[i].String()+" ("+msg+")")
		}
	}
	if len(statuses) != len(keys) {
		failed = append(failed, fmt.Sprintf("%d statuses for %d keys", len(statuses), len(keys)))
	}
	switch {
	case len(readonly) > 0:
		return Stuck, "read-only in the validator client (the API cannot delete them): " + strings.Join(readonly, ", ")
	case len(left) > 0 || len(failed) > 0:
		var why []string
		if len(left) > 0 {
			why = append(why, "still listed after DELETE: "+strings.Join(left, ", "))
		}
		if len(failed) > 0 {
			why = append(why, "DELETE failed for "+strings.Join(failed, ", "))
		}
		return Again, strings.Join(why, "; ")
	}
	return Fenced, ""
}

func sortPubkeys(s []store.Pubkey) {
	slices.SortFunc(s, func(a, b store.Pubkey) int { return bytes.Compare(a[:], b[:]) })
}
