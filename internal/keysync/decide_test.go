package keysync

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/keymanager"
	"github.com/pkmanager/pkmanager/internal/store"
)

func pk(b byte) store.Pubkey {
	var p store.Pubkey
	p[0] = b
	return p
}

func TestDecide(t *testing.T) {
	rw := func(bs ...byte) []keymanager.Key {
		var out []keymanager.Key
		for _, b := range bs {
			out = append(out, keymanager.Key{Pubkey: pk(b)})
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		assigned []store.Pubkey
		client   []keymanager.Key
		want     Plan
	}{
		{"empty client gets every key", []store.Pubkey{pk(2), pk(1)}, nil, Plan{Import: []store.Pubkey{pk(1), pk(2)}}},
		{"in sync", []store.Pubkey{pk(1), pk(2)}, rw(2, 1), Plan{}},
		{"released keys are deleted, new ones imported", []store.Pubkey{pk(2), pk(3)}, rw(1, 2), Plan{Import: []store.Pubkey{pk(3)}, Delete: []store.Pubkey{pk(1)}}},
		{"nothing assigned: everything goes", nil, rw(3, 1), Plan{Delete: []store.Pubkey{pk(1), pk(3)}}},
		{"listed twice counts once", []store.Pubkey{pk(1)}, rw(1, 1, 2, 2), Plan{Delete: []store.Pubkey{pk(2)}}},
		{"read-only foreign key is stuck, not deleted", []store.Pubkey{pk(1)}, []keymanager.Key{{Pubkey: pk(1)}, {Pubkey: pk(9), Readonly: true}},
			Plan{Stuck: []store.Pubkey{pk(9)}}},
		{"read-only assigned key is fine", []store.Pubkey{pk(1)}, []keymanager.Key{{Pubkey: pk(1), Readonly: true}}, Plan{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.assigned, tc.client)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
			if got.Empty() != (len(tc.want.Import)+len(tc.want.Delete)+len(tc.want.Stuck) == 0) {
				t.Fatalf("Empty() = %v for %+v", got.Empty(), got)
			}
		})
	}
}

func TestJudgeDelete(t *testing.T) {
	st := func(ss ...string) []keymanager.Status {
		var out []keymanager.Status
		for _, s := range ss {
			out = append(out, keymanager.Status{Status: s, Message: map[string]string{"error": "disk full"}[s]})
		}
		return out
	}
	keys := []store.Pubkey{pk(1), pk(2)}
	for _, tc := range []struct {
		name     string
		statuses []keymanager.Status
		listed   []keymanager.Key
		want     Fence
		why      string
	}{
		{"deleted and gone", st("deleted", "deleted"), nil, Fenced, ""},
		{"not_active and not_found are gone too", st("not_active", "not_found"), []keymanager.Key{{Pubkey: pk(7)}}, Fenced, ""},
		{"Lodestar 1.5.1: deleted but still listed", st("deleted", "deleted"), []keymanager.Key{{Pubkey: pk(2)}}, Again, "still listed after DELETE: " + pk(2).String()},
		{"error status", st("deleted", "error"), nil, Again, "DELETE failed for " + pk(2).String() + " (error: disk full)"},
		{"unknown status", st("deleted", "gone-fishing"), nil, Again, "gone-fishing"},
		{"too few statuses", st("deleted"), nil, Again, "1 statuses for 2 keys"},
		{"read-only key cannot be deleted", st("error", "deleted"), []keymanager.Key{{Pubkey: pk(1), Readonly: true}}, Stuck, "read-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := JudgeDelete(keys, tc.statuses, tc.listed)
			if got != tc.want || !strings.Contains(why, tc.why) || (tc.want == Fenced) != (why == "") {
				t.Fatalf("JudgeDelete = %v %q, want %v with %q", got, why, tc.want, tc.why)
			}
		})
	}
}
