// Package auth authenticates pkmanager's callers with the Kubernetes API.
//
// A validator pod proves who it is with a projected ServiceAccount token whose
// audience is pkmanager's (default "pkmanager"). The token is validated with
// the TokenReview API and must be bound to a Pod: the bound pod's name and UID
// (TokenReview extra authentication.kubernetes.io/pod-name and pod-uid) are
// the only pod the caller may ask keys for; the pod must live in the watched
// namespace, exist with that UID and match the pod selector. A pod name the
// caller merely asserts is never enough.
//
// Admin operations need a caller that the API server allows, through a
// SubjectAccessReview in the watched namespace, to use the verb on the
// sub-resource of keys in API group pkmanager.io (see access.Action), or one of the
// configured admin ServiceAccounts.
//
// Results are cached briefly (TokenReview, pod check and SubjectAccessReview,
// 5 s by default, never beyond a token's own expiry). The API server itself
// keeps accepting a bound token for about 10 s after its pod is deleted: the
// pod check (pod exists with the token's UID) narrows that, and a pod that no
// longer exists cannot get keys anyway once the watcher saw it go.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/pkmanager/pkmanager/internal/access"
)

// DefaultAudience is the token audience pkmanager accepts by default.
const DefaultAudience = "pkmanager"

// Extra keys of a pod-bound ServiceAccount token in a TokenReview.
const (
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Errors. Messages never contain tokens.
var (
	// ErrUnauthenticated: no token, or the API server does not accept it
	// (expired, wrong audience, forged, its pod is gone).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the caller is known but may not do this.
	ErrForbidden = errors.New("permission denied")
	// ErrUnavailable: the Kubernetes API could not be asked.
	ErrUnavailable = errors.New("kubernetes API unavailable for authentication")
)

// Identity is an authenticated caller.
type Identity struct {
	Username string
	UID      string
	Groups   []string
	// Namespace and ServiceAccount are set for ServiceAccount tokens.
	Namespace      string
	ServiceAccount string
	// PodName and PodUID are set for tokens bound to a pod.
	PodName string
	PodUID  string
}

// PodBound reports whether the token is bound to a pod.
func (id Identity) PodBound() bool { return id.PodName != "" && id.PodUID != "" }

// Actor names the caller in the audit trail: the token's subject, e.g.
// "user:system:serviceaccount:ns:name" (a pod's token too: the event names
// its pod). The prefix keeps a subject from posing as one of the server's
// own actors ("pod-watcher", "server", ...).
func (id Identity) Actor() string {
	return "user:" + id.Username
}

// Config configures an Authenticator. Client and Namespace are required.
type Config struct {
	Client kubernetes.Interface
	// Audience tokens must carry (default "pkmanager").
	Audience string
	// Namespace is the watched namespace: pods must live in it, and admin
	// SubjectAccessReviews are asked in it.
	Namespace string
	// Selector the pods must match (label selector syntax; "" is every pod).
	Selector string
	// AdminServiceAccounts are allowed every admin action without a
	// SubjectAccessReview, as "namespace/name" or
	// "system:serviceaccount:namespace:name".
	AdminServiceAccounts []string
	// CacheTTL bounds how long a result is reused (default 5 s; negative
	// disables the cache).
	CacheTTL time.Duration
	// APITimeout bounds each API call (default 5 s).
	APITimeout time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
}

// Authenticator validates callers. It is safe for concurrent use.
type Authenticator struct {
	cfg    Config
	sel    labels.Selector
	admins map[string]bool
	log    *slog.Logger

	mu    sync.Mutex
	cache map[[32]byte]cacheEntry
}

type cacheEntry struct {
	id      Identity
	err     error
	expires time.Time
}

const maxCacheEntries = 10000

// New checks cfg.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Client == nil || cfg.Namespace == "" {
		return nil, errors.New("auth: client and namespace are required")
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	sel, err := labels.Parse(cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("auth: pod selector %q: %w", cfg.Selector, err)
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 5 * time.Second
	}
	if cfg.APITimeout <= 0 {
		cfg.APITimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	admins := make(map[string]bool)
	for _, sa := range cfg.AdminServiceAccounts {
		u, err := ServiceAccountUsername(sa)
		if err != nil {
			return nil, err
		}
		admins[u] = true
	}
	return &Authenticator{cfg: cfg, sel: sel, admins: admins, log: cfg.Logger.With(slog.String("component", "auth")),
		cache: make(map[[32]byte]cacheEntry)}, nil
}

// ServiceAccountUsername turns "namespace/name" (or the full username) into
// "system:serviceaccount:namespace:name".
func ServiceAccountUsername(sa string) (string, error) {
	const prefix = "system:serviceaccount:"
	if strings.HasPrefix(sa, prefix) {
		if ns, name, ok := strings.Cut(strings.TrimPrefix(sa, prefix), ":"); ok && ns != "" && name != "" {
			return sa, nil
		}
	} else if ns, name, ok := strings.Cut(sa, "/"); ok && ns != "" && name != "" && !strings.Contains(name, "/") {
		return prefix + ns + ":" + name, nil
	}
	return "", fmt.Errorf("admin service account %q: want namespace/name", sa)
}

// Audience returns the audience tokens must carry.
func (a *Authenticator) Audience() string { return a.cfg.Audience }

// Authenticate validates token with a TokenReview (cached).
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte("tr\x00" + token))
	if id, err, ok := a.cached(key); ok {
		return id, err
	}
	id, err := a.review(ctx, token)
	if errors.Is(err, ErrUnavailable) {
		return id, err // not cached: try again next time
	}
	a.store(key, id, err, tokenExpiry(token))
	return id, err
}

