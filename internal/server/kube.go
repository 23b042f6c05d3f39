package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/grpcapi"
	"github.com/pkmanager/pkmanager/internal/httpapi"
	"github.com/pkmanager/pkmanager/internal/kube/auth"
	"github.com/pkmanager/pkmanager/internal/kube/leader"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/ownership"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Authentication modes (KubeOptions.Auth).
const (
	AuthNone  = "none"
	AuthToken = "token"
)

// KubeOptions configure the Kubernetes integration. The zero value is none:
// no watcher, no authentication (allowed only on loopback or in dev mode).
type KubeOptions struct {
	// Kubeconfig is a kubeconfig file; "" means in-cluster configuration.
	Kubeconfig string
	// RESTConfig overrides Kubeconfig (tests).
	RESTConfig *rest.Config

	// Watch runs the pod watcher, which releases the keys of pods that can
	// no longer run.
	Watch bool
	// Namespace of the validator pods ("" in a cluster: the server's own).
	Namespace string
	// PodSelector selects the validator pods (label selector).
	PodSelector string
	// Resync is the watcher's full reconciliation period (default 30 s).
	Resync time.Duration
	// NodeGracePeriod: a node whose heartbeat is older is not Ready,
	// whatever its condition says (default watcher.DefaultNodeGracePeriod).
	NodeGracePeriod time.Duration
	// UIDMargin replaces watcher.UIDMargin when not 0 (tests).
	UIDMargin time.Duration

	// Auth is AuthToken or AuthNone ("" = none).
	Auth                 string
	TokenAudience        string        // default "pkmanager"
	AdminServiceAccounts []string      // namespace/name
	AuthCacheTTL         time.Duration // default 5 s

	// LeaderElect gates releases (and the deposit sender) with a Lease.
	LeaderElect    bool
	LeaseName      string // default "pkmanager"
	LeaseNamespace string // default Namespace
	Identity       string // default $POD_NAME, then the hostname
	LeaseDuration  time.Duration
	RenewDeadline  time.Duration
	RetryPeriod    time.Duration

	// UIDConflict: what a request does while its pod name's keys are held
	// by another pod UID (default fail).
	UIDConflict     allocator.UIDConflict
	UIDConflictPoll time.Duration // default 1 s
}

func (k KubeOptions) needsCluster() bool {
	return k.Watch || k.Auth == AuthToken || k.LeaderElect
}

// kubeParts is the running Kubernetes integration of a Server.
type kubeParts struct {
	opts    KubeOptions
	client  kubernetes.Interface
	watcher *watcher.Watcher
	auth    *auth.Authenticator
	gate    *auth.Gate
	elector *leader.Elector
	owner   *ownerGate // without an elector: the store's ownership of the watcher role
	sel     labels.Selector
	wg      sync.WaitGroup
}

// setupKube builds the Kubernetes parts from s.opts.Kube (nothing when none
// is asked for; New has checked the options with Validate), in steps: the
// client configuration, resolve the defaults the environment gives
// (resolveKube, pure), build the clients.
func (s *Server) setupKube(ctx context.Context) error {
	if !s.opts.Kube.needsCluster() {
		return nil
	}
	cfg, err := kubeConfig(s.opts.Kube)
	if err != nil {
		return err
	}
	ko, sel, err := resolveKube(s.opts.Kube, hostKubeEnv())
	if err != nil {
		return err
	}
	// client-go logs through klog: send it to the server's logger.
	klog.SetSlogLogger(s.logger.With(slog.String("component", "client-go")))
	k, err := s.buildKube(cfg, ko, sel)
	if err != nil {
		return err
	}
	s.opts.Kube = ko
	s.kube = k
	s.logger.Info("kubernetes integration", slog.String("namespace", ko.Namespace), slog.String("pod_selector", sel.String()),
		slog.Bool("watch", ko.Watch), slog.String("auth", pick(ko.Auth == AuthToken, AuthToken, AuthNone)),
		slog.Bool("leader_elect", ko.LeaderElect), slog.String("uid_conflict", string(uidPolicy(ko.UIDConflict))))
	return nil
}

