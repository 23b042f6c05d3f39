package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/attestantio/go-eth2-client/spec/phase0"

	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/store"
)

// TestValidatorStatuses: with a validator reader, /assignments shows each
// key's validator status (HTML column, JSON fields, ?status= filter, keys
// without a reading as "unknown", never as undeposited) and GET
// /api/v1/keys carries the reading.
func TestValidatorStatuses(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	fillAssigned(t, s, 0xa1, []string{"pod-a", "pod-b"}, 2, fixtureNow)
	ctx := context.Background()
	far := ^uint64(0)
	rd := func(i int, status string, exit uint64) store.ValidatorReading {
		return store.ValidatorReading{Pubkey: pk(0xa1, i), Status: store.ValidatorStatus{Index: uint64(40 + i), Status: status,
			Balance: 32e9, ActivationEpoch: 1, ExitEpoch: exit, Epoch: 9, At: fixtureNow}}
	}
	// k0 active, k1 exiting (alert, stays with its pod), k2 active; k3 no
	// reading.
	if _, err := s.RecordValidators(ctx, []store.ValidatorReading{rd(0, "active_ongoing", far), rd(1, "active_exiting", 30), rd(2, "active_ongoing", far)}, fixtureNow); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t), Validators: s})

	rec := do(t, h, "GET", "/assignments?format=json&status=active_exiting", "")
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got struct {
		Pods []struct {
			PodName string `json:"pod_name"`
			Keys    []struct {
				Pubkey          string `json:"pubkey"`
				ValidatorStatus string `json:"validator_status"`
				ValidatorIndex  int64  `json:"validator_index"`
			} `json:"keys"`
		} `json:"pods"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Pods) != 1 || len(got.Pods[0].Keys) != 1 || got.Pods[0].Keys[0].Pubkey != pk(0xa1, 1).String() ||
		got.Pods[0].Keys[0].ValidatorStatus != "active_exiting" || got.Pods[0].Keys[0].ValidatorIndex != 41 {
		t.Errorf("?status=active_exiting: %s", rec.Body)
	}
	rec = do(t, h, "GET", "/assignments?format=json&status=unknown", "")
	if !strings.Contains(rec.Body.String(), pk(0xa1, 3).String()) || strings.Contains(rec.Body.String(), pk(0xa1, 0).String()) {
		t.Errorf("?status=unknown: %s", rec.Body)
	}
	rec = do(t, h, "GET", "/assignments", "")
	body := rec.Body.String()
	if !strings.Contains(body, "Validator (beacon node)") || !strings.Contains(body, `<td class="vs-bad">active_exiting <small>#41</small>`) ||
		!strings.Contains(body, "not seen") || !strings.Contains(body, `<option value="withdrawal_done">`) {
		t.Errorf("HTML page lacks the validator column or filter:\n%s", body)
	}
	if rec := do(t, h, "GET", "/assignments?status=nonsense", ""); rec.Code != 400 {
		t.Errorf("a bad status filter answered %d", rec.Code)
	}
	rec = do(t, h, "GET", "/api/v1/keys", "")
	var keys struct {
		Keys []struct {
			Pubkey    string `json:"pubkey"`
			Validator *struct {
				Index     uint64  `json:"index"`
				Status    string  `json:"status"`
				ExitEpoch *uint64 `json:"exit_epoch"`
			} `json:"validator"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &keys); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	byPK := map[string]int{}
	for i, k := range keys.Keys {
		byPK[k.Pubkey] = i
	}
	k1 := keys.Keys[byPK[pk(0xa1, 1).String()]]
	k0 := keys.Keys[byPK[pk(0xa1, 0).String()]]
	if len(keys.Keys) != 4 || k1.Validator == nil || k1.Validator.Status != "active_exiting" || *k1.Validator.ExitEpoch != 30 ||
		k0.Validator == nil || k0.Validator.ExitEpoch != nil {
		t.Errorf("GET /api/v1/keys: %s", rec.Body)
	}

	// Without a reader there is no column, and a status filter is refused.
	h = NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t)})
	if body := do(t, h, "GET", "/assignments", "").Body.String(); strings.Contains(body, "Validator (beacon node)") {
		t.Error("a column without validator statuses")
	}
	if rec := do(t, h, "GET", "/assignments?status=active_ongoing", ""); rec.Code != 400 {
		t.Errorf("status filter without statuses answered %d", rec.Code)
	}
}

type fakeExiter struct{ got lifecycle.ExitRequest }

func (f *fakeExiter) ExitKeys(_ context.Context, req lifecycle.ExitRequest) ([]lifecycle.Signed, error) {
	f.got = req
	return []lifecycle.Signed{{Pubkey: pk(1, 1), Exit: &phase0.SignedVoluntaryExit{Message: &phase0.VoluntaryExit{Epoch: 7, ValidatorIndex: 12}}, Submitted: req.Submit}}, nil
}

func TestExitRoute(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	f := &fakeExiter{}
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t), Exits: f})
	rec := do(t, h, "POST", "/api/v1/keys/exit", `{"pubkeys":["`+pk(1, 1).String()+`"],"force":true,"submit":false,"reason":"shrink"}`)
	if rec.Code != 200 || !f.got.Force || f.got.Submit || len(f.got.Pubkeys) != 1 || f.got.Reason != "shrink" {
		t.Fatalf("%d %s; request %+v", rec.Code, rec.Body, f.got)
	}
	if !strings.Contains(rec.Body.String(), `"signed_exit":{"message":{"epoch":"7","validator_index":"12"}`) {
		t.Errorf("answer %s", rec.Body)
	}
	do(t, h, "POST", "/api/v1/keys/exit", `{"count":3}`)
	if f.got.Count != 3 || !f.got.Submit {
		t.Errorf("count request %+v (submit is the default)", f.got)
	}
	h = NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t)})
	if rec := do(t, h, "POST", "/api/v1/keys/exit", `{"count":1}`); rec.Code != 409 || !strings.Contains(rec.Body.String(), "no_beacon_node") {
		t.Errorf("without a beacon node: %d %s", rec.Code, rec.Body)
	}
}
