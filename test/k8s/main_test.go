// Package k8s_test proves the Kubernetes features against a real
// kube-apiserver and etcd (internal/kube/kubetest): the pod watcher's release
// rules, pod-bound caller authentication, leader election and the deploy/
// manifests. One API server is shared by every test; each scenario works in
// its own namespace and deletes the nodes it creates.
//
// Binaries: scripts/k8s-test-binaries.sh (or $PKM_K8S_ASSETS). Without them
// the tests skip, under CI=true they fail.
package k8s_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/pkmanager/pkmanager/internal/kube/kubetest"
	"github.com/pkmanager/pkmanager/internal/store"
)

var (
	env        *kubetest.Env
	skipReason string
	repoRoot   string
)

// Labels and names shared by the scenarios.
const (
	selector      = "pkmanager.io/validator=true"
	validatorSA   = "validator"
	pkmanagerSA   = "pkmanager"
	adminSA       = "pkmanager-admin"
	watcherResync = 300 * time.Millisecond
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("PKM_TEST_LOGS") == "" {
		klog.SetSlogLogger(slog.New(slog.DiscardHandler)) // client-go's own logging
	}
	var err error
	if repoRoot, err = kubetest.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	assets, why := kubetest.Assets()
	if assets == "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: kube-apiserver/etcd binaries missing under CI=true: %s\n", why)
			return 1
		}
		skipReason = why
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "pkm-k8s-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	env, err = kubetest.Start(ctx, assets, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "start kube-apiserver: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kube-apiserver + etcd ready in %s (%s)\n", time.Since(t0).Round(time.Millisecond), env.Host)
	code := m.Run()
	env.Stop()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "control-plane logs kept in %s\n", dir)
	}
	return code
}

func needEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		kubetest.SkipOrFail(t, skipReason)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// cluster is one scenario's namespace, with pkmanager's RBAC from
// deploy/base applied and a client authenticated as its ServiceAccount.
type cluster struct {
	t   *testing.T
	ctx context.Context
	ns  string
	// pkm is a client configuration of the pkmanager ServiceAccount: the
	// server under test runs with exactly the shipped RBAC.
	pkm *rest.Config
	cs  kubernetes.Interface // admin

	beatMu sync.Mutex
	beats  map[string]chan struct{} // node -> closes to stop its heartbeat
}

func newCluster(t *testing.T, prefix string) *cluster {
	t.Helper()
	needEnv(t)
	ctx := testCtx(t)
	b := make([]byte, 3)
	rand.Read(b)
	c := &cluster{t: t, ctx: ctx, ns: prefix + "-" + hex.EncodeToString(b), cs: env.Client}
	if err := env.Namespace(ctx, c.ns); err != nil {
		t.Fatal(err)
	}
	c.applyRBAC()
	for _, sa := range []string{validatorSA} {
		if err := env.ServiceAccount(ctx, c.ns, sa); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := env.ServiceAccountToken(ctx, c.ns, pkmanagerSA)
	if err != nil {
		t.Fatal(err)
	}
	c.pkm = &rest.Config{Host: env.Host, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200}
	return c
}

// applyRBAC creates the objects of deploy/base/rbac.yaml and
// admin-rbac.yaml in the scenario's namespace (cluster-scoped bindings get
// the namespace appended to their names).
func (c *cluster) applyRBAC() {
	c.t.Helper()
	for _, f := range []string{"rbac.yaml", "admin-rbac.yaml", "serviceaccount.yaml"} {
		for _, obj := range decodeYAML(c.t, filepath.Join(repoRoot, "deploy", "base", f)) {
			var err error
			switch o := obj.(type) {
			case *rbacv1.Role:
				o.Namespace = c.ns
				_, err = c.cs.RbacV1().Roles(c.ns).Create(c.ctx, o, metav1.CreateOptions{})
			case *rbacv1.RoleBinding:
				o.Namespace = c.ns
				for i := range o.Subjects {
					o.Subjects[i].Namespace = c.ns
				}
				_, err = c.cs.RbacV1().RoleBindings(c.ns).Create(c.ctx, o, metav1.CreateOptions{})
			case *rbacv1.ClusterRole:
				_, err = c.cs.RbacV1().ClusterRoles().Create(c.ctx, o, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					err = nil
				}
			case *rbacv1.ClusterRoleBinding:
				o.Name += "-" + c.ns
				for i := range o.Subjects {
					o.Subjects[i].Namespace = c.ns
				}
				_, err = c.cs.RbacV1().ClusterRoleBindings().Create(c.ctx, o, metav1.CreateOptions{})
			case *corev1.ServiceAccount:
				o.Namespace = c.ns
				_, err = c.cs.CoreV1().ServiceAccounts(c.ns).Create(c.ctx, o, metav1.CreateOptions{})
			default:
				c.t.Fatalf("%s: unexpected object %T", f, obj)
			}
			if err != nil {
				c.t.Fatalf("%s: create %T: %v", f, obj, err)
			}
		}
	}
}

func decodeYAML(t *testing.T, path string) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []runtime.Object
	for _, doc := range strings.Split(string(b), "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, obj)
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// node creates a node (deleted at the end of the test) with the given
// readiness; its name is prefixed with the namespace.
func (c *cluster) node(name string, ready bool) string {
	c.t.Helper()
	full := c.ns + "-" + name
	if _, err := c.cs.CoreV1().Nodes().Create(c.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: full}}, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		err := c.cs.CoreV1().Nodes().Delete(context.Background(), full, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			c.t.Errorf("delete node %s: %v", full, err)
		}
	})
	c.setNodeReady(full, ready)
	c.heartbeat(full)
	return full
}