// kubeConfig is the client configuration: RESTConfig, else the kubeconfig
// file, else the cluster's own (in a pod).
func kubeConfig(ko KubeOptions) (*rest.Config, error) {
	cfg := ko.RESTConfig
	if cfg == nil {
		var err error
		if ko.Kubeconfig != "" {
			cfg, err = clientcmd.BuildConfigFromFlags("", ko.Kubeconfig)
		} else {
			cfg, err = rest.InClusterConfig()
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes client configuration (give --kubeconfig outside a cluster, or --watch=false --auth none on loopback): %w", err)
		}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "pkmanager"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	return cfg, nil
}

// kubeEnv is what resolveKube takes from the host.
type kubeEnv struct {
	namespace func() (string, error) // the pod's own namespace
	podName   string                 // $POD_NAME
	hostname  func() (string, error)
}

func hostKubeEnv() kubeEnv {
	return kubeEnv{
		namespace: func() (string, error) {
			b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
			return strings.TrimSpace(string(b)), err
		},
		podName:  os.Getenv("POD_NAME"),
		hostname: os.Hostname,
	}
}

// resolveKube fills the defaults of ko that the environment gives: the
// watched namespace (the server's own in a cluster), and with leader
// election the Lease's name ("pkmanager"), namespace (the watched one) and
// this replica's identity ($POD_NAME, then the hostname); and parses the
// pod selector.
func resolveKube(ko KubeOptions, env kubeEnv) (KubeOptions, labels.Selector, error) {
	if ko.Namespace == "" {
		ns, err := env.namespace()
		if err != nil {
			return ko, nil, errors.New("no watched namespace: give --watch-namespace (outside a cluster it cannot be guessed)")
		}
		ko.Namespace = ns
	}
	sel, err := labels.Parse(ko.PodSelector)
	if err != nil {
		return ko, nil, fmt.Errorf("pod selector %q: %w", ko.PodSelector, err)
	}
	if ko.LeaderElect {
		if ko.LeaseName == "" {
			ko.LeaseName = DefaultLeaseName
		}
		if ko.LeaseNamespace == "" {
			ko.LeaseNamespace = ko.Namespace
		}
		if ko.Identity == "" {
			ko.Identity = env.podName
		}
		if ko.Identity == "" {
			if ko.Identity, err = env.hostname(); err != nil {
				return ko, nil, fmt.Errorf("leader election identity: %w", err)
			}
		}
	}
	return ko, sel, nil
}

// buildKube builds the clients of the resolved options: the Lease's
// elector, the pod watcher, the token authenticator and its gate.
func (s *Server) buildKube(cfg *rest.Config, ko KubeOptions, sel labels.Selector) (*kubeParts, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	k := &kubeParts{opts: ko, client: client, sel: sel}
	log := s.logger
	if ko.LeaderElect {
		if k.elector, err = leader.New(leader.Config{
			Client: client, Namespace: ko.LeaseNamespace, Name: ko.LeaseName, Identity: ko.Identity,
			LeaseDuration: ko.LeaseDuration, RenewDeadline: ko.RenewDeadline, RetryPeriod: ko.RetryPeriod,
			Registerer: s.metrics.Registry, Logger: log,
		}); err != nil {
			return nil, err
		}
	}
	if ko.Watch {
		// Releases run on one replica: the Lease's leader with
		// --leader-elect, else the owner of the store's "pod-watcher" role
		// (always this process with bbolt; an advisory lock on PostgreSQL).
		var ld watcher.Leader
		if k.elector != nil {
			ld = k.elector
		} else {
			k.owner = &ownerGate{}
			ld = k.owner
		}
		if k.watcher, err = watcher.New(watcher.Config{
			Client: client, Namespace: ko.Namespace, Selector: ko.PodSelector,
			Store: s.store, Releaser: s.alloc, Leader: ld, Resync: ko.Resync, NodeGracePeriod: ko.NodeGracePeriod, UIDMargin: ko.UIDMargin,
			Registerer: s.metrics.Registry, Logger: log, Now: s.now, Reconciled: s.restoreReconciled,
		}); err != nil {
			return nil, err
		}
	}
	if ko.Auth == AuthToken {
		if k.auth, err = auth.New(auth.Config{
			Client: client, Audience: ko.TokenAudience, Namespace: ko.Namespace, Selector: ko.PodSelector,
			AdminServiceAccounts: ko.AdminServiceAccounts, CacheTTL: ko.AuthCacheTTL, Logger: log,
		}); err != nil {
			return nil, err
		}
		if k.gate, err = auth.NewGate(k.auth, s.metrics.Registry, log); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func uidPolicy(p allocator.UIDConflict) allocator.UIDConflict {
	if p == "" {
		return allocator.UIDConflictFail
	}
	return p
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}

// grpcStreamWorkers is how many goroutines the gRPC server keeps for the
// RPCs it receives. Without them every RPC starts a goroutine of its own
// whose stack grows, copied each time, through the claim path (allocator,
// store, bbolt): 10% of the server's CPU at 32 concurrent clients
// (BenchmarkRecycleGRPCServerCPU). A worker keeps its grown stack from one
// RPC to the next; RPCs beyond the workers (all of them busy, e.g. waiting
// for a commit) each get a new goroutine as before.
const grpcStreamWorkers = 64

// grpcOptions are the gRPC server options: message size, stream workers,
// TLS and the auth interceptors.
func (s *Server) grpcOptions() ([]grpc.ServerOption, error) {
	// Messages up to a slashing-protection interchange and a little more
	// (ReleaseKeysRequest.slashing_protection; gRPC's default is 4 MiB).
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(slashing.MaxFileBytes + 1<<20),
		grpc.NumStreamWorkers(grpcStreamWorkers),
	}
	if s.tls != nil {
		opts = append(opts, grpc.Creds(s.tls.grpcCreds()))
	}
	if s.kube != nil && s.kube.gate != nil {
		opts = append(opts,
			grpc.ChainUnaryInterceptor(s.kube.gate.UnaryInterceptor(grpcapi.Methods())),
			grpc.ChainStreamInterceptor(s.kube.gate.StreamInterceptor(grpcapi.Methods())))
	}
	return opts, nil
}

// apiAllocator is the allocator the API layers call: the auth Guard (pod
// binding), the pod UID lookup (with the watcher) and the UID-conflict
// policy in front of the allocator.
func (s *Server) apiAllocator() auth.Allocator {
	var req allocator.Requester = s.alloc
	k := s.kube
	if k != nil && uidPolicy(k.opts.UIDConflict) == allocator.UIDConflictWait {
		req = allocator.UIDWaiter{Next: req, Poll: k.opts.UIDConflictPoll, Logger: s.logger}
	}
	if k != nil {
		req = podUIDLookup{next: req, k: k}
	}
	var a auth.Allocator = composed{Requester: req, Allocator: s.alloc}
	if k != nil && k.gate != nil {
		a = auth.Guard{Next: a}
	}
	return a
}

type composed struct {
	allocator.Requester
	*allocator.Allocator
}

func (c composed) Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error) {
	return c.Requester.Request(ctx, pod, podUID, n)
}

// podUIDLookup (whenever a cluster is configured) gives a request without a
// pod UID (legacy clients, clients without $POD_UID) the UID of the pod of
// that name in the watched namespace, so keys are always recorded under a UID and never handed to a
// successor while a predecessor holds them. Pods that do not exist or do not
// match the selector get no keys.
type podUIDLookup struct {
	next allocator.Requester
	k    *kubeParts
}

func (l podUIDLookup) Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error) {
	if podUID == "" {
		if err := allocator.ValidatePodName(pod); err != nil {
			return allocator.Result{}, err
		}
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := l.k.client.CoreV1().Pods(l.k.opts.Namespace).Get(gctx, pod, metav1.GetOptions{})
		cancel()
		switch {
		case apierrors.IsNotFound(err):
			return allocator.Result{}, fmt.Errorf("%w: no pod %s in namespace %s: keys are handed only to existing pods",
				allocator.ErrInvalidRequest, pod, l.k.opts.Namespace)
		case err != nil:
			return allocator.Result{}, fmt.Errorf("look up the UID of pod %s: %w", pod, err)
		case !l.k.sel.Matches(labels.Set(p.Labels)):
			return allocator.Result{}, fmt.Errorf("%w: pod %s does not match the pod selector %q",
				allocator.ErrPermissionDenied, pod, l.k.sel.String())
		}
		podUID = string(p.UID)
	}
	return l.next.Request(ctx, pod, podUID, n)
}

