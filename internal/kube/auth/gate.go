package auth

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/pkmanager/pkmanager/internal/access"
	"github.com/pkmanager/pkmanager/internal/redact"
)

// Gate authenticates and authorizes calls before they reach the API
// handlers, and puts the Caller in their context for the Guard.
type Gate struct {
	auth   *Authenticator
	log    *slog.Logger
	denied *prometheus.CounterVec
}

// NewGate returns a Gate using a; reg (optional) receives
// pkmanager_auth_denied_total{api,reason}.
func NewGate(a *Authenticator, reg prometheus.Registerer, logger *slog.Logger) (*Gate, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gate{auth: a, log: logger.With(slog.String("component", "auth")),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkmanager_auth_denied_total",
			Help: "Calls refused by authentication or authorization, by API and reason (unauthenticated, forbidden, unavailable).",
		}, []string{"api", "reason"})}
	// Every series at 0 from the start, so a first refusal is an increase
	// and the series exist before it.
	for _, api := range []string{"grpc", "http"} {
		for _, r := range []string{"unauthenticated", "forbidden", "unavailable"} {
			g.denied.WithLabelValues(api, r)
		}
	}
	if reg != nil {
		if err := reg.Register(g.denied); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Methods is the gRPC rule table: full method name (the generated
// *_FullMethodName constants) -> what the method needs (grpcapi.Methods).
type Methods map[string]access.Rule

// Router tells what an HTTP request needs (*httpapi.Handler, from its
// route table); ok is false when no route matches.
type Router interface {
	http.Handler
	Rule(r *http.Request) (rule access.Rule, ok bool)
}

// grpcRule is the row of a full gRPC method name. A method without a
// complete row is an admin operation (ActionOther): nothing new is open by
// default.
func grpcRule(m Methods, full string) access.Rule {
	if ru, ok := m[full]; ok && ru.Check() {
		return ru
	}
	return access.Unknown(false)
}

// httpRule is the row of the route serving r. A request no complete row
// matches is an admin operation: ActionOtherRead for GET and HEAD, else
// ActionOther.
func httpRule(rt Router, r *http.Request) access.Rule {
	if ru, ok := rt.Rule(r); ok && ru.Check() {
		return ru
	}
	return access.Unknown(r.Method == http.MethodGet || r.Method == http.MethodHead)
}

// authorize returns ctx with the caller, or an error wrapping
// ErrUnauthenticated, ErrForbidden or ErrUnavailable.
func (g *Gate) authorize(ctx context.Context, token string, ru access.Rule) (context.Context, error) {
	switch ru.Need {
	case access.NeedNothing:
		return ctx, nil
	case access.NeedLegacy:
		if token == "" {
			return WithCaller(ctx, &Caller{Kind: KindLegacyAnonymous}), nil
		}
	}
	id, err := g.auth.Authenticate(ctx, token)
	if err != nil {
		return ctx, err
	}
	if ru.Need == access.NeedAdmin {
		if err := g.auth.CheckAdmin(ctx, id, ru.Action); err != nil {
			return ctx, err
		}
		return WithCaller(ctx, &Caller{Kind: KindAdmin, Identity: id}), nil
	}
	if err := g.auth.CheckPod(ctx, id); err != nil {
		return ctx, err
	}
	return WithCaller(ctx, &Caller{Kind: KindPod, Identity: id}), nil
}

func reason(err error) string {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return "unauthenticated"
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	default:
		return "unavailable"
	}
}

func (g *Gate) refused(ctx context.Context, api, method, from string, err error) {
	r := reason(err)
	g.denied.WithLabelValues(api, r).Inc()
	level := slog.LevelInfo
	if r == "unavailable" {
		level = slog.LevelWarn
	}
	g.log.Log(ctx, level, "call refused", slog.String("api", api), slog.String("method", method),
		slog.String("peer", from), slog.String("reason", r), slog.Any("error", err))
}

// bearer returns the token of an "Authorization: Bearer" value.
func bearer(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

func grpcToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t := bearer(v); t != "" {
			return t
		}
	}
	return ""
}

func grpcStatus(err error) error {
	code := codes.Unavailable
	switch {
	case errors.Is(err, ErrUnauthenticated):
		code = codes.Unauthenticated
	case errors.Is(err, ErrForbidden):
		code = codes.PermissionDenied
	}
	return status.Error(code, redact.String(err.Error()))
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// UnaryInterceptor checks unary calls by the rows of m.
func (g *Gate) UnaryInterceptor(m Methods) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := g.authorize(ctx, grpcToken(ctx), grpcRule(m, info.FullMethod))
		if err != nil {
			g.refused(ctx, "grpc", info.FullMethod, peerAddr(ctx), err)
			return nil, grpcStatus(err)
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor checks streaming calls by the rows of m.
func (g *Gate) StreamInterceptor(m Methods) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := g.authorize(ss.Context(), grpcToken(ss.Context()), grpcRule(m, info.FullMethod))
		if err != nil {
			g.refused(ctx, "grpc", info.FullMethod, peerAddr(ctx), err)
			return grpcStatus(err)
		}
		return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// HTTP wraps next with the same checks, by the rows of next's route
// table; refusals are JSON errors like the API's: 401 unauthenticated, 403
// permission_denied, 503 unavailable.
func (g *Gate) HTTP(next Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, err := g.authorize(r.Context(), bearer(r.Header.Get("Authorization")), httpRule(next, r))
		if err != nil {
			g.refused(r.Context(), "http", r.Method+" "+r.URL.Path, r.RemoteAddr, err)
			st, code := http.StatusServiceUnavailable, "unavailable"
			switch {
			case errors.Is(err, ErrUnauthenticated):
				st, code = http.StatusUnauthorized, "unauthenticated"
				w.Header().Set("WWW-Authenticate", `Bearer realm="pkmanager"`)
			case errors.Is(err, ErrForbidden):
				st, code = http.StatusForbidden, "permission_denied"
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(st)
			b, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": redact.String(err.Error())}})
			_, _ = w.Write(append(b, '\n'))
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
