package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// keysOnly hides the store's PodSizes: the handler then reads the whole
// listing into memory and sorts it (loadAssignments), the reference the
// streamed JSON must equal.
type keysOnly struct{ KeyLister }

// TestAssignmentsJSONStreamed: the JSON of /assignments written pod by pod
// as it is read (a bbolt store has PodSizes) is byte for byte the JSON of
// the in-memory listing, over more than one batch of keys (batches of
// several pods, a pod of more than a page alone): pods in natural order (validator-2 before validator-10, not byte order), pending keys
// intended for a pod, UIDs, release-blocked notes, validator statuses, the
// pod and state filters, and no pod for spares, the pool or cooling-down
// keys.
func TestAssignmentsJSONStreamed(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	var pods []string
	for i := range 25 {
		pods = append(pods, fmt.Sprintf("validator-%d", i))
	}
	const perPod = 60 // 1,500 keys: more than one store.DefaultPage
	fillAssigned(t, s, 0xc0, pods, perPod, fixtureNow)
	// One pod of more than a page, read alone between smaller ones.
	fillAssigned(t, s, 0xc3, []string{"validator-12-big"}, store.DefaultPage+100, fixtureNow)
	// Two pending keys intended for validator-3 and one spare; a pool key;
	// validator-24 released (cooling-down, listed under no pod in JSON).
	if err := s.AddPending(ctx, store.AddParams{Pod: "validator-3", PodUID: "uid-validator-3", Want: perPod + 2,
		Keys: newKeys(0xc1, 0, 3), Now: fixtureNow}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddKeys(ctx, newKeys(0xc2, 0, 1), store.StateAvailable, fixtureNow); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(ctx, store.ReleaseParams{Pod: "validator-24", Until: fixtureNow.Add(1e9), Now: fixtureNow}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordValidators(ctx, []store.ValidatorReading{{Pubkey: pk(0xc1, 0),
		Status: store.ValidatorStatus{Index: 70, Status: "active_ongoing", Balance: 32e9, ActivationEpoch: 1, ExitEpoch: ^uint64(0), Epoch: 9, At: fixtureNow}}}, fixtureNow); err != nil {
		t.Fatal(err)
	}
	blocked := func() map[string]string { return map[string]string{"validator-10": "pod-deleted: <gone>"} }
	cfg := Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t), ReleaseBlocked: blocked, Validators: s.(ValidatorReader)}
	streamed := NewHandler(cfg)
	cfg.Keys = keysOnly{s}
	inMemory := NewHandler(cfg)

	for _, query := range []string{"", "&pod=validator-1", "&pod=VALIDATOR-2", "&pod=nobody", "&state=assigned", "&state=pending-deposit"} {
		url := "/assignments?format=json" + query
		got, want := do(t, streamed, "GET", url, ""), do(t, inMemory, "GET", url, "")
		if got.Code != http.StatusOK || want.Code != http.StatusOK {
			t.Fatalf("%s: status %d streamed, %d in memory: %s", url, got.Code, want.Code, got.Body)
		}
		if got.Body.String() != want.Body.String() {
			t.Errorf("%s: streamed JSON differs from the in-memory listing:\n got %.300s\nwant %.300s", url, got.Body, want.Body)
		}
		if !json.Valid(got.Body.Bytes()) {
			t.Errorf("%s: not JSON: %.300s", url, got.Body)
		}
		if ct := got.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", url, ct)
		}
	}
	body := do(t, streamed, "GET", "/assignments?format=json", "").Body.String()
	i2, i10 := strings.Index(body, `"validator-2"`), strings.Index(body, `"validator-10"`)
	if i2 < 0 || i10 < 0 || i2 > i10 || strings.Contains(body, `"validator-24"`) || !strings.Contains(body, `"validator_status":"active_ongoing"`) {
		t.Errorf("JSON: validator-2 at %d, validator-10 at %d (want before); validator-24 (released) listed: %v; a status: %v", i2, i10, strings.Contains(body, `"validator-24"`), strings.Contains(body, `"validator_status":"active_ongoing"`))
	}
}

// countsFail is a store whose Counts fails.
type countsFail struct{ store.Store }

func (countsFail) Counts(context.Context) (map[store.State]int, error) {
	return nil, errors.New("counts broke")
}

// TestAssignmentsJSONStreamedCountsFail: the streamed JSON's counts are
// read beside the keys and written last. A failing Counts gives an error
// status while nothing has reached the client (a listing that fits the
// write buffer), and cuts a larger body short after its keys (a truncated
// document, no counts).
func TestAssignmentsJSONStreamedCountsFail(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	fillAssigned(t, s, 0xc4, []string{"validator-0", "validator-1"}, 3, fixtureNow)
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: countsFail{s}, Logger: quietLogger(t)})
	got := do(t, h, "GET", "/assignments?format=json", "")
	if got.Code != http.StatusInternalServerError || strings.Contains(got.Body.String(), "validator-0") {
		t.Errorf("a failed Counts under a small listing: status %d (want 500), body %.300s", got.Code, got.Body)
	}

	// More than the 64 KiB buffer: the keys go out before the counts fail.
	fillAssigned(t, s, 0xc5, []string{"validator-2"}, 1000, fixtureNow)
	got = do(t, h, "GET", "/assignments?format=json", "")
	body := got.Body.String()
	if got.Code != http.StatusOK || json.Valid(got.Body.Bytes()) || strings.Contains(body, `"counts"`) || !strings.Contains(body, `"validator-1"`) {
		t.Errorf("a failed Counts under a large listing: status %d, whole JSON %v, counts written %v, keys listed %v (want 200, cut short after the keys)",
			got.Code, json.Valid(got.Body.Bytes()), strings.Contains(body, `"counts"`), strings.Contains(body, `"validator-1"`))
	}
}

// listFail is a store whose ListKeys fails.
type listFail struct{ store.Store }

func (listFail) ListKeys(context.Context, store.ListOptions, func(store.Key) error) error {
	return errors.New("list broke")
}

// TestAssignmentsJSONStreamedReadFails: a read that fails before anything
// reached the client gives an error status, not a 200 with an empty body.
func TestAssignmentsJSONStreamedReadFails(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	fillAssigned(t, s, 0xc6, []string{"validator-0"}, 3, fixtureNow)
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: listFail{s}, Logger: quietLogger(t)})
	if got := do(t, h, "GET", "/assignments?format=json", ""); got.Code != http.StatusInternalServerError {
		t.Errorf("a failed read: status %d (want 500), body %.300s", got.Code, got.Body)
	}
}