// wrapHTTP puts the auth gate in front of the HTTP handler; the gate reads
// the handler's route table.
func (s *Server) wrapHTTP(h *httpapi.Handler) http.Handler {
	if s.kube != nil && s.kube.gate != nil {
		return s.kube.gate.HTTP(h)
	}
	return h
}

// checkListeners refuses to serve without authentication on a non-loopback
// listener outside dev mode, and wraps the HTTP listener in TLS.
func (s *Server) checkListeners() error {
	authOn := s.kube != nil && s.kube.gate != nil
	if !authOn && !(s.opts.Dev && s.opts.InsecureListenAny) {
		for _, l := range []net.Listener{s.grpcLis, s.httpLis} {
			if !isLoopback(l.Addr()) {
				return authNoneError(l.Addr().String(), s.opts.Dev)
			}
		}
	}
	if s.tls != nil {
		s.httpLis = s.tls.listener(s.httpLis)
	}
	if !s.opts.Dev && s.tls == nil {
		for _, l := range []net.Listener{s.grpcLis, s.httpLis} {
			if !isLoopback(l.Addr()) {
				s.logger.Warn("serving without TLS on a non-loopback address: keys cross the network unencrypted unless a mesh encrypts them; give --tls-cert and --tls-key",
					slog.String("addr", l.Addr().String()))
			}
		}
	}
	return nil
}

