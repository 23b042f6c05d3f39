package server

import (
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/kube/auth"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/reusegate"
)

// flags is an Options.Given of the named flags.
func flags(names ...string) func(string) bool {
	return func(f string) bool {
		for _, n := range names {
			if n == f {
				return true
			}
		}
		return false
	}
}

func TestSetDefaults(t *testing.T) {
	prod := Options{}
	prod.SetDefaults(false)
	k := prod.Kube
	if prod.GRPCAddr != ":8000" || prod.HTTPAddr != ":8080" || prod.LegacyGRPC || prod.ReuseDelay != allocator.DefaultReuseDelay ||
		prod.MaxKeysPerRequest != allocator.DefaultMaxKeysPerRequest || prod.Beacon.QuietEpochs != reusegate.DefaultQuietEpochs ||
		prod.ShutdownTimeout != 30*time.Second {
		t.Errorf("defaults outside dev mode: %+v", prod)
	}
	if !k.Watch || k.Auth != AuthToken || k.PodSelector != "pkmanager.io/validator=true" || k.TokenAudience != auth.DefaultAudience ||
		k.Resync != watcher.DefaultResync || k.NodeGracePeriod != watcher.DefaultNodeGracePeriod || k.LeaseName != "pkmanager" ||
		k.UIDConflict != allocator.UIDConflictWait || k.LeaderElect {
		t.Errorf("Kubernetes defaults outside dev mode: %+v", k)
	}
	if err := prod.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}

	dev := Options{Dev: true}
	dev.SetDefaults(true)
	if dev.GRPCAddr != "127.0.0.1:8000" || dev.HTTPAddr != "127.0.0.1:8080" || !dev.LegacyGRPC || dev.Kube.Watch || dev.Kube.Auth != AuthNone {
		t.Errorf("dev-mode defaults: %+v", dev)
	}
	if err := dev.Validate(); err != nil {
		t.Errorf("the dev defaults do not validate: %v", err)
	}

	// What the caller set stays, zero or not; the rest is the mode's.
	for name, c := range map[string]struct {
		o     Options
		dev   bool
		check func(Options) bool
	}{
		"given values are kept": {Options{GRPCAddr: "10.0.0.1:1", ReuseDelay: time.Second, Kube: KubeOptions{Auth: AuthToken, LeaseName: "l"}}, true,
			func(o Options) bool {
				return o.GRPCAddr == "10.0.0.1:1" && o.ReuseDelay == time.Second && o.Kube.Auth == AuthToken && o.Kube.LeaseName == "l"
			}},
		"--watch=false given":       {Options{Given: flags("watch")}, false, func(o Options) bool { return !o.Kube.Watch && o.Kube.Auth == AuthToken }},
		"--legacy-grpc=false --dev": {Options{Given: flags("legacy-grpc")}, true, func(o Options) bool { return !o.LegacyGRPC && o.Kube.Auth == AuthNone }},
		"--reuse-delay 0s given":    {Options{Given: flags("reuse-delay")}, false, func(o Options) bool { return o.ReuseDelay == 0 }},
		"--pod-selector '' given":   {Options{Given: flags("pod-selector")}, false, func(o Options) bool { return o.Kube.PodSelector == "" }},
		"--auth '' given":           {Options{Given: flags("auth", "grpc-addr")}, false, func(o Options) bool { return o.Kube.Auth == AuthToken && o.GRPCAddr == ":8000" }},
		"admin service accounts trimmed": {Options{Kube: KubeOptions{AdminServiceAccounts: []string{" ns/a ", "", "ns/b"}}}, false,
			func(o Options) bool { return strings.Join(o.Kube.AdminServiceAccounts, ",") == "ns/a,ns/b" }},
	} {
		o := c.o
		o.SetDefaults(c.dev)
		if !c.check(o) {
			t.Errorf("%s: %+v", name, o)
		}
	}
}

func TestValidate(t *testing.T) {
	loop := Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "localhost:0"}
	wide := Options{GRPCAddr: "0.0.0.0:9000", HTTPAddr: "127.0.0.1:0"}
	with := func(o Options, f func(*Options)) Options { f(&o); return o }
	for name, c := range map[string]struct {
		o    Options
		want string // "" = accepted
	}{
		"defaults on loopback":          {loop, ""},
		"token anywhere":                {with(wide, func(o *Options) { o.Kube.Auth = AuthToken }), ""},
		"none off loopback":             {wide, "--auth none on 0.0.0.0:9000, which is not a loopback address"},
		"none off loopback, dev hint":   {with(wide, func(o *Options) { o.Dev = true }), "--insecure-listen-any serves there anyway"},
		"dev insecure-listen-any":       {with(wide, func(o *Options) { o.Dev, o.InsecureListenAny = true, true }), ""},
		"insecure-listen-any, no dev":   {with(wide, func(o *Options) { o.InsecureListenAny = true }), "--insecure-listen-any is for --dev with --auth none only"},
		"insecure-listen-any and token": {with(loop, func(o *Options) { o.Dev, o.InsecureListenAny, o.Kube.Auth = true, true, AuthToken }), "--insecure-listen-any is for --dev"},
		"bad auth mode":                 {with(loop, func(o *Options) { o.Kube.Auth = "basic" }), `--auth "basic": use token or none`},
		"bad uid policy":                {with(loop, func(o *Options) { o.Kube.UIDConflict = "steal" }), `--uid-conflict: uid conflict policy "steal": use wait or fail`},
		"uid policy wait":               {with(loop, func(o *Options) { o.Kube.UIDConflict = allocator.UIDConflictWait }), ""},
		"negative reuse delay":          {with(loop, func(o *Options) { o.ReuseDelay = -time.Second }), "--reuse-delay must not be negative"},
		"max keys 0 not given":          {loop, ""},
		"max keys 0 given":              {with(loop, func(o *Options) { o.Given = flags("max-keys-per-request") }), "--max-keys-per-request must be at least 1"},
		"max keys negative":             {with(loop, func(o *Options) { o.MaxKeysPerRequest = -1 }), "--max-keys-per-request must be at least 1"},
		"quiet epochs 0 given":          {with(loop, func(o *Options) { o.Given = flags("quiet-epochs") }), "--quiet-epochs must be at least 1"},
		"shutdown timeout 0 given":      {with(loop, func(o *Options) { o.Given = flags("shutdown-timeout") }), "--shutdown-timeout must be positive"},
		"shutdown timeout negative":     {with(loop, func(o *Options) { o.ShutdownTimeout = -1 }), "--shutdown-timeout must be positive"},
		"negative spare pool":           {with(loop, func(o *Options) { o.SparePool = -1 }), "--spare-pool must not be negative"},
		"bad admin service account": {with(loop, func(o *Options) { o.Kube.AdminServiceAccounts = []string{"admin"} }),
			`--admin-service-account: admin service account "admin": want namespace/name`},
		"tls cert without key": {with(loop, func(o *Options) { o.TLS.CertFile = "c.pem" }), "--tls-cert and --tls-key go together"},
		"two errors at once": {with(wide, func(o *Options) { o.ReuseDelay, o.Kube.Auth = -1, "basic" }),
			"--auth \"basic\": use token or none\n--reuse-delay must not be negative"},
	} {
		err := c.o.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}
