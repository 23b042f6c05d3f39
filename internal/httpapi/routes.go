package httpapi

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pkmanager/pkmanager/internal/access"
)

// Route is one HTTP route: its ServeMux pattern, what the auth gate asks of
// the caller (Need, and for access.NeedAdmin the Action), and its handler.
type Route struct {
	Pattern string
	Need    access.Need
	Action  access.Action
	Handler http.Handler
}

// routes is the route table: every route the handler serves, with its
// authorisation. A new route is one row here; the auth gate reads the rows
// (Handler.Rule), so it needs no edit.
func (s *server) routes() []Route {
	admin := access.NeedAdmin
	rs := []Route{
		{"POST /api/v1/keys/request", access.NeedPod, access.Action{}, s.api("keys.request", s.requestKeys)},
		{"POST /api/v1/keys/release", admin, access.ActionRelease, s.api("keys.release", s.releaseKeys)},
		{"GET /api/v1/keys", admin, access.ActionList, s.api("keys.list", s.listKeys)},
		{"POST /api/v1/keys/{pubkey}/retire", admin, access.ActionRetire, s.api("keys.retire", s.retireKey)},
		{"POST /api/v1/keys/exit", admin, access.ActionExit, s.api("keys.exit", s.exitKeys)},
		{"GET /api/v1/deposit-data", admin, access.ActionDepositData, s.api("deposit_data", s.depositData)},
		{"GET /assignments", admin, access.ActionList, http.HandlerFunc(s.assignments)},
		// The root is the page people open: relative, so it works behind
		// a proxy that serves the server under a path.
		{"GET /{$}", admin, access.ActionOtherRead, http.HandlerFunc(redirectAssignments)},
		{"GET /healthz", access.NeedNothing, access.Action{}, http.HandlerFunc(healthz)},
		{"GET /readyz", access.NeedNothing, access.Action{}, http.HandlerFunc(s.readyz)},
	}
	if s.cfg.Audit != nil {
		rs = append(rs, Route{"GET /api/v1/audit", admin, access.ActionAudit, s.api("audit", s.listAudit)})
	}
	if s.cfg.Metrics != nil {
		// A collector that fails (the store is unreachable) is logged and
		// left out; the unauthenticated page never carries its error text.
		rs = append(rs, Route{"GET /metrics", access.NeedNothing, access.Action{}, promhttp.HandlerFor(s.cfg.Metrics.Registry, promhttp.HandlerOpts{
			ErrorLog: promLogger{s.log}, ErrorHandling: promhttp.ContinueOnError,
		})})
	}
	return rs
}

func redirectAssignments(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Location", "assignments")
	w.WriteHeader(http.StatusFound)
}

// Handler serves the routes of its table (Routes) and tells the auth gate
// what a request needs (Rule).
type Handler struct {
	s *server
}

// ServeHTTP serves the request (see server.ServeHTTP).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.s.ServeHTTP(w, r) }

// Routes returns a copy of the route table.
func (h *Handler) Routes() []Route { return append([]Route(nil), h.s.table...) }

// Rule returns what r needs: the row of the route the mux would serve it
// with (for a path that is not canonical, the route it redirects to).
// ok is false when no route matches (404 or 405): the gate then applies
// its rule for unknown calls.
func (h *Handler) Rule(r *http.Request) (_ access.Rule, ok bool) {
	_, pattern := h.s.mux.Handler(r)
	rt, ok := h.s.byPattern[pattern]
	if !ok {
		return access.Rule{}, false
	}
	return access.Rule{Need: rt.Need, Action: rt.Action}, true
}
