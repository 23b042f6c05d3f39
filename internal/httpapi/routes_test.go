package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/access"
	"github.com/pkmanager/pkmanager/internal/metrics"
)

// TestRouteTable: every row of the route table is complete (a need, and an
// action exactly for admin routes), the rows the auth gate may open to
// everyone are the probes and metrics only, and Rule finds each row for
// a request its pattern matches (without the table's optional parts their
// rows are gone).
func TestRouteTable(t *testing.T) {
	st := openBolt(t, t.TempDir())
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: st, Audit: st, Metrics: metrics.New(st, nil), Logger: quietLogger(t)})
	rows := h.Routes()
	if len(rows) < 12 {
		t.Errorf("%d routes: %v", len(rows), rows)
	}
	open := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}
	for _, rt := range rows {
		ru := access.Rule{Need: rt.Need, Action: rt.Action}
		if !ru.Check() {
			t.Errorf("%s: incomplete rule %+v", rt.Pattern, ru)
		}
		if (rt.Need == access.NeedNothing) != open[rt.Pattern] {
			t.Errorf("%s: need %v", rt.Pattern, rt.Need)
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{pubkey}", "0xab", "{$}", "").Replace(path)
		if got, ok := h.Rule(httptest.NewRequest(method, path, nil)); !ok || got != ru {
			t.Errorf("Rule(%s %s) = %+v, %v; want the row's %+v", method, path, got, ok, ru)
		}
	}
	bare := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: st})
	for _, p := range []string{"/metrics", "/api/v1/audit"} {
		if _, ok := bare.Rule(httptest.NewRequest("GET", p, nil)); ok {
			t.Errorf("%s has a row without its part configured", p)
		}
	}
	for _, req := range [][2]string{{"GET", "/api/v2/x"}, {"DELETE", "/api/v1/keys"}, {"GET", "/api/v1/keys/request"}} {
		if ru, ok := h.Rule(httptest.NewRequest(req[0], req[1], nil)); ok {
			t.Errorf("%v matched a row: %+v", req, ru)
		}
	}
}
