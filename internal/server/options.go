package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/kube/auth"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/reusegate"
)

// Defaults of Options (SetDefaults; serve's flags show them).
const (
	DevGRPCAddr            = "127.0.0.1:8000"
	DevHTTPAddr            = "127.0.0.1:8080"
	DefaultGRPCAddr        = ":8000"
	DefaultHTTPAddr        = ":8080"
	DefaultShutdownTimeout = 30 * time.Second
	DefaultPodSelector     = "pkmanager.io/validator=true"
	DefaultLeaseName       = "pkmanager"
)

// given reports whether the option of flag was set by the caller: by
// Options.Given when there is one, else by not being its zero value.
func (o *Options) given(flag string, zero bool) bool {
	if o.Given != nil {
		return o.Given(flag)
	}
	return !zero
}

// SetDefaults gives every option the caller did not set (Options.Given;
// without it, every option at its zero value) the default of the mode: with
// dev, loopback addresses, no authentication, no pod watcher and the legacy
// gRPC service; otherwise all interfaces, token authentication and the pod
// watcher. serve binds its flags to the fields of an Options and calls it
// with its FlagSet's Changed as Given; the flags' shown defaults are
// those of SetDefaults(false).
func (o *Options) SetDefaults(dev bool) {
	// An empty string is no setting (--auth "" is the mode's default),
	// except where it says so (--pod-selector "": every pod).
	str := func(p *string, def string) {
		if *p == "" {
			*p = def
		}
	}
	dur := func(p *time.Duration, flag string, def time.Duration) {
		if !o.given(flag, *p == 0) {
			*p = def
		}
	}
	num := func(p *int, flag string, def int) {
		if !o.given(flag, *p == 0) {
			*p = def
		}
	}
	boolean := func(p *bool, flag string, def bool) {
		if !o.given(flag, !*p) {
			*p = def
		}
	}
	str(&o.GRPCAddr, pick(dev, DevGRPCAddr, DefaultGRPCAddr))
	str(&o.HTTPAddr, pick(dev, DevHTTPAddr, DefaultHTTPAddr))
	boolean(&o.LegacyGRPC, "legacy-grpc", dev)
	dur(&o.ReuseDelay, "reuse-delay", allocator.DefaultReuseDelay)
	num(&o.MaxKeysPerRequest, "max-keys-per-request", allocator.DefaultMaxKeysPerRequest)
	num(&o.Beacon.QuietEpochs, "quiet-epochs", reusegate.DefaultQuietEpochs)
	dur(&o.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout)

	k := &o.Kube
	boolean(&k.Watch, "watch", !dev)
	str(&k.Auth, pick(dev, AuthNone, AuthToken))
	if !o.given("pod-selector", k.PodSelector == "") {
		k.PodSelector = DefaultPodSelector
	}
	str(&k.TokenAudience, auth.DefaultAudience)
	dur(&k.Resync, "watch-resync", watcher.DefaultResync)
	dur(&k.NodeGracePeriod, "node-grace-period", watcher.DefaultNodeGracePeriod)
	str(&k.LeaseName, DefaultLeaseName)
	str((*string)(&k.UIDConflict), string(allocator.UIDConflictWait))
	var admins []string
	for _, a := range k.AdminServiceAccounts {
		if a = strings.TrimSpace(a); a != "" {
			admins = append(admins, a)
		}
	}
	k.AdminServiceAccounts = admins
	o.setDepositDefaults(dev)
}

// Validate checks the options before anything is opened or bound; each
// error names the flag. Zero values mean what the fields' documentation
// says (no authentication, UID conflicts fail, the default request bound,
// ...); a zero the caller gave (Options.Given) where zero is no setting is
// refused. New calls it; the bound addresses are checked again once bound
// (checkListeners).
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	k := o.Kube
	switch k.Auth {
	case "", AuthNone, AuthToken:
	default:
		bad("--auth %q: use token or none", k.Auth)
	}
	if _, err := allocator.ParseUIDConflict(string(k.UIDConflict)); k.UIDConflict != "" && err != nil {
		bad("--uid-conflict: %w", err)
	}
	if o.ReuseDelay < 0 {
		bad("--reuse-delay must not be negative")
	}
	if n := o.MaxKeysPerRequest; n < 0 || n == 0 && o.given("max-keys-per-request", true) {
		bad("--max-keys-per-request must be at least 1")
	}
	if n := o.Beacon.QuietEpochs; n < 0 || n == 0 && o.given("quiet-epochs", true) {
		bad("--quiet-epochs must be at least 1")
	}
	if d := o.ShutdownTimeout; d < 0 || d == 0 && o.given("shutdown-timeout", true) {
		bad("--shutdown-timeout must be positive")
	}
	if o.SparePool < 0 {
		bad("--spare-pool must not be negative")
	}
	for _, a := range k.AdminServiceAccounts {
		if _, err := auth.ServiceAccountUsername(a); err != nil {
			bad("--admin-service-account: %w", err)
		}
	}
	if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
		bad("--tls-cert and --tls-key go together")
	}
	if o.InsecureListenAny && (!o.Dev || k.Auth == AuthToken) {
		bad("--insecure-listen-any is for --dev with --auth none only")
	} else if k.Auth != AuthToken && !o.InsecureListenAny {
		for _, a := range []string{o.GRPCAddr, o.HTTPAddr} {
			if !loopbackAddr(a) {
				errs = append(errs, authNoneError(a, o.Dev))
			}
		}
	}
	for _, err := range []error{o.validateDeposits(), o.validateRequireActive()} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
