package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/apierr"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/metrics"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// MaxBodyBytes bounds the size of a request body.
const MaxBodyBytes = 1 << 20

// readyTimeout bounds one readiness check.
const readyTimeout = 2 * time.Second

// Allocator is the part of *allocator.Allocator the API calls. The handler
// wipes the secrets of a Request's Result once it has written them.
type Allocator interface {
	Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error)
	ReleaseWithProtection(ctx context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error)
	Retire(ctx context.Context, pubkey store.Pubkey, reason string) error
}

// KeyLister reads public key records (a store.Store).
type KeyLister interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	Counts(ctx context.Context) (map[store.State]int, error)
}

// Config configures the handler. Allocator and Keys are required.
type Config struct {
	Allocator Allocator
	Keys      KeyLister
	// Metrics records API calls and is served at /metrics. Nil disables both
	// (/metrics answers 404).
	Metrics *metrics.Metrics
	// Logger receives errors and notable events; nil discards them.
	Logger *slog.Logger
	// Ready reports whether the server can serve requests (store ping etc.);
	// /readyz calls it with a 2 s timeout. Nil means always ready. /readyz
	// is unauthenticated: it shows the Reason of a *NotReady error and
	// never an error's text, which goes to the log.
	Ready func(ctx context.Context) error
	// ReadyNotes, when set, returns fixed lines /readyz adds under its
	// verdict: conditions that do not stop the server from answering but
	// that an operator must know (no beacon node: reuse has no chain
	// evidence; the beacon node does not answer: reuse waits).
	ReadyNotes func() []string
	// WriteStall bounds how long one write of a response may wait for the
	// client to take data (0: DefaultWriteStall); a client that stalls
	// longer is cut off.
	WriteStall time.Duration
	// ReleaseBlocked returns pod -> reason for the pods whose keys the pod
	// watcher holds although their objects are gone (shown on
	// /assignments); nil shows none. Audit, when set, serves GET
	// /api/v1/audit (audit.go).
	ReleaseBlocked func() map[string]string
	Audit          AuditLister
	// Chain says which deposits are already on chain, for deposit-data
	// exports; nil: the server cannot tell (exports need ?all=true).
	Chain DepositStatuses
	// Slashing checks the slashing-protection interchanges of releases
	// and builds those of requests; nil: releases with one are refused,
	// requests get none.
	Slashing *slashing.Custody
	// Validators, when set, adds each key's last validator reading from
	// the beacon node to /assignments (a column, ?status=) and GET
	// /api/v1/keys. Exits, when set, serves POST /api/v1/keys/exit
	// (validators.go); nil answers 409 no_beacon_node.
	Validators ValidatorReader
	Exits      Exiter
	// Network is shown in the header of /assignments (network, fork,
	// chain ID, deposit contract); the zero value shows none.
	Network Network
}

// DepositStatuses says which keys' deposits are on chain (*server.Server).
type DepositStatuses interface {
	DepositStatuses(ctx context.Context, keys []store.Key) ([]deposit.OnChain, error)
}

// DefaultWriteStall is how long one write of a response may wait for the
// client to take data: at least 64 KiB per 30 s, else the answer is cut
// off. A long listing on a slow link is fine; a client that stops reading
// does not keep a handler forever.
const DefaultWriteStall = 30 * time.Second

// NotReady is the error a Ready function returns for a failing part:
// /readyz answers with Reason, a short fixed description ("store
// unreachable"); Err, which may quote configuration, goes to the log only.
type NotReady struct {
	Reason string
	Err    error
}

func (e *NotReady) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *NotReady) Unwrap() error { return e.Err }

// server holds the handler's dependencies.
type server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// table is the route table (routes.go), byPattern its rows by pattern.
	table     []Route
	byPattern map[string]Route
}

// NewHandler returns the HTTP handler serving the routes of its table
// (routes.go, listed in the package documentation). It panics if
// cfg.Allocator or cfg.Keys is nil.
func NewHandler(cfg Config) *Handler {
	if cfg.Allocator == nil || cfg.Keys == nil {
		panic("httpapi: Config.Allocator and Config.Keys are required")
	}
	s := &server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.cfg.WriteStall <= 0 {
		s.cfg.WriteStall = DefaultWriteStall
	}
	s.table = s.routes()
	s.byPattern = make(map[string]Route, len(s.table))
	for _, rt := range s.table {
		s.mux.Handle(rt.Pattern, rt.Handler)
		s.byPattern[rt.Pattern] = rt
	}
	return &Handler{s: s}
}

// ServeHTTP dispatches to the routes. Unknown API paths and wrong methods on
// API paths get JSON errors; the mux's plain-text answers stay elsewhere.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Writers without deadlines (httptest's) are left as they are.
	if rc := http.NewResponseController(w); rc.SetWriteDeadline(time.Time{}) == nil {
		w = &stallWriter{ResponseWriter: w, rc: rc, stall: s.cfg.WriteStall}
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(r.URL.Path, "/api/") {
		if _, pattern := s.mux.Handler(r); pattern == "" {
			w = &jsonFallbackWriter{ResponseWriter: w}
		}
	}
	s.mux.ServeHTTP(w, r)
}

