// Package node_test runs pkmanager on a real one-node Kubernetes: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and a
// kubelet on containerd + runc (scripts/k8s-node/cluster.sh), the project's
// image built here without pulling anything (scripts/k8s-node/images.sh), the
// deploy/ manifests applied for real and validator pods whose validator
// container is a key holder (test/node/keyholder) reporting, with timestamps,
// which keys it has loaded. What is proven is asserted from those reports and
// from the container runtime (crictl), never from pkmanager's own view.
//
// Needs root, Debian's containerd/runc/CNI plugins (scripts/k8s-node/prereqs.sh)
// and the cluster binaries (scripts/k8s-node/build.sh, or $PKM_K8S_NODE).
// Without them the tests skip; under CI=true they fail.
package node_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pkmanager/pkmanager/internal/kube/kubetest"
)

// The cluster every test here shares (one per machine: the bridge and the
// kubelet's fixed host paths), started by the first test that needs it and
// taken down after the last.
var (
	startOnce sync.Once
	cl        *cluster
	clErr     error // why there is no cluster
	clMissing bool  // no binaries or no root: skip, or fail under CI=true
)

type cluster struct {
	root   string // repository root
	kn     string // private work directory of this run: state, logs, reports
	bin    string // cluster binaries
	kubecf string
	cs     kubernetes.Interface
	images map[string]string // image reference -> manifest digest
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cl != nil {
		if out, err := cl.script(context.Background(), 2*time.Minute, "cluster.sh", "down"); err != nil {
			fmt.Fprintf(os.Stderr, "cluster down: %v\n%s\n", err, out)
			code = 1
		}
		if code == 0 && os.Getenv("PKM_TEST_KEEP") == "" {
			os.RemoveAll(cl.kn)
		} else {
			fmt.Fprintf(os.Stderr, "logs and reports kept in %s\n", cl.kn)
		}
	}
	os.Exit(code)
}

// need returns the running cluster, starting it on first use; without
// binaries or root the test skips (fails under CI=true).
func need(t *testing.T) *cluster {
	t.Helper()
	startOnce.Do(startCluster)
	if clMissing {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no real cluster under CI=true: %v", clErr)
		}
		t.Skipf("no real cluster: %v", clErr)
	}
	if clErr != nil {
		t.Fatal(clErr)
	}
	return cl
}

func startCluster() {
	root, err := kubetest.ModuleRoot()
	if err != nil {
		clErr = err
		return
	}
	bin, why := kubetest.NodeBinaries()
	if bin != "" && os.Geteuid() != 0 {
		bin, why = "", "the real cluster needs root (containerd, runc, cgroups, mounts, a bridge)"
	}
	if bin == "" {
		clErr, clMissing = errors.New(why), true
		return
	}
	kn, err := os.MkdirTemp("", "pkm-kn-")
	if err != nil {
		clErr = err
		return
	}
	c := &cluster{root: root, kn: kn, bin: bin, kubecf: filepath.Join(kn, "kubeconfig", "admin.kubeconfig")}
	cl = c // from here on TestMain takes it down
	t0 := time.Now()
	// The owner pid: should this process die without running down (a test
	// timeout, a signal), the cluster's holder takes it all down.
	if out, err := c.script(context.Background(), 4*time.Minute, "cluster.sh", "up", fmt.Sprint(os.Getpid())); err != nil {
		clErr = fmt.Errorf("cluster up: %w\n%s", err, out)
		return
	}
	fmt.Fprintf(os.Stderr, "real cluster: node Ready in %s (%s)\n", time.Since(t0).Round(time.Millisecond), kn)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubecf)
	if err != nil {
		clErr = err
		return
	}
	cfg.QPS, cfg.Burst = 50, 100
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		clErr = err
		return
	}
	t1 := time.Now()
	if err := c.buildImages(); err != nil {
		clErr = fmt.Errorf("images: %w", err)
		return
	}
	fmt.Fprintf(os.Stderr, "images built and imported in %s: %v\n", time.Since(t1).Round(time.Millisecond), c.images)
}

