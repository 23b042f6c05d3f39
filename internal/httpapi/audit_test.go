package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// TestAuditAndReleaseBlocked: GET /api/v1/audit pages through a real bbolt
// store's trail, and release-blocked pods are marked on /assignments.
func TestAuditAndReleaseBlocked(t *testing.T) {
	st := openBolt(t, t.TempDir())
	defer st.Close()
	ctx := context.Background()
	fillAssigned(t, st, 1, []string{"validator-0", "validator-1"}, 1, fixtureNow)
	for i, a := range []struct{ action, pod string }{{"release-blocked", "validator-0"}, {"release", "validator-1"}, {"release-blocked", "validator-1"}} {
		if err := st.AppendAudit(store.WithActor(ctx, "pod-watcher"), store.AuditEvent{Time: fixtureNow.Add(time.Duration(i) * time.Second), Action: a.action, Pod: a.pod, Reason: "r<" + a.pod}); err != nil {
			t.Fatal(err)
		}
	}
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: st, Audit: st, Logger: quietLogger(t),
		ReleaseBlocked: func() map[string]string {
			return map[string]string{"validator-0": "node-not-ready: pod validator-0 <gone>"}
		}})

	type page struct {
		Events []auditEvent `json:"events"`
		Next   uint64       `json:"next"`
	}
	get := func(target string) (int, page) {
		rec := do(t, h, http.MethodGet, target, "")
		var p page
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatalf("%s: %v", target, err)
			}
		}
		return rec.Code, p
	}
	code, p := get("/api/v1/audit?limit=2")
	if code != 200 || len(p.Events) != 2 || p.Events[0].Seq >= p.Events[1].Seq || p.Next != p.Events[1].Seq || p.Events[0].Actor != "pod-watcher" {
		t.Fatalf("first page: %d %+v", code, p)
	}
	_, p2 := get("/api/v1/audit?limit=2&after=" + itoa(p.Next))
	if len(p2.Events) != 1 || p2.Next != 0 || p2.Events[0].Pod != "validator-1" || p2.Events[0].Action != "release-blocked" {
		t.Fatalf("second page: %+v", p2)
	}
	if _, f := get("/api/v1/audit?action=release-blocked&pod=validator-0"); len(f.Events) != 1 || f.Events[0].Reason != "r<validator-0" {
		t.Fatalf("filtered: %+v", f)
	}
	for _, bad := range []string{"?limit=0", "?limit=1001", "?after=x"} {
		if code, _ := get("/api/v1/audit" + bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	html := do(t, h, http.MethodGet, "/assignments", "").Body.String()
	// Marked in the pods summary and on the key's row.
	if strings.Count(html, "(release-blocked: node-not-ready)") != 2 || strings.Contains(html, "<gone>") || !strings.Contains(html, "&lt;gone&gt;") {
		t.Fatalf("page marker missing or unescaped:\n%s", html)
	}
	js := do(t, h, http.MethodGet, "/assignments?format=json", "").Body.String()
	if !strings.Contains(js, `"release_blocked":"node-not-ready: pod validator-0 \u003cgone\u003e"`) && !strings.Contains(js, `"release_blocked":"node-not-ready: pod validator-0 <gone>"`) {
		t.Fatalf("JSON lacks release_blocked: %s", js)
	}
	// Without an AuditLister the route does not exist.
	h2 := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: st, Logger: quietLogger(t)})
	if rec := do(t, h2, http.MethodGet, "/api/v1/audit", ""); rec.Code != http.StatusNotFound {
		t.Fatalf("audit without lister: %d", rec.Code)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
