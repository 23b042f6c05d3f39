package server

import (
	"errors"
	"strings"
	"testing"
)

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
