// Package kubetest runs a real kube-apiserver and etcd on loopback for tests
// (envtest-style: no scheduler, controller-manager or kubelet; pods stay
// Pending unless a test writes their status through the status subresource).
//
// The binaries come from scripts/k8s-test-binaries.sh: $PKM_K8S_ASSETS, or
// the cache directory that script uses for the pinned tools module. Without
// them tests skip, except under CI=true where they fail.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Issuer is the service-account token issuer of the test API server; it is
// also the API server's own audience.
const Issuer = "https://kubernetes.default.svc.pkmanager-test"

// Binaries the helper needs.
var binaries = []string{"kube-apiserver", "etcd"}

// Assets returns the directory with kube-apiserver, etcd and kubectl, or ""
// with the reason they are missing.
func Assets() (string, string) {
	if d := os.Getenv("PKM_K8S_ASSETS"); d != "" {
		if missing := missingIn(d); missing != "" {
			return "", fmt.Sprintf("PKM_K8S_ASSETS=%s lacks %s", d, missing)
		}
		return d, ""
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err.Error()
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, "test", "k8s", "tools", f))
		if err != nil {
			return "", err.Error()
		}
		h.Write(b)
	}
	cache := os.Getenv("PKM_K8S_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err.Error()
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "pkmanager", "k8s")
	}
	d := filepath.Join(cache, hex.EncodeToString(h.Sum(nil))[:16])
	if missing := missingIn(d); missing != "" {
		return "", fmt.Sprintf("no %s in %s: run scripts/k8s-test-binaries.sh (cold build 7-17 min)", missing, d)
	}
	return d, ""
}

func missingIn(d string) string {
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(d, b)); err != nil || fi.Mode()&0o111 == 0 {
			return b
		}
	}
	return ""
}

// ModuleRoot returns the directory of pkmanager's go.mod.
func ModuleRoot() (string, error) { return moduleRoot() }

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/pkmanager/pkmanager\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("pkmanager's go.mod not found above the working directory")
		}
		dir = parent
	}
}

// SkipOrFail is what a test does without the binaries: skip, or fail under
// CI=true.
func SkipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("kube-apiserver/etcd binaries missing under CI=true: %s", reason)
	}
	tb.Skipf("kube-apiserver/etcd binaries missing: %s", reason)
}

// Env is a running etcd + kube-apiserver.
type Env struct {
	Dir        string // working directory (certs, tokens, data)
	Assets     string
	Host       string // https://127.0.0.1:PORT
	AdminToken string
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	Client kubernetes.Interface
	// SigningKey signs service-account tokens (for forged/expired tokens).
	SigningKey *rsa.PrivateKey
	// Kubeconfig is a kubeconfig file for the admin.
	Kubeconfig string

	mu        sync.Mutex
	etcd      *proc
	apiserver *proc
	apiPort   int
	etcdURL   string
	logs      *os.File
}

// Start starts etcd and kube-apiserver from assets in dir and waits until
// the API server is ready.
func Start(ctx context.Context, assets, dir string) (_ *Env, err error) {
	e := &Env{Dir: dir, Assets: assets}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	for _, d := range []string{"etcd", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if e.logs, err = os.Create(filepath.Join(dir, "control-plane.log")); err != nil {
		return nil, err
	}
	// Service-account signing key.
	if e.SigningKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&e.SigningKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(e.SigningKey)}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return nil, err
	}
	tok := make([]byte, 24)
	rand.Read(tok)
	e.AdminToken = hex.EncodeToString(tok)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(e.AdminToken+`,admin,admin-uid,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	e.etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	e.apiPort = ports[2]
	etcdCmd := exec.Command(filepath.Join(assets, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", e.etcdURL, "--advertise-client-urls", e.etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")
	etcdCmd.Stdout, etcdCmd.Stderr = e.logs, e.logs
	if e.etcd, err = startProc(etcdCmd); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	e.Host = "https://127.0.0.1:" + strconv.Itoa(e.apiPort)
	e.Config = &rest.Config{Host: e.Host, BearerToken: e.AdminToken, TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS: 200, Burst: 400}
	if e.Client, err = kubernetes.NewForConfig(e.Config); err != nil {
		return nil, err
	}
	if err := e.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	e.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, []byte(e.KubeconfigFor(e.AdminToken)), 0o600); err != nil {
		return nil, err
	}
	return e, nil
}

// KubeconfigFor returns a kubeconfig that authenticates with token.
func (e *Env) KubeconfigFor(token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: user
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: user}
current-context: test
`, e.Host, token)
}

