package main

import (
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/server"
)

// registerKubeFlags binds serve's Kubernetes, authentication and TLS flags
// to o's fields; d has the defaults they show (server.Options.SetDefaults).
func registerKubeFlags(fl *pflag.FlagSet, o *server.Options, d server.Options) {
	k, dk := &o.Kube, d.Kube
	fl.BoolVar(&k.Watch, "watch", false, "watch the validator pods and release the keys of pods that can no longer run (default: on, off with --dev)")
	fl.StringVar(&k.Namespace, "watch-namespace", "", "namespace of the validator pods (default: the server's own namespace in a cluster)")
	fl.StringVar(&k.PodSelector, "pod-selector", dk.PodSelector, "label selector of the validator pods (watched, and required of callers)")
	fl.StringVar(&k.Kubeconfig, "kubeconfig", "", "kubeconfig file, for running outside a cluster (default: in-cluster configuration)")
	fl.DurationVar(&k.Resync, "watch-resync", dk.Resync, "period of the watcher's full reconciliation of the store against the API")
	fl.DurationVar(&k.NodeGracePeriod, "node-grace-period", dk.NodeGracePeriod, "a node whose heartbeat (its Lease in kube-node-lease) is older than this is not Ready, whatever its Ready condition says (the controller manager's node-monitor-grace-period)")
	fl.StringVar(&k.Auth, "auth", "", "caller authentication: token (projected ServiceAccount tokens, TokenReview) or none (refused unless every listener is loopback; see --insecure-listen-any) (default: token, none with --dev)")
	fl.BoolVar(&o.InsecureListenAny, "insecure-listen-any", false, "dev mode with --auth none: listen on addresses other than loopback too (anyone who reaches them can take any pod's keys)")
	fl.StringVar(&k.TokenAudience, "token-audience", dk.TokenAudience, "audience the callers' tokens must carry")
	fl.StringSliceVar(&k.AdminServiceAccounts, "admin-service-account", nil, "ServiceAccount (namespace/name) allowed every admin operation without a SubjectAccessReview; repeatable or comma-separated")
	fl.StringVar(&o.TLS.CertFile, "tls-cert", "", "PEM certificate (chain) for TLS on the gRPC and HTTP listeners; re-read when the file changes")
	fl.StringVar(&o.TLS.KeyFile, "tls-key", "", "PEM private key for --tls-cert")
	fl.BoolVar(&k.LeaderElect, "leader-elect", false, "elect, with a coordination.k8s.io Lease, the one replica that runs the watcher's releases and the deposit sender (for several replicas)")
	fl.StringVar(&k.LeaseName, "leader-elect-lease-name", dk.LeaseName, "name of the leader election Lease")
	fl.StringVar(&k.LeaseNamespace, "leader-elect-lease-namespace", "", "namespace of the leader election Lease (default --watch-namespace)")
	fl.StringVar((*string)(&k.UIDConflict), "uid-conflict", string(dk.UIDConflict), "when a pod name's keys are still held by an earlier pod of that name (StatefulSet recreation): wait (the request waits until they are released, within the client's timeout) or fail (answered at once with FailedPrecondition)")
}

// kubeWarnings are the banner's warnings about the Kubernetes, auth and
// legacy options outside dev mode (o has its defaults).
func kubeWarnings(o server.Options) []string {
	var w []string
	if o.Kube.Auth == server.AuthNone && !o.Dev {
		w = append(w, "--auth none: callers are not authenticated; the server refuses to start unless every listener is on loopback")
	}
	if o.InsecureListenAny {
		w = append(w, "--insecure-listen-any: callers are not authenticated, and listeners other than loopback are allowed: anyone who reaches them can take any pod's keys (dev mode only)")
	}
	if o.LegacyGRPC && !o.Dev {
		w = append(w, "legacy gRPC service on: callers without a token are accepted for it (pods are checked by name against the API only); turn it off once clients send tokens")
	}
	if !o.Kube.Watch && !o.Dev {
		w = append(w, "pod watcher off (--watch=false): keys of dead pods are released only by `pkmanager release`")
	}
	return w
}
