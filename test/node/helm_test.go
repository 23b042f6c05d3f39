package node_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHelmChartOnRealCluster installs deploy/helm/pkmanager with
// values-single.yaml (bbolt on a claim, as deploy/overlays/single) for real,
// with the helm binary scripts/k8s-node/build.sh builds, and the example
// validator StatefulSet beside it: its pods get their keys from the
// Helm-installed server (the key holders' reports), a deleted pod's keys go
// to its successor, and no key is held twice. The release and the namespace
// are removed at the end, so the next scenario finds the node to itself.
func TestHelmChartOnRealCluster(t *testing.T) {
	c := need(t)
	parallelInMainSpace(t)
	t0 := time.Now()
	d := c.helmInstall(t, "helm", mainSpace, nil)
	t.Logf("helm install (values-single.yaml): pkmanager Ready in %s", time.Since(t0).Round(time.Millisecond))
	// Helm's objects, not kustomize's: the release's labels are on them.
	if out := c.mustKubectl(t, "-n", d.ns, "get", "deployment,configmap,service,pvc,pdb,role,rolebinding,serviceaccount",
		"-l", "app.kubernetes.io/managed-by=Helm,app.kubernetes.io/instance=pkmanager", "-o", "name"); !strings.Contains(out, "deployment.apps/pkmanager") ||
		!strings.Contains(out, "persistentvolumeclaim/pkmanager-data") || !strings.Contains(out, "role.rbac.authorization.k8s.io/pkmanager-admin") {
		t.Fatalf("the release's objects:\n%s", out)
	}
	d.checkServerPod(t)

	w := c.watchHolders(d.reports)
	defer w.close()
	c.mustKubectl(t, "apply", "-k", filepath.Join(d.dir, "validators"), "--validate=strict")
	d.scale(t, 2)
	first := d.holders(t, "validator-0", "validator-1")
	w.check(t)
	c.mustKubectl(t, "-n", d.ns, "delete", "pod", "validator-1", "--wait=false")
	h := d.newHolder(t, "validator-1", first["validator-1"])
	t.Logf("validator-1 again: container %s, keys %v", short(h.Container), h.Pubkeys)
	w.check(t)
	d.scale(t, 0)
	d.gone(t, h, first["validator-0"])
	w.check(t)
	t.Logf("Helm scenario: %s", time.Since(t0).Round(time.Millisecond))
}

// helmInstall installs deploy/helm/pkmanager with values-single.yaml and the
// test's values as release sp.name in sp's namespace (its volume a hostPath
// PersistentVolume named pkmanager-data-NAME) and waits for it; the release,
// the namespace and the volume are removed at the end of the test.
func (c *cluster) helmInstall(t *testing.T, name string, sp space, config map[string]string) *deployment {
	t.Helper()
	d := c.prepare(t, name, sp, "", config)
	t.Cleanup(func() {
		if out, err := c.helm(context.Background(), "uninstall", sp.name, "--namespace", sp.ns, "--wait", "--timeout", "2m"); err != nil {
			t.Errorf("helm uninstall: %v\n%s", err, out)
		}
		c.deleteNamespace(t, sp)
		if _, err := c.kubectl(context.Background(), "delete", "pv", "pkmanager-data-"+name, "--ignore-not-found"); err != nil {
			t.Error(err)
		}
	})
	chart := filepath.Join(c.root, "deploy", "helm", "pkmanager")
	c.mustKubectl(t, "apply", "-f", filepath.Join(d.dir, "helm", "pv.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if out, err := c.helm(ctx, "install", sp.name, chart, "--namespace", sp.ns,
		"-f", filepath.Join(chart, "values-single.yaml"), "-f", filepath.Join(d.dir, "helm", "values.yaml"),
		"--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	return d
}

// helm runs the helm binary against the cluster, with its caches in the run's directory.
func (c *cluster) helm(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "helm"), append([]string{"--kubeconfig", c.kubecf}, args...)...)
	home := filepath.Join(c.kn, "helm")
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	return cmd.CombinedOutput()
}