// script runs scripts/k8s-node/NAME with this run's KN and BIN.
func (c *cluster) script(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(c.root, "scripts", "k8s-node", name)}, args...)...)
	cmd.Env = append(os.Environ(), "KN="+c.kn, "BIN="+c.bin)
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// buildImages builds the pkmanager and key holder images (no pull, no image
// tool) and imports them into the cluster's containerd; it also checks that
// packing the same files again gives the same digest.
func (c *cluster) buildImages() error {
	dir := filepath.Join(c.kn, "images")
	out, err := c.script(context.Background(), 10*time.Minute, "images.sh", dir)
	if err != nil {
		return fmt.Errorf("images.sh: %w\n%s", err, out)
	}
	c.images = map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || !strings.HasPrefix(f[1], "sha256:") {
			continue
		}
		c.images[f[0]] = f[1]
		if o, err := exec.Command("ctr", "--address", filepath.Join(c.kn, "containerd", "containerd.sock"), "-n", "k8s.io",
			"images", "import", "--snapshotter", "overlayfs", f[2]).CombinedOutput(); err != nil {
			return fmt.Errorf("ctr images import %s: %w\n%s", f[2], err, o)
		}
	}
	if len(c.images) != 3 {
		return fmt.Errorf("images.sh printed %q, want three images", out)
	}
	again, err := exec.Command("bash", filepath.Join(c.root, "scripts", "k8s-node", "image.sh"), "localhost/pkmanager:test",
		filepath.Join(dir, "rootfs-pkmanager"), filepath.Join(dir, "again.oci.tar"),
		"--entrypoint", `["/usr/local/bin/pkmanager"]`, "--cmd", `["serve"]`, "--user", "65532:65532",
		"--ports", `{"8000/tcp":{},"8080/tcp":{}}`).Output()
	if err != nil {
		return fmt.Errorf("image.sh again: %w", err)
	}
	if got := strings.TrimSpace(string(again)); got != c.images["localhost/pkmanager:test"] {
		return fmt.Errorf("the same files packed twice gave %s and %s: the image is not reproducible", c.images["localhost/pkmanager:test"], got)
	}
	// the Dockerfile's runtime settings are the test image's
	got, err := imageConfig(filepath.Join(dir, "pkmanager.oci.tar"))
	if err != nil {
		return err
	}
	want, err := dockerfileRuntime(filepath.Join(c.root, "Dockerfile"))
	if err != nil {
		return err
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			return fmt.Errorf("the test image's %s is %v, the Dockerfile's %v: keep scripts/k8s-node/images.sh in step", k, got[k], v)
		}
	}
	if len(want) != 4 {
		return fmt.Errorf("the Dockerfile's last stage sets %v, want USER, EXPOSE, ENTRYPOINT and CMD", want)
	}
	var imgs struct {
		Images []struct {
			RepoTags []string `json:"repoTags"`
		} `json:"images"`
	}
	if err := c.crictlJSON(&imgs, "images", "-o", "json"); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, im := range imgs.Images {
		for _, t := range im.RepoTags {
			seen[t] = true
		}
	}
	for ref := range c.images {
		if !seen[ref] {
			return fmt.Errorf("%s is not in the runtime's images after the import", ref)
		}
	}
	return nil
}

// kubectl runs kubectl with the admin kubeconfig.
func (c *cluster) kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubecf}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (c *cluster) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := c.kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// crictlJSON runs crictl against the cluster's containerd and decodes its JSON.
func (c *cluster) crictlJSON(v any, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "crictl"), append([]string{"--config", filepath.Join(c.kn, "containerd", "crictl.yaml")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return json.Unmarshal(out, v)
}

// eventually polls cond every 200 ms until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last error: %v)", what, timeout, errors.Join(last))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// imageConfig reads the image config of a single-image OCI layout tar.
func imageConfig(file string) (map[string]any, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Name == "index.json" || (strings.HasPrefix(h.Name, "blobs/sha256/") && h.Size < 1<<20) {
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			blobs[strings.TrimPrefix(h.Name, "blobs/sha256/")] = b
		}
	}
	var index, manifest struct {
		Manifests []struct{ Digest string } `json:"manifests"`
		Config    struct{ Digest string }   `json:"config"`
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		return nil, fmt.Errorf("%s: index.json: %v", file, err)
	}
	if err := json.Unmarshal(blobs[strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")], &manifest); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", file, err)
	}
	var cfg struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(blobs[strings.TrimPrefix(manifest.Config.Digest, "sha256:")], &cfg); err != nil {
		return nil, fmt.Errorf("%s: config: %w", file, err)
	}
	return cfg.Config, nil
}

// dockerfileRuntime reads USER, EXPOSE, ENTRYPOINT and CMD of the Dockerfile's
// last stage, in the image config's terms.
func dockerfileRuntime(file string) (map[string]any, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	for _, l := range strings.Split(string(b), "\n") {
		word, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch word {
		case "FROM":
			out = map[string]any{}
		case "USER":
			out["User"] = rest
		case "EXPOSE":
			ports := map[string]any{}
			for _, p := range strings.Fields(rest) {
				ports[p+"/tcp"] = map[string]any{}
			}
			out["ExposedPorts"] = ports
		case "ENTRYPOINT", "CMD":
			var v []any
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				return nil, fmt.Errorf("%s: %s is not in exec form: %w", file, word, err)
			}
			out[map[string]string{"ENTRYPOINT": "Entrypoint", "CMD": "Cmd"}[word]] = v
		}
	}
	return out, nil
}
