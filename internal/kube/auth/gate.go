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

	"github.com/pkmanager/pkmanager/internal/redact"
)

// What a method needs.
type need int

const (
	needNothing need = iota // health, reflection, probes, metrics
	needPod                 // a pod-bound token of a served pod
	needLegacy              // like needPod, or no token at all (legacy clients)
	needAdmin               // an admin allowed the action
)

type rule struct {
	need need
	act  Action
}

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
	if reg != nil {
		if err := reg.Register(g.denied); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// grpcRule classifies a full gRPC method name. Unknown methods are admin
// operations (ActionOther): nothing new is open by default.
func grpcRule(full string) rule {
	switch full {
	case "/pkmanager.v1.KeyService/RequestKeys":
		return rule{need: needPod}
	case "/prysm.internal.cluster.PrivateKeyService/Request", "/ethereum.cluster.PrivateKeyService/Request":
		return rule{need: needLegacy}
	case "/pkmanager.v1.KeyService/ReleaseKeys":
		return rule{needAdmin, ActionRelease}
	case "/pkmanager.v1.KeyService/RetireKey":
		return rule{needAdmin, ActionRetire}
	case "/pkmanager.v1.KeyService/ListKeys":
		return rule{needAdmin, ActionList}
	case "/pkmanager.v1.KeyService/ListDepositData":
		return rule{needAdmin, ActionDepositData}
	case "/pkmanager.v1.KeyService/ImportKeys":
		return rule{needAdmin, ActionImport}
	case "/pkmanager.v1.KeyService/RecoverKey":
		return rule{needAdmin, ActionRecover}
	case "/pkmanager.v1.KeyService/ExitKeys":
		return rule{needAdmin, ActionExit}
	}
	if strings.HasPrefix(full, "/grpc.health.v1.Health/") || strings.HasPrefix(full, "/grpc.reflection.") {
		return rule{need: needNothing}
	}
	return rule{needAdmin, ActionOther}
}

// httpRule classifies an HTTP request. Probes and metrics are open; the key
// request is for pods; everything else under /api/ and /assignments is admin.
func httpRule(r *http.Request) rule {
	p := r.URL.Path
	switch {
	case p == "/healthz" || p == "/readyz" || p == "/metrics":
		return rule{need: needNothing}
	case p == "/api/v1/keys/request":
		return rule{need: needPod}
	case p == "/api/v1/keys/release":
		return rule{needAdmin, ActionRelease}
	case p == "/api/v1/keys" || p == "/assignments":
		return rule{needAdmin, ActionList}
	case strings.HasPrefix(p, "/api/v1/keys/") && strings.HasSuffix(p, "/retire"):
		return rule{needAdmin, ActionRetire}
	case p == "/api/v1/keys/exit":
		return rule{needAdmin, ActionExit}
	case p == "/api/v1/deposit-data":
		return rule{needAdmin, ActionDepositData}
	case p == "/api/v1/audit":
		return rule{needAdmin, ActionAudit}
	case strings.HasPrefix(p, "/api/v1/keys/import"):
		return rule{needAdmin, ActionImport}
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return rule{needAdmin, ActionOtherRead}
	default:
		return rule{needAdmin, ActionOther}
	}
}

// authorize returns ctx with the caller, or an error wrapping
// ErrUnauthenticated, ErrForbidden or ErrUnavailable.
func (g *Gate) authorize(ctx context.Context, token string, ru rule) (context.Context, error) {
	switch ru.need {
	case needNothing:
		return ctx, nil
	case needLegacy:
		if token == "" {
			return WithCaller(ctx, &Caller{Kind: KindLegacyAnonymous}), nil
		}
	}
	id, err := g.auth.Authenticate(ctx, token)
	if err != nil {
		return ctx, err
	}
	if ru.need == needAdmin {
		if err := g.auth.CheckAdmin(ctx, id, ru.act); err != nil {
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

// UnaryInterceptor checks unary calls.
func (g *Gate) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := g.authorize(ctx, grpcToken(ctx), grpcRule(info.FullMethod))
		if err != nil {
			g.refused(ctx, "grpc", info.FullMethod, peerAddr(ctx), err)
			return nil, grpcStatus(err)
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor checks streaming calls.
func (g *Gate) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := g.authorize(ss.Context(), grpcToken(ss.Context()), grpcRule(info.FullMethod))
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

// HTTP wraps next with the same checks; refusals are JSON errors like the
// API's: 401 unauthenticated, 403 permission_denied, 503 unavailable.
func (g *Gate) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, err := g.authorize(r.Context(), bearer(r.Header.Get("Authorization")), httpRule(r))
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