func (a *Authenticator) review(ctx context.Context, token string) (Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.APITimeout)
	defer cancel()
	tr, err := a.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.cfg.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("%w: token review: %w", ErrUnavailable, err)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := "token not accepted"
		if st.Error != "" {
			msg += ": " + truncate(st.Error, 200)
		}
		return Identity{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	if !audienceOK(st.Audiences, a.cfg.Audience) {
		return Identity{}, fmt.Errorf("%w: token is not for audience %q", ErrUnauthenticated, a.cfg.Audience)
	}
	id := Identity{Username: st.User.Username, UID: st.User.UID, Groups: st.User.Groups}
	if rest, ok := strings.CutPrefix(id.Username, "system:serviceaccount:"); ok {
		id.Namespace, id.ServiceAccount, _ = strings.Cut(rest, ":")
	}
	id.PodName = first(st.User.Extra[ExtraPodName])
	id.PodUID = first(st.User.Extra[ExtraPodUID])
	return id, nil
}

// audienceOK: a TokenReview with spec audiences answers the subset the token
// is valid for; an empty answer means the API server's own audiences, which
// is not pkmanager's.
func audienceOK(got []string, want string) bool {
	for _, a := range got {
		if a == want {
			return true
		}
	}
	return false
}

// CheckPod checks that id is a token bound to a pod pkmanager serves: the
// pod is in the watched namespace, exists with the token's UID and matches
// the selector. The request's pod name and UID are compared by the Guard.
func (a *Authenticator) CheckPod(ctx context.Context, id Identity) error {
	if !id.PodBound() {
		return fmt.Errorf("%w: caller %s has no pod-bound token (use a projected ServiceAccount token with audience %q)",
			ErrForbidden, id.Username, a.cfg.Audience)
	}
	if id.Namespace != a.cfg.Namespace {
		return fmt.Errorf("%w: pod %s/%s is not in the watched namespace %s", ErrForbidden, id.Namespace, id.PodName, a.cfg.Namespace)
	}
	key := sha256.Sum256([]byte("pod\x00" + id.Namespace + "\x00" + id.PodName + "\x00" + id.PodUID))
	if _, err, ok := a.cached(key); ok {
		return err
	}
	err := a.checkPod(ctx, id)
	if !errors.Is(err, ErrUnavailable) {
		a.store(key, Identity{}, err, time.Time{})
	}
	return err
}

func (a *Authenticator) checkPod(ctx context.Context, id Identity) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.APITimeout)
	defer cancel()
	pod, err := a.cfg.Client.CoreV1().Pods(id.Namespace).Get(ctx, id.PodName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: the token's pod %s/%s no longer exists", ErrUnauthenticated, id.Namespace, id.PodName)
	case err != nil:
		return fmt.Errorf("%w: get pod %s/%s: %w", ErrUnavailable, id.Namespace, id.PodName, err)
	}
	return a.matchPod(id, pod)
}

func (a *Authenticator) matchPod(id Identity, pod *corev1.Pod) error {
	if string(pod.UID) != id.PodUID {
		return fmt.Errorf("%w: the token's pod %s/%s (uid %s) was replaced by uid %s", ErrUnauthenticated, id.Namespace, id.PodName, id.PodUID, pod.UID)
	}
	if !a.sel.Matches(labels.Set(pod.Labels)) {
		return fmt.Errorf("%w: pod %s/%s does not match the pod selector %q", ErrForbidden, id.Namespace, id.PodName, a.sel.String())
	}
	return nil
}

// CheckAdmin checks that id may do act: a configured admin ServiceAccount,
// or allowed by a SubjectAccessReview (cached).
func (a *Authenticator) CheckAdmin(ctx context.Context, id Identity, act access.Action) error {
	if a.admins[id.Username] {
		return nil
	}
	key := sha256.Sum256([]byte("sar\x00" + id.Username + "\x00" + id.UID + "\x00" + strings.Join(id.Groups, ",") + "\x00" + act.String()))
	if _, err, ok := a.cached(key); ok {
		return err
	}
	err := a.sar(ctx, id, act)
	if !errors.Is(err, ErrUnavailable) {
		a.store(key, Identity{}, err, time.Time{})
	}
	return err
}

func (a *Authenticator) sar(ctx context.Context, id Identity, act access.Action) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.APITimeout)
	defer cancel()
	r, err := a.cfg.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: id.Username, UID: id.UID, Groups: id.Groups,
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: a.cfg.Namespace, Verb: act.Verb, Group: access.APIGroup, Resource: "keys", Subresource: act.Subresource,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%w: subject access review: %w", ErrUnavailable, err)
	}
	if !r.Status.Allowed || r.Status.Denied {
		return fmt.Errorf("%w: %s may not %s in namespace %s", ErrForbidden, id.Username, act, a.cfg.Namespace)
	}
	return nil
}

func (a *Authenticator) cached(key [32]byte) (Identity, error, bool) {
	if a.cfg.CacheTTL < 0 {
		return Identity{}, nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.cache[key]
	if !ok || !a.cfg.Now().Before(e.expires) {
		return Identity{}, nil, false
	}
	return e.id, e.err, true
}

func (a *Authenticator) store(key [32]byte, id Identity, err error, notAfter time.Time) {
	if a.cfg.CacheTTL < 0 {
		return
	}
	now := a.cfg.Now()
	exp := now.Add(a.cfg.CacheTTL)
	if !notAfter.IsZero() && notAfter.Before(exp) {
		exp = notAfter
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxCacheEntries {
		for k, e := range a.cache {
			if !now.Before(e.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= maxCacheEntries {
			clear(a.cache)
		}
	}
	a.cache[key] = cacheEntry{id: id, err: err, expires: exp}
}

// tokenExpiry reads the exp claim of a JWT without verifying it, only to
// never cache a result beyond it. Zero when unknown.
func tokenExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(claims.Exp), 0)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