// apiFunc handles one API call. An error it returns before writing anything
// becomes a JSON error response; after a partial write the response is
// aborted. Either way it is what the call's metrics record.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// api wraps fn with error mapping, logging and metrics under the route name.
func (s *server) api(route string, fn apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &commitWriter{ResponseWriter: w}
		err := fn(cw, r)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.Observe("http", route, start, err)
		}
		if err == nil {
			return
		}
		if cw.committed {
			// Part of a streamed body is out; the status cannot change.
			// Abort so the client sees a broken response, not a short one.
			s.log.WarnContext(r.Context(), "http: response failed after it started",
				slog.String("route", route), slog.Any("error", err))
			panic(http.ErrAbortHandler)
		}
		s.writeError(w, r, route, err)
	}
}

// errorBody is the JSON shape of every API error.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes of API responses besides apierr's.
const (
	codeTooLarge = "too_large"
	codeNotFound = "not_found"
	codeMethod   = "method_not_allowed"
)

// classify maps an error to an HTTP status and error code (apierr's table;
// a body over the limit is the transport's own).
func classify(err error) (status int, code string) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge, codeTooLarge
	}
	c := apierr.Classify(err)
	return c.HTTP, c.HTTPCode
}

// writeError answers with the JSON error for err. Internal errors are logged
// in full and answered with a generic message; other messages are shown
// without secrets (package redact).
func (s *server) writeError(w http.ResponseWriter, r *http.Request, route string, err error) {
	status, code := classify(err)
	msg := redact.String(err.Error())
	if status == http.StatusInternalServerError {
		level := slog.LevelError
		if errors.Is(err, context.Canceled) {
			level = slog.LevelInfo // the client went away
		}
		s.log.Log(r.Context(), level, "http: request failed", slog.String("route", route),
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
		msg = "internal error; see the server log"
	} else {
		s.log.DebugContext(r.Context(), "http: request rejected", slog.String("route", route),
			slog.Int("status", status), slog.Any("error", err))
	}
	writeJSONError(w, status, code, msg)
}

// writeJSONError writes {"error":{"code":..,"message":..}} with status.
func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	h := w.Header()
	h.Del("Content-Disposition")
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: msg}})
	_, _ = w.Write(append(b, '\n'))
}

// writeJSON writes v as a JSON response with status 200.
func writeJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(b, '\n'))
	return err
}

// invalidf returns an error wrapping allocator.ErrInvalidRequest.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{allocator.ErrInvalidRequest}, args...)...)
}

// decodeJSON reads exactly one JSON object from the body, at most
// MaxBodyBytes, rejecting unknown fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONLimit(w, r, v, MaxBodyBytes)
}

// decodeJSONLimit is decodeJSON for bodies of up to limit bytes.
func decodeJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return invalidf("request body larger than %d bytes: %w", limit, err)
		case errors.Is(err, io.EOF):
			return invalidf("request body is empty, want a JSON object")
		default:
			return invalidf("request body: %w", err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return invalidf("request body larger than %d bytes: %w", limit, err)
		}
		return invalidf("request body: unexpected data after the JSON object")
	}
	return nil
}

// commitWriter records whether anything reached the client.
type commitWriter struct {
	http.ResponseWriter
	committed bool
}

func (w *commitWriter) WriteHeader(status int) {
	w.committed = true
	w.ResponseWriter.WriteHeader(status)
}

func (w *commitWriter) Write(b []byte) (int, error) {
	w.committed = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *commitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// stallWriter gives every write of a response DefaultWriteStall (or
// Config.WriteStall) to reach the client: the server has no overall write
// timeout, which would cut off a long listing on a slow link or a request
// that waits minutes for its deposits, but a client that stops taking data
// is cut off.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w *stallWriter) Write(b []byte) (int, error) {
	// Not every ResponseWriter has deadlines (httptest's has none).
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	return w.ResponseWriter.Write(b)
}

func (w *stallWriter) Flush() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// jsonFallbackWriter turns the mux's plain-text 404 and 405 answers into JSON
// errors, keeping the Allow header.
type jsonFallbackWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *jsonFallbackWriter) WriteHeader(status int) {
	switch status {
	case http.StatusNotFound:
		w.swallow = true
		writeJSONError(w.ResponseWriter, status, codeNotFound, "no such API route")
	case http.StatusMethodNotAllowed:
		w.swallow = true
		writeJSONError(w.ResponseWriter, status, codeMethod,
			"method not allowed; allowed: "+w.Header().Get("Allow"))
	default:
		w.ResponseWriter.WriteHeader(status)
	}
}

func (w *jsonFallbackWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *jsonFallbackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// healthz answers 200 while the process serves.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok\n")
}

// readyz answers 200 when cfg.Ready succeeds within readyTimeout, else 503
// with the fixed reason of a *NotReady error (the error itself is logged:
// /readyz is unauthenticated and errors may quote configuration).
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			s.log.WarnContext(r.Context(), "http: not ready", slog.Any("error", err))
			reason := "see the server log"
			var nr *NotReady
			if errors.As(err, &nr) && nr.Reason != "" {
				reason = nr.Reason
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+reason+"\n"+s.readyNotes())
			return
		}
	}
	_, _ = io.WriteString(w, "ok\n"+s.readyNotes())
}

func (s *server) readyNotes() string {
	if s.cfg.ReadyNotes == nil {
		return ""
	}
	var b strings.Builder
	for _, n := range s.cfg.ReadyNotes() {
		b.WriteString("note: " + n + "\n")
	}
	return b.String()
}

// promLogger adapts slog to promhttp's error logger.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("http: serve metrics", slog.String("error", strings.TrimSpace(fmt.Sprintln(v...))))
}
