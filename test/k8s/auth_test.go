package k8s_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pkmanager/pkmanager/api/legacy/prysmcluster"
	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/kube/kubetest"
	"github.com/pkmanager/pkmanager/internal/server"
)

func writeToken(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// requestAs requests a key for pod with a client sending tok (none when "")
// and returns the error as "<gRPC code>: <text>" ("" on success).
func (r *srv) requestAs(ctx context.Context, tok, pod, uid string) (string, *pb.RequestKeysResponse) {
	sec := client.Security{}
	if tok != "" {
		sec.TokenFile = writeToken(r.t, tok)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := r.client(sec).RequestKeys(ctx, pod, uid, 1)
	if err != nil {
		return codeText(err), nil
	}
	return "", resp
}

// codeText is err as "<gRPC code>: <text>": the client words its errors
// for people and keeps the server's status for programs.
func codeText(err error) string { return status.Code(err).String() + ": " + err.Error() }

func wantErr(t *testing.T, what, got, want string) {
	t.Helper()
	if got == "" || !strings.Contains(got, want) {
		t.Fatalf("%s: error %q, want one containing %q", what, got, want)
	}
	if strings.Count(got, ".") >= 2 && strings.Contains(got, "eyJ") {
		t.Fatalf("%s: error seems to contain a token: %q", what, got)
	}
}

// TestAuth: pod-bound tokens, admins through SubjectAccessReview (the
// deploy/ RBAC) or a configured admin ServiceAccount, the legacy service,
// and HTTP, all against the real API server.
func TestAuth(t *testing.T) {
	c := newCluster(t, "auth")
	ctx := c.ctx
	node := c.node("n", true)
	a := c.pod("a", node, nil)
	b := c.pod("b", node, nil)
	other := c.pod("other", node, map[string]string{"app": "not-a-validator"})
	for _, sa := range []string{"ops", "nobody"} {
		if err := env.ServiceAccount(ctx, c.ns, sa); err != nil {
			t.Fatal(err)
		}
	}
	s := c.startServer(srvConfig{legacy: true, kube: server.KubeOptions{
		Watch: true, Auth: server.AuthToken, AuthCacheTTL: 200 * time.Millisecond,
		AdminServiceAccounts: []string{c.ns + "/ops"},
	}})
	st := s.Store()

	tok := func(pod string, uid string, aud string) string {
		t.Helper()
		tk, err := env.PodToken(ctx, c.ns, validatorSA, pod, types.UID(uid), aud)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	tokA := tok("a", string(a.UID), "pkmanager")
	tokB := tok("b", string(b.UID), "pkmanager")

	// Pod a with its own token: its keys, recorded under its UID (filled in from the token).
	if e, resp := s.requestAs(ctx, tokA, "a", ""); e != "" || len(resp.GetKeys()) != 1 {
		t.Fatalf("pod a with its token: %s", e)
	}
	if ks := podKeys(t, ctx, st, "a"); len(ks) != 1 || ks[0].PodUID != string(a.UID) {
		t.Fatalf("a's keys: %+v", ks)
	}
	// Token of a used for b: refused, nothing assigned to b.
	e, _ := s.requestAs(ctx, tokA, "b", "")
	wantErr(t, "token of a for pod b", e, "PermissionDenied")
	e, _ = s.requestAs(ctx, tokA, "b", string(b.UID))
	wantErr(t, "token of a for pod b with b's uid", e, "PermissionDenied")
	e, _ = s.requestAs(ctx, tokA, "a", string(b.UID))
	wantErr(t, "token of a with b's uid", e, "PermissionDenied")
	if ks := podKeys(t, ctx, st, "b"); len(ks) != 0 {
		t.Fatalf("pod b got keys through a's token: %+v", ks)
	}
	// Missing, wrong-audience, expired, unbound and foreign-pod tokens.
	e, _ = s.requestAs(ctx, "", "b", "")
	wantErr(t, "no token", e, "Unauthenticated")
	e, _ = s.requestAs(ctx, tok("b", string(b.UID), "not-pkmanager"), "b", "")
	wantErr(t, "wrong audience", e, "Unauthenticated")
	e, _ = s.requestAs(ctx, tok("b", string(b.UID), kubetest.Issuer), "b", "")
	wantErr(t, "API server audience", e, "Unauthenticated")
	saObj, err := c.cs.CoreV1().ServiceAccounts(c.ns).Get(ctx, validatorSA, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired, err := env.SignToken(kubetest.PodClaims(c.ns, validatorSA, string(saObj.UID), "b", string(b.UID), "pkmanager", now.Add(-2*time.Hour), now.Add(-time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	e, _ = s.requestAs(ctx, expired, "b", "")
	wantErr(t, "expired token", e, "Unauthenticated")
	unbound, err := env.ServiceAccountToken(ctx, c.ns, validatorSA, "pkmanager")
	if err != nil {
		t.Fatal(err)
	}
	e, _ = s.requestAs(ctx, unbound, "b", "")
	wantErr(t, "token not bound to a pod", e, "PermissionDenied")
	e, _ = s.requestAs(ctx, tok("other", string(other.UID), "pkmanager"), "other", "")
	wantErr(t, "pod outside the selector", e, "PermissionDenied")
	if ks := podKeys(t, ctx, st, "b"); len(ks) != 0 {
		t.Fatalf("pod b got keys: %+v", ks)
	}

	// Admin operations: a pod token is not enough; the admin ServiceAccount
	// of deploy/base/admin-rbac.yaml is (SubjectAccessReview); "ops" is a
	// configured admin without RBAC; "nobody" is neither.
	adminTok, err := env.ServiceAccountToken(ctx, c.ns, adminSA, "pkmanager")
	if err != nil {
		t.Fatal(err)
	}
	opsTok, _ := env.ServiceAccountToken(ctx, c.ns, "ops", "pkmanager")
	nobodyTok, _ := env.ServiceAccountToken(ctx, c.ns, "nobody", "pkmanager")
	release := func(tk string) string {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := s.client(client.Security{TokenFile: writeToken(t, tk)}).ReleaseKeys(rctx, "a", "", nil)
		if err != nil {
			return codeText(err)
		}
		return ""
	}
	wantErr(t, "release with a pod token", release(tokA), "PermissionDenied")
	wantErr(t, "release by nobody", release(nobodyTok), "PermissionDenied")
	if ks := podKeys(t, ctx, st, "a"); len(ks) != 1 {
		t.Fatalf("a's keys after refused releases: %d", len(ks))
	}
	if e := release(adminTok); e != "" {
		t.Fatalf("release by the admin ServiceAccount: %s", e)
	}
	if ev := auditFor(t, ctx, st, "a", "release"); len(ev) != 1 || ev[0].Actor != "user:system:serviceaccount:"+c.ns+":"+adminSA {
		t.Fatalf("audit of the admin release: %+v", ev)
	}
	for name, tk := range map[string]string{"admin": adminTok, "ops": opsTok} {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.client(client.Security{TokenFile: writeToken(t, tk)}).ListKeys(lctx, &pb.ListKeysRequest{})
		cancel()
		if err != nil {
			t.Fatalf("ListKeys by %s: %v", name, err)
		}
	}

	// HTTP: probes and metrics are open; the API needs the same tokens.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		// /readyz is 503 until the watcher's caches have synced, which can
		// take a while on a loaded machine: poll it.
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := s.getAs(t, p, "")
			if code == 200 {
				break
			}
			if p != "/readyz" || time.Now().After(deadline) {
				t.Fatalf("GET %s without token: %d %s", p, code, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, tc := range []struct {
		path, tok string
		want      int
	}{
		{"/api/v1/keys", "", 401}, {"/api/v1/keys", tokA, 403}, {"/api/v1/keys", nobodyTok, 403},
		{"/api/v1/keys", adminTok, 200}, {"/assignments?format=json", adminTok, 200}, {"/assignments", "", 401},
		{"/api/v1/deposit-data?all=true", opsTok, 200}, {"/api/v1/deposit-data?all=true", tokB, 403},
	} {
		if code, body := s.getAs(t, tc.path, tc.tok); code != tc.want {
			t.Fatalf("GET %s: %d %s, want %d", tc.path, code, body, tc.want)
		}
	}
	post := func(tk, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, s.httpBase()+"/api/v1/keys/request", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tk)
		resp, err := s.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.String()
	}
	if code, body := post(tokA, `{"pod_name":"b","count":1}`); code != 403 || !strings.Contains(body, "permission_denied") {
		t.Fatalf("HTTP request for b with a's token: %d %s", code, body)
	}
	if code, body := post(tokB, `{"pod_name":"b","count":1}`); code != 200 {
		t.Fatalf("HTTP request for b with b's token: %d %s", code, body)
	}
	if ks := podKeys(t, ctx, st, "b"); len(ks) != 1 || ks[0].PodUID != string(b.UID) {
		t.Fatalf("b's keys after its HTTP request: %+v", ks)
	}

	// Legacy service (Prysm protocol): no token is accepted (the documented
	// risk) but the pod must exist and match, and its UID is recorded; a
	// token present is checked like any other.
	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	legacy := prysmcluster.NewPrivateKeyServiceClient(conn)
	lreq := func(tk, pod string) error {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if tk != "" {
			lctx = metadata.AppendToOutgoingContext(lctx, "authorization", "Bearer "+tk)
		}
		_, err := legacy.Request(lctx, &prysmcluster.PrivateKeyRequest{PodName: pod, NumberOfKeys: 1})
		return err
	}
	if err := lreq(tokA, "b"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("legacy with a's token for b: %v", err)
	}
	if err := lreq("", "no-such-pod"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("legacy without token for a missing pod: %v", err)
	}
	if err := lreq("", "other"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("legacy without token for a pod outside the selector: %v", err)
	}
	if err := lreq("", "a"); err != nil {
		t.Fatalf("legacy without token for a: %v", err)
	}
	if ks := podKeys(t, ctx, st, "a"); len(ks) != 1 || ks[0].PodUID != string(a.UID) {
		t.Fatalf("legacy request recorded %+v, want a's UID", ks)
	}

	// A token outlives its pod in the API server's cache for a while; the
	// pod check refuses it as soon as the pod is gone.
	c.forceDelete("b")
	waitFor(t, 5*time.Second, "token of a deleted pod refused", func() (bool, string) {
		e, _ := s.requestAs(ctx, tokB, "b", "")
		return strings.Contains(e, "Unauthenticated"), e
	})
}

// TestTLS: both listeners serve TLS; the client checks the server with
// --ca-file and sends its token.
func TestTLS(t *testing.T) {
	c := newCluster(t, "tls")
	ctx := c.ctx
	dir := t.TempDir()
	caFile, certFile, keyFile := makeCerts(t, dir)
	node := c.node("n", true)
	p := c.pod("p", node, nil)
	s := c.startServer(srvConfig{tls: server.TLSOptions{CertFile: certFile, KeyFile: keyFile},
		kube: server.KubeOptions{Watch: true, Auth: server.AuthToken}})
	tk, err := env.PodToken(ctx, c.ns, validatorSA, "p", p.UID, "pkmanager")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := s.client(client.Security{CAFile: caFile, TokenFile: writeToken(t, tk), ServerName: "pkmanager"}).RequestKeys(rctx, "p", "", 2)
	cancel()
	if err != nil || len(resp.GetKeys()) != 2 {
		t.Fatalf("request over TLS: %v", err)
	}
	// Plaintext is refused by the TLS listener.
	rctx, cancel = context.WithTimeout(ctx, 2*time.Second)
	_, err = s.client(client.Security{TokenFile: writeToken(t, tk)}).RequestKeys(rctx, "p", "", 2)
	cancel()
	if err == nil {
		t.Fatal("plaintext request to a TLS server succeeded")
	}
	// HTTP over TLS.
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "pkmanager"}}}
	r, err := hc.Get("https://" + s.HTTPAddr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("HTTPS /healthz: %d", r.StatusCode)
	}
}

// makeCerts writes a CA and a server certificate for "pkmanager" and 127.0.0.1.
func makeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caPEM, certPEM, keyPEM := kubetest.ServingCert(t, []string{"pkmanager"}, []net.IP{net.ParseIP("127.0.0.1")})
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string][]byte{caFile: caPEM, certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}