// StartAPIServer starts kube-apiserver (again) on the same port and etcd and
// waits for /readyz.
func (e *Env) StartAPIServer(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver != nil {
		return errors.New("kube-apiserver already running")
	}
	args := []string{
		"--etcd-servers=" + e.etcdURL,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(e.apiPort),
		"--cert-dir=" + filepath.Join(e.Dir, "certs"),
		"--token-auth-file=" + filepath.Join(e.Dir, "tokens.csv"),
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + filepath.Join(e.Dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(e.Dir, "sa.key"),
		"--api-audiences=" + Issuer,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--v=0",
	}
	if !hasDefaultRoute() {
		args = append(args, "--advertise-address=10.0.0.1")
	}
	cmd := exec.Command(filepath.Join(e.Assets, "kube-apiserver"), args...)
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	p, err := startProc(cmd)
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	e.apiserver = p
	deadline := time.Now().Add(90 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := e.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		select {
		case <-p.done:
			e.apiserver = nil
			return fmt.Errorf("kube-apiserver exited (%v); see %s", p.err, e.logs.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 90 s (last: %v); see %s", err, e.logs.Name())
		}
	}
}

// StopAPIServer stops kube-apiserver (etcd keeps running).
func (e *Env) StopAPIServer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	stop(e.apiserver)
	e.apiserver = nil
}

// Stop stops everything.
func (e *Env) Stop() {
	e.StopAPIServer()
	e.mu.Lock()
	defer e.mu.Unlock()
	stop(e.etcd)
	e.etcd = nil
	if e.logs != nil {
		e.logs.Close()
	}
}

// proc is a started process; done closes when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

func stop(p *proc) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func hasDefaultRoute() bool {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "00000000" {
			return true
		}
	}
	return false
}

// Namespace creates a namespace.
func (e *Env) Namespace(ctx context.Context, name string) error {
	_, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// ServiceAccount creates a service account.
func (e *Env) ServiceAccount(ctx context.Context, ns, name string) error {
	_, err := e.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// PodToken returns a token of service account sa bound to pod (name, uid),
// for audience (TokenRequest, 1 h).
func (e *Env) PodToken(ctx context.Context, ns, sa, pod string, uid types.UID, audience string) (string, error) {
	exp := int64(3600)
	spec := authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}
	if pod != "" {
		spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: uid}
	}
	tr, err := e.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// ServiceAccountToken returns an unbound token of sa for audience (nil: the
// API server's own).
func (e *Env) ServiceAccountToken(ctx context.Context, ns, sa string, audiences ...string) (string, error) {
	exp := int64(3600)
	tr, err := e.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// SignToken signs claims with the service-account key, as the API server
// would (for tokens a TokenRequest cannot make, e.g. already expired ones).
func (e *Env) SignToken(claims map[string]any) (string, error) {
	kid, err := keyID(&e.SigningKey.PublicKey)
	if err != nil {
		return "", err
	}
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": kid})
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, e.SigningKey, cryptoSHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// keyID is the API server's key id: base64url(sha256(DER of the public key)).
func keyID(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// PodClaims returns the claims of a pod-bound service-account token.
func PodClaims(ns, sa, saUID, pod, podUID, audience string, iat, exp time.Time) map[string]any {
	return map[string]any{
		"iss": Issuer, "sub": "system:serviceaccount:" + ns + ":" + sa, "aud": []string{audience},
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]string{"name": sa, "uid": saUID},
			"pod":            map[string]string{"name": pod, "uid": podUID},
		},
	}
}
