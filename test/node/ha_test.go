package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// TestHAOverlayOnRealCluster applies deploy/overlays/ha for real: three
// pkmanager replicas on the machine's PostgreSQL (reached by the pods through
// a proxy on the node's bridge address), leader election on a Lease. Two
// validator pods get their keys; the leader is SIGKILLed and a validator pod
// replaced: the new pod gets keys once another replica, now leader, has
// released the old pod's. No key is held twice (runtime samples and the key
// holders' reports). The namespace is deleted at the end, so that the next
// scenario in it starts afresh.
func TestHAOverlayOnRealCluster(t *testing.T) {
	c := need(t)
	parallelInMainSpace(t)
	store := pgtest.NewSchema(t)
	_, viaBridge := pgtest.NewProxyAt(t, store, c.gateway(t)+":0")
	t.Cleanup(func() { c.deleteNamespace(t, mainSpace) })
	t0 := time.Now()
	d := c.deploy(t, "ha", viaBridge)
	t.Logf("deploy/overlays/ha applied, 3 replicas Ready in %s", time.Since(t0).Round(time.Millisecond))
	ids := d.serverContainers(t, 3)
	for _, id := range ids {
		d.checkContainer(t, id)
	}

	w := c.watchHolders(d.reports)
	defer w.close()
	c.mustKubectl(t, "apply", "-k", filepath.Join(d.dir, "validators"), "--validate=strict")
	d.scale(t, 2)
	first := d.holders(t, "validator-0", "validator-1")
	w.check(t)

	lease, err := c.cs.CoordinationV1().Leases(d.ns).Get(context.Background(), "pkmanager", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("leader Lease: %v", err)
	}
	leader := *lease.Spec.HolderIdentity
	killed := false
	for _, id := range ids {
		var in inspected
		if err := c.crictlJSON(&in, "inspect", "-o", "json", id); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(leader, in.Status.Labels["io.kubernetes.pod.name"]) {
			if err := syscall.Kill(in.Info.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			t.Logf("leader %s (container %s) killed", leader, short(id))
			killed = true
		}
	}
	if !killed {
		t.Fatalf("no running replica is the leader %q", leader)
	}
	c.mustKubectl(t, "-n", d.ns, "delete", "pod", "validator-1", "--wait=false")
	h := d.newHolder(t, "validator-1", first["validator-1"])
	t.Logf("validator-1 again: container %s, keys %v", short(h.Container), h.Pubkeys)
	if h := d.holders(t, "validator-0"); h["validator-0"].Container != first["validator-0"].Container {
		t.Errorf("validator-0's key holder changed while the leader was replaced")
	}
	w.check(t)
	t.Logf("HA scenario: %s", time.Since(t0).Round(time.Millisecond))
}

// gateway is the node's bridge address, which pods reach.
func (c *cluster) gateway(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.kn, "state", "ports.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "GW="); ok {
			return v
		}
	}
	t.Fatal("no GW in ports.env")
	return ""
}

// deleteNamespace deletes sp's namespace and its server's cluster-wide
// objects, and waits until they are gone.
func (c *cluster) deleteNamespace(t *testing.T, sp space) {
	t.Helper()
	ns := sp.ns
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"delete", "namespace", ns, "--wait=true", "--timeout=150s", "--ignore-not-found"},
		{"delete", "clusterrole,clusterrolebinding", sp.name, "--ignore-not-found"},
	} {
		if _, err := c.kubectl(ctx, args...); err != nil {
			t.Error(err)
		}
	}
	for ctx.Err() == nil {
		if _, err := c.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("namespace %s not gone", ns)
}
