package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pkmanager/pkmanager/internal/access"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/grpcapi"
	"github.com/pkmanager/pkmanager/internal/httpapi"
	"github.com/pkmanager/pkmanager/internal/metrics"
	"github.com/pkmanager/pkmanager/internal/store"
)

// The behaviour against a real API server is in test/k8s; these are the
// pure parts and the cache.

func TestServiceAccountUsername(t *testing.T) {
	for in, want := range map[string]string{
		"ns/admin": "system:serviceaccount:ns:admin", "system:serviceaccount:ns:admin": "system:serviceaccount:ns:admin",
		"admin": "", "ns/": "", "/admin": "", "a/b/c": "", "system:serviceaccount:ns": "",
	} {
		got, err := ServiceAccountUsername(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("ServiceAccountUsername(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestRules: the gate's rules, read from the servers' own tables
// (grpcapi.Methods, the httpapi route table); calls no row names are admin
// operations.
func TestRules(t *testing.T) {
	admin := func(a access.Action) access.Rule { return access.Rule{Need: access.NeedAdmin, Action: a} }
	methods := grpcapi.Methods()
	for m, want := range map[string]access.Rule{
		"/pkmanager.v1.KeyService/RequestKeys":              {Need: access.NeedPod},
		"/prysm.internal.cluster.PrivateKeyService/Request": {Need: access.NeedLegacy},
		"/ethereum.cluster.PrivateKeyService/Request":       {Need: access.NeedLegacy},
		"/pkmanager.v1.KeyService/ReleaseKeys":              admin(access.ActionRelease),
		"/pkmanager.v1.KeyService/ListDepositData":          admin(access.ActionDepositData),
		"/pkmanager.v1.KeyService/RecoverKey":               admin(access.ActionRecover),
		"/pkmanager.v1.KeyService/ExitKeys":                 admin(access.ActionExit),
		"/pkmanager.v1.KeyService/SomethingNew":             admin(access.ActionOther),
		"/grpc.health.v1.Health/Check":                      {Need: access.NeedNothing},
	} {
		if got := grpcRule(methods, m); got != want {
			t.Errorf("grpcRule(%s) = %+v, want %+v", m, got, want)
		}
	}
	// A row without a need is no open door.
	if got := grpcRule(Methods{"/x.Y/Z": {}}, "/x.Y/Z"); got != (access.Rule{Need: access.NeedAdmin, Action: access.ActionOther}) {
		t.Errorf("incomplete row: %+v", got)
	}
	lister := fakeLister{}
	h := httpapi.NewHandler(httpapi.Config{Allocator: &fakeAlloc{}, Keys: lister, Audit: lister, Metrics: metrics.New(lister, nil)})
	for req, want := range map[[2]string]access.Rule{
		{"GET", "/readyz"}: {Need: access.NeedNothing}, {"GET", "/metrics"}: {Need: access.NeedNothing},
		{"POST", "/api/v1/keys/request"}: {Need: access.NeedPod}, {"POST", "/api/v1/keys/release"}: admin(access.ActionRelease),
		{"GET", "/assignments"}: admin(access.ActionList), {"POST", "/api/v1/keys/0xab/retire"}: admin(access.ActionRetire),
		{"GET", "/api/v1/audit"}: admin(access.ActionAudit), {"GET", "/api/v2/x"}: admin(access.ActionOtherRead),
		{"DELETE", "/api/v1/x"}: admin(access.ActionOther), {"POST", "/api/v1/keys/exit"}: admin(access.ActionExit),
		{"DELETE", "/api/v1/keys"}: admin(access.ActionOther), {"GET", "/api/v1/keys/request"}: admin(access.ActionOtherRead),
		{"GET", "/"}: admin(access.ActionOtherRead), {"GET", "/favicon.ico"}: admin(access.ActionOtherRead),
	} {
		if got := httpRule(h, httptest.NewRequest(req[0], req[1], nil)); got != want {
			t.Errorf("httpRule(%v) = %+v, want %+v", req, got, want)
		}
	}
	if bearer("Bearer abc") != "abc" || bearer("bearer  abc ") != "abc" || bearer("Basic abc") != "" || bearer("Bearer ") != "" {
		t.Error("bearer parsing")
	}
}

type fakeLister struct{}

func (fakeLister) ListKeys(context.Context, store.ListOptions, func(store.Key) error) error {
	return nil
}
func (fakeLister) Counts(context.Context) (map[store.State]int, error) { return nil, nil }
func (fakeLister) ListAudit(context.Context, uint64, int) ([]store.AuditEvent, error) {
	return nil, nil
}

func TestTokenExpiry(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	tok := enc([]byte(`{}`)) + "." + enc([]byte(`{"exp":1700000000}`)) + ".sig"
	if got := tokenExpiry(tok); !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("tokenExpiry = %v", got)
	}
	if !tokenExpiry("opaque").IsZero() || !tokenExpiry("a.!!.c").IsZero() {
		t.Error("non-JWT tokens must have no expiry")
	}
}

// TestAuthenticateCache: results are reused within the TTL, never past the
// token's exp, and API failures are not cached.
func TestAuthenticateCache(t *testing.T) {
	cs := fake.NewClientset()
	calls, fail := 0, false
	cs.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		if fail {
			return true, nil, errors.New("connection refused")
		}
		return true, &authnv1.TokenReview{Status: authnv1.TokenReviewStatus{
			Authenticated: true, Audiences: []string{"pkmanager"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:ns:v", Extra: map[string]authnv1.ExtraValue{
				ExtraPodName: {"p"}, ExtraPodUID: {"u"}}},
		}}, nil
	})
	now := time.Unix(1000, 0)
	a, err := New(Config{Client: cs, Namespace: "ns", CacheTTL: 5 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := a.Authenticate(ctx, "tok")
	if err != nil || id.PodName != "p" || id.PodUID != "u" || id.Namespace != "ns" || id.ServiceAccount != "v" || id.Actor() != "user:system:serviceaccount:ns:v" {
		t.Fatalf("Authenticate = %+v, %v", id, err)
	}
	a.Authenticate(ctx, "tok")
	if calls != 1 {
		t.Fatalf("%d token reviews, want 1 (cached)", calls)
	}
	now = now.Add(6 * time.Second)
	fail = true
	if _, err := a.Authenticate(ctx, "tok"); !errors.Is(err, ErrUnavailable) || strings.Contains(err.Error(), "tok\"") {
		t.Fatalf("after TTL with the API down: %v", err)
	}
	if _, err := a.Authenticate(ctx, "tok"); !errors.Is(err, ErrUnavailable) || calls != 3 {
		t.Fatalf("API failure was cached: calls %d, err %v", calls, err)
	}
	// A JWT expiring in 1 s is not reused after that second.
	fail = false
	enc := base64.RawURLEncoding.EncodeToString
	jwt := enc([]byte(`{}`)) + "." + enc([]byte(`{"exp":`+itoa(now.Unix()+1)+`}`)) + ".s"
	a.Authenticate(ctx, jwt)
	now = now.Add(2 * time.Second)
	before := calls
	a.Authenticate(ctx, jwt)
	if calls != before+1 {
		t.Fatal("result reused past the token's expiry")
	}
	if _, err := a.Authenticate(ctx, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("empty token: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestCheckPodSelector(t *testing.T) {
	cs := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", Labels: map[string]string{"role": "validator"}}})
	a, _ := New(Config{Client: cs, Namespace: "ns", Selector: "role=validator", CacheTTL: -1})
	ctx := context.Background()
	ok := Identity{Username: "system:serviceaccount:ns:v", Namespace: "ns", PodName: "p", PodUID: "u"}
	if err := a.CheckPod(ctx, ok); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		id   Identity
		want error
	}{
		"unbound":         {Identity{Username: "x", Namespace: "ns"}, ErrForbidden},
		"other namespace": {Identity{Namespace: "other", PodName: "p", PodUID: "u"}, ErrForbidden},
		"replaced pod":    {Identity{Namespace: "ns", PodName: "p", PodUID: "old"}, ErrUnauthenticated},
		"gone pod":        {Identity{Namespace: "ns", PodName: "q", PodUID: "u"}, ErrUnauthenticated},
	} {
		if err := a.CheckPod(ctx, tc.id); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	a2, _ := New(Config{Client: cs, Namespace: "ns", Selector: "role=other", CacheTTL: -1})
	if err := a2.CheckPod(ctx, ok); !errors.Is(err, ErrForbidden) {
		t.Errorf("selector mismatch: %v", err)
	}
}

type fakeAlloc struct{ pod, uid string }

func (f *fakeAlloc) Request(_ context.Context, pod, uid string, _ int) (allocator.Result, error) {
	f.pod, f.uid = pod, uid
	return allocator.Result{}, nil
}
func (f *fakeAlloc) Release(context.Context, string, string) (allocator.ReleaseResult, error) {
	return allocator.ReleaseResult{}, nil
}
func (f *fakeAlloc) ReleaseWithProtection(context.Context, string, string, map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error) {
	return allocator.ReleaseResult{Released: 1}, nil
}
func (f *fakeAlloc) Retire(context.Context, store.Pubkey, string) error { return nil }

func TestGuard(t *testing.T) {
	f := &fakeAlloc{}
	g := Guard{Next: f}
	bg := context.Background()
	pod := WithCaller(bg, &Caller{Kind: KindPod, Identity: Identity{Username: "system:serviceaccount:ns:v", Namespace: "ns", PodName: "a", PodUID: "ua"}})
	admin := WithCaller(bg, &Caller{Kind: KindAdmin, Identity: Identity{Username: "alice"}})
	anon := WithCaller(bg, &Caller{Kind: KindLegacyAnonymous})
	if _, err := g.Request(pod, "a", "", 1); err != nil || f.uid != "ua" {
		t.Fatalf("own pod: %v, uid %q (want the token's)", err, f.uid)
	}
	if store.ActorFrom(pod) != "user:system:serviceaccount:ns:v" || store.ActorFrom(admin) != "user:alice" || store.ActorFrom(anon) != "legacy-anonymous" || store.ActorFrom(bg) != store.ActorServer {
		t.Error("actors")
	}
	for name, tc := range map[string]struct {
		ctx      context.Context
		pod, uid string
	}{
		"other pod": {pod, "b", ""}, "other uid": {pod, "a", "ub"}, "admin": {admin, "a", ""}, "no caller": {bg, "a", ""},
	} {
		if _, err := g.Request(tc.ctx, tc.pod, tc.uid, 1); !errors.Is(err, allocator.ErrPermissionDenied) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := g.Request(anon, "b", "", 1); err != nil || f.pod != "b" {
		t.Errorf("legacy anonymous: %v", err)
	}
	if _, err := g.Release(pod, "a", ""); !errors.Is(err, allocator.ErrPermissionDenied) {
		t.Errorf("release by a pod: %v", err)
	}
	if err := g.Retire(anon, store.Pubkey{}, "x"); !errors.Is(err, allocator.ErrPermissionDenied) {
		t.Errorf("retire by anonymous: %v", err)
	}
	if _, err := g.Release(admin, "a", ""); err != nil {
		t.Errorf("release by admin: %v", err)
	}
	prot := map[store.Pubkey]store.Protection{{}: {HasBlock: true}}
	for name, ctx := range map[string]context.Context{"pod": pod, "anonymous": anon, "no caller": bg} {
		if _, err := g.ReleaseWithProtection(ctx, "a", "", prot); !errors.Is(err, allocator.ErrPermissionDenied) {
			t.Errorf("release with slashing protection by %s: %v", name, err)
		}
	}
	if r, err := g.ReleaseWithProtection(admin, "a", "", prot); err != nil || r.Released != 1 {
		t.Errorf("release with slashing protection by admin: %v", err)
	}
}
