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
	// The fixture's claims recorded their assignments: the pages below start after them.
	fixture, err := st.ListAudit(ctx, 0, 100)
	if err != nil || len(fixture) != 2 {
		t.Fatalf("fixture's audit trail: %+v, %v; want 2 assignments", fixture, err)
	}
	base := "&after=" + itoa(fixture[1].Seq)
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
	code, p := get("/api/v1/audit?limit=2" + base)
	if code != 200 || len(p.Events) != 2 || p.Events[0].Seq >= p.Events[1].Seq || p.Next != p.Events[1].Seq || p.Events[0].Actor != "pod-watcher" {
		t.Fatalf("first page: %d %+v", code, p)
	}
	_, p2 := get("/api/v1/audit?limit=2&after=" + itoa(p.Next))
	if len(p2.Events) != 1 || p2.Next != 0 || p2.Events[0].Pod != "validator-1" || p2.Events[0].Action != "release-blocked" {
		t.Fatalf("second page: %+v", p2)
	}
	if _, f := get("/api/v1/audit?action=release-blocked&pod=validator-0" + base); len(f.Events) != 1 || f.Events[0].Reason != "r<validator-0" {
		t.Fatalf("filtered: %+v", f)
	}
	// The filter applies before the page limit: a filtered page is full
	// while matching events remain, and never empty with next set.
	_, f1 := get("/api/v1/audit?pod=validator-1&limit=1" + base)
	if len(f1.Events) != 1 || f1.Events[0].Action != "release" || f1.Next != f1.Events[0].Seq {
		t.Fatalf("filtered first page: %+v", f1)
	}
	_, f2 := get("/api/v1/audit?pod=validator-1&limit=1&after=" + itoa(f1.Next))
	if len(f2.Events) != 1 || f2.Events[0].Action != "release-blocked" || f2.Events[0].Pod != "validator-1" || f2.Next != 0 {
		t.Fatalf("filtered last page: %+v", f2)
	}
	if _, f4 := get("/api/v1/audit?pod=validator-0&after=" + itoa(p.Events[0].Seq)); len(f4.Events) != 0 || f4.Next != 0 {
		t.Fatalf("filtered empty tail: %+v", f4)
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

// auditTrail is an endless trail of events for one pod (a fake: it proves the
// scan bound, which a real store would need maxAuditScan events for).
type auditTrail struct{ read int }

func (a *auditTrail) ListAudit(_ context.Context, after uint64, limit int) ([]store.AuditEvent, error) {
	var out []store.AuditEvent
	for i := range limit {
		out = append(out, store.AuditEvent{Seq: after + uint64(i) + 1, Time: fixtureNow, Action: "release", Pod: "other"})
	}
	a.read += len(out)
	return out, nil
}

// TestAuditFilterScanIsBounded: a filter matching nothing in a long trail
// reads at most maxAuditScan events and answers with next set to the last
// event read, so the client goes on from there.
func TestAuditFilterScanIsBounded(t *testing.T) {
	trail := &auditTrail{}
	st := openBolt(t, t.TempDir())
	defer st.Close()
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: st, Audit: trail, Logger: quietLogger(t)})
	rec := do(t, h, http.MethodGet, "/api/v1/audit?pod=validator-0&limit=5", "")
	var p struct {
		Events []auditEvent `json:"events"`
		Next   uint64       `json:"next"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if trail.read != maxAuditScan || len(p.Events) != 0 || p.Next != maxAuditScan {
		t.Fatalf("read %d, answer %+v; want %d read and next %d", trail.read, p, maxAuditScan, maxAuditScan)
	}
}
