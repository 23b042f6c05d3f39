package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// A call whose deadline passed, or that was canceled, is answered as gRPC
// answers it (504 deadline_exceeded, 499 canceled), not as an internal
// error (500): the cause is the caller's deadline, not the server.
func TestContextErrorsAreNotInternal(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("claim for pod p: %w", context.DeadlineExceeded), 504, "deadline_exceeded"},
		{fmt.Errorf("wait for pod p: %w", context.Canceled), 499, "canceled"},
	} {
		h := NewHandler(Config{Allocator: &fakeAllocator{err: tc.err}, Logger: quietLogger(t),
			Keys: &fakeLister{keys: []store.Key{{Pubkey: pk(1, 1), State: store.StateAvailable}}, err: tc.err}})
		for _, r := range []struct{ method, target, body string }{
			{"POST", "/api/v1/keys/request", `{"pod_name":"p","count":1}`},
			{"POST", "/api/v1/keys/release", `{"pod_name":"p"}`},
			{"GET", "/api/v1/keys", ""},
		} {
			rec := do(t, h, r.method, r.target, r.body)
			var body errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("%s %s: body %q: %v", r.method, r.target, rec.Body, err)
			}
			if rec.Code != tc.status || body.Error.Code != tc.code {
				t.Errorf("%s %s failing with %v: %d %s, want %d %s", r.method, r.target, tc.err, rec.Code, body.Error.Code, tc.status, tc.code)
			}
		}
	}
}
