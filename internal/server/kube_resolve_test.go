package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/allocator"
)

func TestCheckKube(t *testing.T) {
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
		"bad auth mode":                 {with(loop, func(o *Options) { o.Kube.Auth = "basic" }), `auth mode "basic": use token or none`},
		"bad uid policy":                {with(loop, func(o *Options) { o.Kube.UIDConflict = "steal" }), `uid conflict policy "steal": use wait or fail`},
		"uid policy wait":               {with(loop, func(o *Options) { o.Kube.UIDConflict = allocator.UIDConflictWait }), ""},
	} {
		err := checkKube(c.o)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}

func TestResolveKube(t *testing.T) {
	env := kubeEnv{
		namespace: func() (string, error) { return "own-ns", nil },
		podName:   "pkmanager-0",
		hostname:  func() (string, error) { return "host-a", nil },
	}
	outside := kubeEnv{
		namespace: func() (string, error) { return "", errors.New("no such file") },
		hostname:  func() (string, error) { return "host-a", nil },
	}

	ko, sel, err := resolveKube(KubeOptions{Watch: true, PodSelector: "app=validator"}, env)
	if err != nil || ko.Namespace != "own-ns" || sel.String() != "app=validator" {
		t.Fatalf("in a cluster: %+v, %v, %v", ko, sel, err)
	}
	if ko.LeaseName != "" || ko.Identity != "" {
		t.Errorf("lease defaults without --leader-elect: %q %q", ko.LeaseName, ko.Identity)
	}
	ko, _, err = resolveKube(KubeOptions{LeaderElect: true}, env)
	if err != nil || ko.LeaseName != "pkmanager" || ko.LeaseNamespace != "own-ns" || ko.Identity != "pkmanager-0" {
		t.Errorf("leader election defaults: %+v, %v", ko, err)
	}
	ko, _, err = resolveKube(KubeOptions{LeaderElect: true, Namespace: "ns", LeaseName: "l", LeaseNamespace: "lns", Identity: "me"}, outside)
	if err != nil || ko.Namespace != "ns" || ko.LeaseName != "l" || ko.LeaseNamespace != "lns" || ko.Identity != "me" {
		t.Errorf("given options are kept: %+v, %v", ko, err)
	}
	ko, _, err = resolveKube(KubeOptions{LeaderElect: true, Namespace: "ns"}, outside)
	if err != nil || ko.Identity != "host-a" || ko.LeaseNamespace != "ns" {
		t.Errorf("identity without $POD_NAME: %+v, %v", ko, err)
	}
	broken := outside
	broken.hostname = func() (string, error) { return "", errors.New("uname failed") }
	if _, _, err := resolveKube(KubeOptions{LeaderElect: true, Namespace: "ns"}, broken); err == nil || !strings.Contains(err.Error(), "leader election identity: uname failed") {
		t.Errorf("no identity: %v", err)
	}
	if _, _, err := resolveKube(KubeOptions{Watch: true}, outside); err == nil || !strings.Contains(err.Error(), "give --watch-namespace") {
		t.Errorf("outside a cluster without --watch-namespace: %v", err)
	}
	if _, _, err := resolveKube(KubeOptions{Namespace: "ns", PodSelector: "app in ("}, env); err == nil || !strings.Contains(err.Error(), `pod selector "app in ("`) {
		t.Errorf("bad selector: %v", err)
	}
}