// authNoneError refuses a listener without authentication on addr, which
// is not loopback.
func authNoneError(addr string, dev bool) error {
	msg := fmt.Sprintf("--auth none on %s, which is not a loopback address: anyone who reaches it could take any pod's keys. Use --auth token (in a cluster) or loopback addresses", addr)
	if dev {
		msg += "; in dev mode, --insecure-listen-any serves there anyway"
	}
	return errors.New(msg)
}

// loopbackAddr reports whether a listen address (host:port) is on loopback.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// kubeReady is the watcher's readiness (nil without a watcher).
func (s *Server) kubeReady() error {
	if s.kube == nil || s.kube.watcher == nil {
		return nil
	}
	return s.kube.watcher.Ready()
}

// startKube starts the leader election and the watcher; the returned func
// stops them and waits.
func (s *Server) startKube(ctx context.Context) (stop func()) {
	k := s.kube
	if k == nil || (k.watcher == nil && k.elector == nil) {
		return func() {}
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if k.watcher != nil {
		k.wg.Add(1)
		go func() { defer k.wg.Done(); k.watcher.Run(kctx) }()
	}
	if k.elector != nil {
		k.wg.Add(1)
		go func() { defer k.wg.Done(); k.elector.Campaign(kctx) }()
	}
	if k.owner != nil {
		k.wg.Add(1)
		go func() { defer k.wg.Done(); k.owner.run(kctx, s.ownerRunner()) }()
	}
	return func() {
		cancel()
		k.wg.Wait()
	}
}

// Leader reports whether this replica runs the single-owner loops (pod
// watcher releases, deposit sender): always true without --leader-elect.
func (s *Server) Leader() bool {
	if s.kube == nil || s.kube.elector == nil {
		return true
	}
	return s.kube.elector.IsLeader()
}

// LeaderElector returns the Lease elector with --leader-elect, else nil. It
// has the shape of ownership.Runner (Run(ctx, name, fn)), so single-owner
// loops such as the deposit sender can run under the Lease.
func (s *Server) LeaderElector() *leader.Elector {
	if s.kube == nil {
		return nil
	}
	return s.kube.elector
}

// ReleaseBlocked returns pod -> reason of the pods whose keys the watcher
// holds although their objects are gone (nil without a watcher).
func (s *Server) ReleaseBlocked() map[string]string {
	if s.kube == nil || s.kube.watcher == nil {
		return nil
	}
	bl := s.kube.watcher.Blocked()
	out := make(map[string]string, len(bl))
	for _, b := range bl {
		out[b.Pod] = b.Rule + ": " + b.Reason
	}
	return out
}

// Watcher returns the pod watcher, or nil.
func (s *Server) Watcher() *watcher.Watcher {
	if s.kube == nil {
		return nil
	}
	return s.kube.watcher
}

// Store returns the server's store (for tests and embedding; the server
// closes it when Serve returns).
func (s *Server) Store() store.Store { return s.store }

// ownerGate is the watcher's Leader without leader election: true while this
// process owns the "pod-watcher" role of the store's ownership runner.
type ownerGate struct{ on atomic.Bool }

func (g *ownerGate) IsLeader() bool { return g.on.Load() }

func (g *ownerGate) run(ctx context.Context, r ownership.Runner) {
	_ = r.Run(ctx, "pod-watcher", func(ctx context.Context) error {
		g.on.Store(true)
		defer g.on.Store(false)
		<-ctx.Done()
		return ctx.Err()
	})
}
