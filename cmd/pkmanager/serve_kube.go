package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/kube/auth"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/server"
)

// Defaults of the Kubernetes flags.
const (
	defaultPodSelector = "pkmanager.io/validator=true"
	defaultLeaseName   = "pkmanager"
)

// kubeFlags are serve's Kubernetes, authentication and TLS flags.
type kubeFlags struct {
	watch          bool
	namespace      string
	selector       string
	kubeconfig     string
	resync         time.Duration
	nodeGrace      time.Duration
	authMode       string
	audience       string
	admins         []string
	tlsCert        string
	tlsKey         string
	leaderElect    bool
	leaseName      string
	leaseNamespace string
	uidConflict    string
	listenAny      bool
}

func (k *kubeFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&k.watch, "watch", false, "watch the validator pods and release the keys of pods that can no longer run (default: on, off with --dev)")
	fl.StringVar(&k.namespace, "watch-namespace", "", "namespace of the validator pods (default: the server's own namespace in a cluster)")
	fl.StringVar(&k.selector, "pod-selector", defaultPodSelector, "label selector of the validator pods (watched, and required of callers)")
	fl.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file, for running outside a cluster (default: in-cluster configuration)")
	fl.DurationVar(&k.resync, "watch-resync", watcher.DefaultResync, "period of the watcher's full reconciliation of the store against the API")
	fl.DurationVar(&k.nodeGrace, "node-grace-period", watcher.DefaultNodeGracePeriod, "a node whose heartbeat (its Lease in kube-node-lease) is older than this is not Ready, whatever its Ready condition says (the controller manager's node-monitor-grace-period)")
	fl.StringVar(&k.authMode, "auth", "", "caller authentication: token (projected ServiceAccount tokens, TokenReview) or none (refused unless every listener is loopback; see --insecure-listen-any) (default: token, none with --dev)")
	fl.BoolVar(&k.listenAny, "insecure-listen-any", false, "dev mode with --auth none: listen on addresses other than loopback too (anyone who reaches them can take any pod's keys)")
	fl.StringVar(&k.audience, "token-audience", auth.DefaultAudience, "audience the callers' tokens must carry")
	fl.StringSliceVar(&k.admins, "admin-service-account", nil, "ServiceAccount (namespace/name) allowed every admin operation without a SubjectAccessReview; repeatable or comma-separated")
	fl.StringVar(&k.tlsCert, "tls-cert", "", "PEM certificate (chain) for TLS on the gRPC and HTTP listeners; re-read when the file changes")
	fl.StringVar(&k.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fl.BoolVar(&k.leaderElect, "leader-elect", false, "elect, with a coordination.k8s.io Lease, the one replica that runs the watcher's releases and the deposit sender (for several replicas)")
	fl.StringVar(&k.leaseName, "leader-elect-lease-name", defaultLeaseName, "name of the leader election Lease")
	fl.StringVar(&k.leaseNamespace, "leader-elect-lease-namespace", "", "namespace of the leader election Lease (default --watch-namespace)")
	fl.StringVar(&k.uidConflict, "uid-conflict", string(allocator.UIDConflictWait), "when a pod name's keys are still held by an earlier pod of that name (StatefulSet recreation): wait (the request waits until they are released, within the client's timeout) or fail (answered at once with FailedPrecondition)")
}

// apply fills the Kubernetes, auth and TLS options and the mode-dependent
// defaults (watch and token auth outside dev mode, legacy gRPC only in dev
// mode unless asked for).
func (k *kubeFlags) apply(cmd *cobra.Command, dev bool, opts *server.Options, b *banner) error {
	changed := cmd.Flags().Changed
	if !changed("watch") {
		k.watch = !dev
	}
	if !changed("legacy-grpc") {
		opts.LegacyGRPC = dev
	}
	mode := k.authMode
	if mode == "" {
		mode = pick(dev, server.AuthNone, server.AuthToken)
	}
	if mode != server.AuthNone && mode != server.AuthToken {
		return fmt.Errorf("--auth %q: use token or none", k.authMode)
	}
	policy, err := allocator.ParseUIDConflict(k.uidConflict)
	if err != nil {
		return fmt.Errorf("--uid-conflict: %w", err)
	}
	var admins []string
	for _, a := range k.admins {
		if a = strings.TrimSpace(a); a != "" {
			if _, err := auth.ServiceAccountUsername(a); err != nil {
				return fmt.Errorf("--admin-service-account: %w", err)
			}
			admins = append(admins, a)
		}
	}
	if (k.tlsCert == "") != (k.tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	opts.TLS = server.TLSOptions{CertFile: k.tlsCert, KeyFile: k.tlsKey}
	opts.Kube = server.KubeOptions{
		Kubeconfig: k.kubeconfig, Watch: k.watch, Namespace: k.namespace, PodSelector: k.selector, Resync: k.resync, NodeGracePeriod: k.nodeGrace,
		Auth: mode, TokenAudience: k.audience, AdminServiceAccounts: admins,
		LeaderElect: k.leaderElect, LeaseName: k.leaseName, LeaseNamespace: k.leaseNamespace,
		UIDConflict: policy,
	}
	if k.listenAny && (!dev || mode != server.AuthNone) {
		return fmt.Errorf("--insecure-listen-any is for --dev with --auth none only")
	}
	opts.InsecureListenAny = k.listenAny
	if mode == server.AuthNone && !dev {
		b.Warnings = append(b.Warnings, "--auth none: callers are not authenticated; the server refuses to start unless every listener is on loopback")
	}
	if k.listenAny {
		b.Warnings = append(b.Warnings, "--insecure-listen-any: callers are not authenticated, and listeners other than loopback are allowed: anyone who reaches them can take any pod's keys (dev mode only)")
	}
	if opts.LegacyGRPC && !dev {
		b.Warnings = append(b.Warnings, "legacy gRPC service on: callers without a token are accepted for it (pods are checked by name against the API only); turn it off once clients send tokens")
	}
	if !k.watch && !dev {
		b.Warnings = append(b.Warnings, "pod watcher off (--watch=false): keys of dead pods are released only by `pkmanager release`")
	}
	return nil
}
