package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
)

// Lodestar's pool in TestLodestarValidatorOnRealCluster: interop validators
// 6 and 7 of an 8-validator dev chain whose beacon node runs 0..5 itself
// (3/4 of them, which keeps a lone Lodestar 1.5.1 node going).
var lodestarPool = []uint64{6, 7}

// lodestarSpace is the Lodestar scenario's own namespace, Service address and
// release name, so that it runs beside the others.
var lodestarSpace = space{ns: "validators-lodestar", serviceIP: "10.0.0.81", name: "pkmanager-lodestar"}

// TestLodestarValidatorOnRealCluster runs a real Lodestar 1.5.1 validator
// client as the validator container of the example StatefulSet, on a Lodestar
// dev chain whose beacon node runs on the host (reached by the pods through a
// proxy on the node's bridge address, as is pkmanager's --beacon-url). The
// pkmanager of the Helm chart (values-single.yaml, its own namespace and
// release name: it runs beside the other scenarios) holds two interop validators' keys
// (imported by an admin with a pkmanager-admin token); the init container
// runs `pkmanager request` as in the example and the client loads the
// EIP-2335 keystores it wrote (--keystoresDir/--secretsDir, the lighthouse
// layout) after importing the EIP-3076 history the server sent, if any.
//
// Asserted from the chain (beacon API liveness) and the container runtime:
// the pod's keys attest; after the pod is deleted, its successor gets the
// same keys (the pool holds no others) only once the old client's container
// is gone, and attests with them; no two Lodestar containers ever ran at
// once (runtime samples every 250 ms) and nobody is slashed.
//
// Node.js and the Lodestar install come into the pod by read-only hostPath
// mounts (the host's /usr and the cached install) onto mount points of
// localhost/pkm-hostusr:test (scripts/k8s-node/images.sh): nothing of
// Lodestar's is packed or imported per run.
func TestLodestarValidatorOnRealCluster(t *testing.T) {
	c := need(t)
	install := lodestartest.Require(t)
	for _, l := range []string{"/lib", "/lib64", "/bin"} {
		if target, err := os.Readlink(l); err != nil || target != "usr"+l {
			t.Fatalf("the host's %s is not a link to usr%s (%q, %v): the Lodestar pod takes Node.js from the host's /usr alone", l, l, target, err)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil || !strings.HasPrefix(node, "/usr/") {
		t.Fatalf("node is %q (%v): the Lodestar pod runs the host's Node.js from /usr", node, err)
	}
	t.Parallel() // beside the scenarios of mainSpace, after TestValidatorKeysOnRealCluster
	t0 := time.Now()
	// Genesis 40 s ahead: the beacon node, started beside the other scenarios,
	// took more than the default 20 s (+8 s) to answer in every run here, and
	// pkmanager's install takes as long.
	chain := lodestartest.StartChain(t, lodestartest.ChainOptions{Validators: 8, SecondsPerSlot: 2, StartValidators: "0..5",
		GenesisDelay: 40 * time.Second})
	_, bnURL := pgtest.NewProxyAt(t, chain.URL, c.gateway(t)+":0")
	t.Logf("Lodestar dev chain: beacon node %s (pods: %s), genesis %s", chain.URL, bnURL, chain.GenesisTime.UTC().Format(time.TimeOnly))
	forkVersion, err := chain.ConfigForkVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d := c.helmInstall(t, "lodestar", lodestarSpace, map[string]string{
		"PKM_NETWORK":      "lodestar-dev",
		"PKM_FORK_VERSION": forkVersion,
		"PKM_DEPOSITS":     "off",
		"PKM_BEACON_URL":   bnURL,
	})
	ns := d.ns
	t.Logf("pkmanager (helm release %s, values-single.yaml, --beacon-url) Ready %s after the start", lodestarSpace.name, time.Since(t0).Round(time.Millisecond))
	d.importInterop(t, chain, lodestarPool...)

	w := c.watchLodestar(ns)
	defer w.close()
	d.writeLodestarValidators(t, install, chain.ConfigFile, bnURL)
	c.mustKubectl(t, "apply", "-k", filepath.Join(d.dir, "validators-lodestar"), "--validate=strict")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Before genesis Lodestar answers no liveness; the pod starts meanwhile.
	first := d.lodestarPod(t, "")
	if err := chain.WaitEpoch(ctx, 0); err != nil {
		t.Fatal(err)
	}
	from := max(chain.Epoch(), epochAt(chain, first.started))
	live, err := chain.WaitLive(ctx, from, 6, lodestarPool...)
	if err != nil {
		t.Fatalf("the pod's Lodestar client: %v\n%s", err, c.podLog(ctx, ns, "validator-0", "validator"))
	}
	t.Logf("validator-0 (container %s) attests with validators %v: live in epoch %d, %s after the start", short(first.id), lodestarPool, live, time.Since(t0).Round(time.Second))

	c.mustKubectl(t, "-n", ns, "delete", "pod", "validator-0", "--wait=false")
	deleted := time.Now()
	next := d.lodestarPod(t, first.podUID)
	stopped, ok := w.lastSeen(first.id)
	if !ok || !stopped.Before(next.started) {
		t.Fatalf("the old Lodestar container %s was last seen running at %s, the new one %s started at %s: they overlapped",
			short(first.id), ts(stopped), short(next.id), ts(next.started))
	}
	t.Logf("validator-0 again (container %s) %s after the delete; old container last seen %s, new one started %s (epochs %d -> %d)",
		short(next.id), time.Since(deleted).Round(time.Second), ts(stopped), ts(next.started), epochAt(chain, stopped), epochAt(chain, next.started))
	// The old holder's keys come with their EIP-3076 history (release-time
	// watermarks), which the client imports before it starts.
	if out := c.mustKubectl(t, "-n", ns, "exec", "validator-0", "-c", "validator", "--", "/usr/bin/ls", "/keys"); !strings.Contains(out, "slashing_protection.json") {
		t.Errorf("the next holder got no slashing_protection.json from pkmanager: /keys holds %q", out)
	}
	eventually(t, time.Minute, "the next holder's client imported the history", func() (bool, error) {
		return strings.Contains(c.podLog(ctx, ns, "validator-0", "validator"), "importing the EIP-3076 history"), nil
	})
	from = max(chain.Epoch(), epochAt(chain, next.started))
	live, err = chain.WaitLive(ctx, from, 6, lodestarPool...)
	if err != nil {
		t.Fatalf("the new pod's Lodestar client: %v\n%s", err, c.podLog(ctx, ns, "validator-0", "validator"))
	}
	t.Logf("the next holder attests with validators %v: live in epoch %d", lodestarPool, live)
	for _, v := range w.check() {
		t.Error(v)
	}
	if slashed, err := chain.Slashed(ctx); err != nil || len(slashed) > 0 {
		t.Errorf("slashed validators: %v %v", slashed, err)
	}
	c.mustKubectl(t, "-n", ns, "scale", "statefulset/validator", "--replicas=0")
	t.Logf("Lodestar scenario: %s", time.Since(t0).Round(time.Millisecond))
}

func epochAt(chain *lodestartest.Chain, at time.Time) uint64 {
	if at.Before(chain.GenesisTime) {
		return 0
	}
	return uint64(at.Sub(chain.GenesisTime) / chain.EpochDuration())
}

// importInterop imports interop validators' keystores into the server, as an
// admin: a token of the ServiceAccount pkmanager-admin (bound to the Role
// pkmanager-admin of deploy/base), over TLS to the server pod.
func (d *deployment) importInterop(t *testing.T, chain *lodestartest.Chain, indices ...uint64) {
	t.Helper()
	dir := t.TempDir()
	ksDir := filepath.Join(dir, "keystores")
	if err := os.Mkdir(ksDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, i := range indices {
		ks, err := chain.Keystore(int(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ksDir, fmt.Sprintf("keystore-%d.json", i)), []byte(ks), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	token := strings.TrimSpace(d.c.mustKubectl(t, "-n", d.ns, "create", "token", "pkmanager-admin", "--audience", "pkmanager", "--duration", "10m"))
	for name, body := range map[string][]byte{"token": []byte(token), "ca.crt": d.caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ip := d.serverPodIP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(d.c.kn, "images", "rootfs-pkmanager", "usr", "local", "bin", "pkmanager"), "import",
		"--server", ip+":8000", "--ca-file", filepath.Join(dir, "ca.crt"), "--tls-server-name", "pkmanager",
		"--token-file", filepath.Join(dir, "token"), "--keystores", ksDir, "--password-file", chain.PasswordFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkmanager import: %v\n%s", err, out)
	}
	eventually(t, time.Minute, fmt.Sprintf("%d imported keys available", len(indices)), func() (bool, error) {
		st, err := d.keyStates()
		return err == nil && st["available"] == len(indices), err
	})
}

func (d *deployment) serverPodIP(t *testing.T) string {
	t.Helper()
	pods, err := d.c.cs.CoreV1().Pods(d.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=pkmanager"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			return p.Status.PodIP
		}
	}
	t.Fatal("no running pkmanager pod")
	return ""
}

// writeLodestarValidators writes the kustomization that turns the test's
// validator StatefulSet (validators/: the example with the test's images,
// keysPerPod keys, --insecure-kdf, the Service's host alias) into one pod
// whose validator container is a Lodestar validator client.
func (d *deployment) writeLodestarValidators(t *testing.T, install, configFile, bnURL string) {
	t.Helper()
	if keysPerPod != len(lodestarPool) {
		t.Fatalf("the pod asks for %d keys, the pool has %d", keysPerPod, len(lodestarPool))
	}
	dir := filepath.Join(d.dir, "validators-lodestar")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The client imports the history the server sent (keys that had a holder
	// before) into its slashing-protection database before it starts.
	script := `set -eu
L="node /lodestar/node_modules/@chainsafe/lodestar/lib/index.js"
C="--preset minimal --paramsFile /chain/config.yaml --dataDir /data --beaconNodes $BEACON_URL"
if [ -f /keys/slashing_protection.json ]; then
  echo "importing the EIP-3076 history pkmanager sent"
  $L validator slashing-protection import $C --file /keys/slashing_protection.json
fi
exec $L validator $C --keystoresDir /keys/validators --secretsDir /keys/secrets
`
	scriptJSON, _ := json.Marshal([]string{"/usr/bin/sh", "-c", script})
	files := map[string]string{
		"kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../validators
images:
  - name: localhost/pkm-keyholder
    newName: localhost/pkm-hostusr
    newTag: test
patches:
  - path: statefulset.yaml
  - target:
      kind: StatefulSet
      name: validator
    patch: |-
      - op: test
        path: /spec/template/spec/initContainers/0/args/4
        value: --layout=lighthouse
      - op: replace
        path: /spec/template/spec/containers/0/command
        value: ` + string(scriptJSON) + `
`,
		"statefulset.yaml": `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: validator
spec:
  replicas: 1
  template:
    spec:
      containers:
        - name: validator
          env:
            - name: BEACON_URL
              value: ` + bnURL + `
            - name: HOME
              value: /tmp
            - name: NO_COLOR
              value: "1"
          volumeMounts:
            - name: host-usr
              mountPath: /usr
              readOnly: true
            - name: lodestar
              mountPath: /lodestar
              readOnly: true
            - name: chain-config
              mountPath: /chain/config.yaml
              readOnly: true
            - name: data
              mountPath: /data
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: host-usr
          hostPath:
            path: /usr
            type: Directory
        - name: lodestar
          hostPath:
            path: ` + install + `
            type: Directory
        - name: chain-config
          hostPath:
            path: ` + configFile + `
            type: File
        - name: data
          emptyDir: {}
        - name: tmp
          emptyDir: {}
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// lodestarHolder is the Lodestar container of validator-0 as the runtime
// shows it.
type lodestarHolder struct {
	id, podUID string
	started    time.Time
}

// lodestarPod waits for validator-0 (a pod other than notUID) to run its
// Lodestar container with the pool's keystores (read in the pod itself) and
// returns the container.
func (d *deployment) lodestarPod(t *testing.T, notUID string) lodestarHolder {
	t.Helper()
	var h lodestarHolder
	eventually(t, 5*time.Minute, "validator-0 runs Lodestar", func() (bool, error) {
		p, err := d.c.cs.CoreV1().Pods(d.ns).Get(context.Background(), "validator-0", metav1.GetOptions{})
		if err != nil || string(p.UID) == notUID || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			return false, err
		}
		cs, err := d.c.containers("running")
		if err != nil {
			return false, err
		}
		for _, ct := range cs {
			if ct.Metadata.Name == "validator" && ct.Labels["io.kubernetes.pod.uid"] == string(p.UID) {
				var in struct {
					Status struct {
						StartedAt time.Time `json:"startedAt"`
					} `json:"status"`
				}
				if err := d.c.crictlJSON(&in, "inspect", "-o", "json", ct.ID); err != nil {
					return false, err
				}
				h = lodestarHolder{id: ct.ID, podUID: string(p.UID), started: in.Status.StartedAt}
				return true, nil
			}
		}
		return false, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := d.c.kubectl(ctx, "-n", d.ns, "exec", "validator-0", "-c", "validator", "--", "/usr/bin/ls", "/keys/validators")
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, f := range strings.Fields(out) {
		got = append(got, strings.ToLower(f))
	}
	for _, i := range lodestarPool {
		want = append(want, lodestartest.InteropPubkey(int(i)))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("validator-0's keystores are %v, want the pool's %v", got, want)
	}
	return h
}

func (c *cluster) podLog(ctx context.Context, ns, pod, container string) string {
	out, err := c.kubectl(ctx, "-n", ns, "logs", pod, "-c", container, "--tail=40")
	if err != nil {
		return err.Error()
	}
	return out
}

// lodestarWatch samples the runtime every 250 ms: the running Lodestar
// containers (every one holds the whole pool), when each was last seen, and
// any moment two ran at once.
type lodestarWatch struct {
	c          *cluster
	ns         string
	stop, done chan struct{}

	mu         sync.Mutex
	seen       map[string]time.Time
	violations []string
	samples    int
}

func (c *cluster) watchLodestar(ns string) *lodestarWatch {
	w := &lodestarWatch{c: c, ns: ns, stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]time.Time{}}
	go sampleEvery(w.sample, w.stop, w.done)
	return w
}

func (w *lodestarWatch) sample() {
	cs, err := w.c.containers("running")
	if err != nil {
		return
	}
	now := time.Now()
	var running []string
	for _, c := range cs {
		if c.Metadata.Name == "validator" && c.Labels["io.kubernetes.pod.namespace"] == w.ns {
			running = append(running, short(c.ID))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples++
	for _, c := range cs {
		if c.Metadata.Name == "validator" && c.Labels["io.kubernetes.pod.namespace"] == w.ns {
			w.seen[c.ID] = now
		}
	}
	if len(running) > 1 {
		w.violations = append(w.violations, fmt.Sprintf("%s: %d Lodestar containers with the pool's keys run at once: %v", ts(now), len(running), running))
	}
}

// lastSeen is when the container was last seen running.
func (w *lodestarWatch) lastSeen(id string) (time.Time, bool) {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.seen[id]
	return at, ok
}

func (w *lodestarWatch) check() []string {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.violations)
	if w.samples == 0 {
		out = append(out, "no runtime sample succeeded")
	}
	return out
}

func (w *lodestarWatch) close() {
	close(w.stop)
	<-w.done
}