// heartbeat keeps the node's Lease in kube-node-lease renewed every 2 s, as
// a kubelet does, until the test ends or stopHeartbeat.
func (c *cluster) heartbeat(node string) {
	c.t.Helper()
	now := metav1.NewMicroTime(time.Now())
	dur := int32(40)
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: &dur, RenewTime: &now}}
	leases := c.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	if _, err := leases.Create(c.ctx, l, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	c.beatMu.Lock()
	if c.beats == nil {
		c.beats = map[string]chan struct{}{}
	}
	c.beats[node] = stop
	c.beatMu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
			cur, err := leases.Get(c.ctx, node, metav1.GetOptions{})
			if err != nil {
				continue
			}
			rt := metav1.NewMicroTime(time.Now())
			cur.Spec.RenewTime = &rt
			_, _ = leases.Update(c.ctx, cur, metav1.UpdateOptions{})
		}
	}()
	c.t.Cleanup(func() {
		c.stopHeartbeat(node)
		<-done
		_ = leases.Delete(context.Background(), node, metav1.DeleteOptions{})
	})
}

// stopHeartbeat stops renewing the node's Lease, as a kubelet that lost
// contact with the API server (or a dead node) does.
func (c *cluster) stopHeartbeat(node string) {
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	if stop, ok := c.beats[node]; ok {
		close(stop)
		delete(c.beats, node)
	}
}

func (c *cluster) setNodeReady(name string, ready bool) {
	c.t.Helper()
	n, err := c.cs.CoreV1().Nodes().Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, LastHeartbeatTime: now, LastTransitionTime: now, Reason: "Test"}}
	if _, err := c.cs.CoreV1().Nodes().UpdateStatus(c.ctx, n, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) taintOutOfService(name string) {
	c.t.Helper()
	n, err := c.cs.CoreV1().Nodes().Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "node.kubernetes.io/out-of-service", Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute})
	if _, err := c.cs.CoreV1().Nodes().Update(c.ctx, n, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) deleteNode(name string) {
	c.t.Helper()
	if err := c.cs.CoreV1().Nodes().Delete(c.ctx, name, metav1.DeleteOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// pod creates a validator pod bound to node (phase Running when node is set).
func (c *cluster) pod(name, node string, labels map[string]string) *corev1.Pod {
	c.t.Helper()
	if labels == nil {
		labels = map[string]string{"pkmanager.io/validator": "true"}
	}
	p, err := c.cs.CoreV1().Pods(c.ns).Create(c.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: validatorSA, NodeName: node,
			Containers: []corev1.Container{{Name: "validator", Image: "validator"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	if node != "" {
		p = c.setPhase(name, corev1.PodRunning)
	}
	return p
}

func (c *cluster) setPhase(name string, phase corev1.PodPhase) *corev1.Pod {
	c.t.Helper()
	p, err := c.cs.CoreV1().Pods(c.ns).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	p.Status.Phase = phase
	p, err = c.cs.CoreV1().Pods(c.ns).UpdateStatus(c.ctx, p, metav1.UpdateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// forceDelete removes the pod object at once (grace period 0), as
// `kubectl delete --force` or the kubelet's final delete do.
func (c *cluster) forceDelete(name string) {
	c.t.Helper()
	zero := int64(0)
	if err := c.cs.CoreV1().Pods(c.ns).Delete(c.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		c.t.Fatal(err)
	}
}

// gracefulDelete sets the deletionTimestamp; without a kubelet the object
// stays (terminating).
func (c *cluster) gracefulDelete(name string) {
	c.t.Helper()
	grace := int64(300)
	if err := c.cs.CoreV1().Pods(c.ns).Delete(c.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		c.t.Fatal(err)
	}
	p, err := c.cs.CoreV1().Pods(c.ns).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp == nil {
		c.t.Fatalf("pod %s not terminating after a graceful delete: %v", name, err)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s (last: %s)", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// podKeys returns the keys assigned to pod (by pubkey) with their UID.
func podKeys(t *testing.T, ctx context.Context, st store.Store, pod string) []store.Key {
	t.Helper()
	var out []store.Key
	if err := st.ListKeys(ctx, store.ListOptions{Pod: pod, States: []store.State{store.StateAssigned}}, func(k store.Key) error {
		out = append(out, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func keyStates(t *testing.T, ctx context.Context, st store.Store, keys []store.Key) map[store.State]int {
	t.Helper()
	out := map[store.State]int{}
	for _, k := range keys {
		got, err := st.GetKey(ctx, k.Pubkey)
		if err != nil {
			t.Fatal(err)
		}
		out[got.State]++
	}
	return out
}

func auditFor(t *testing.T, ctx context.Context, st store.Store, pod, action string) []store.AuditEvent {
	t.Helper()
	evs, err := st.ListAudit(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, e := range evs {
		if e.Pod == pod && e.Action == action {
			out = append(out, e)
		}
	}
	return out
}
