package node_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pkmanager/pkmanager/internal/kube/kubetest"
)

// What the test overlays change in deploy/ for this cluster (and why):
//   - images: localhost/pkmanager:test and the key holder, imagePullPolicy Never (nothing can be pulled here)
//   - a hostPath PersistentVolume pre-bound to the single overlay's claim: the cluster has no volume provisioner
//   - the Service gets a fixed ClusterIP and the validator pods a hostAliases entry "pkmanager" for it: there is
//     no cluster DNS; the example's --server=pkmanager:8000 stays as it is
//   - the ConfigMap: a withdrawal address (the base's "set-me" is refused on purpose), a short --reuse-delay, the
//     controller manager's node grace period, a short watcher resync
//   - the example StatefulSet: 2 keys per pod, --insecure-kdf (the node has 2 cores), 0 replicas to start with,
//     and the key holder instead of Lighthouse, with a hostPath directory for its reports
const (
	ns          = "validators"
	serviceIP   = "10.0.0.80" // in cluster.sh's service CIDR 10.0.0.0/24
	reuseDelay  = 4 * time.Second
	stopDelay   = time.Second // the key holder keeps its keys this long after SIGTERM
	keysPerPod  = 2
	withdrawTo  = "0x8943545177806ed17b9f23f0a21ee5948ecaa776"
	pkmImage    = "localhost/pkmanager:test"
	holderImage = "localhost/pkm-keyholder:test"
)

// space is where a scenario's pkmanager and validators run: the namespace,
// the Service's fixed ClusterIP and the server's object name (its claim is
// NAME-data).
type space struct {
	ns, serviceIP, name string
}

// mainSpace is the overlays' (their base's namespace) and the chart's when
// installed as release pkmanager.
var mainSpace = space{ns: ns, serviceIP: serviceIP, name: "pkmanager"}

// mainNS serializes the scenarios that use mainSpace; the others run beside
// them (t.Parallel) in spaces of their own.
var mainNS sync.Mutex

// parallelInMainSpace makes t a parallel test (run after the sequential ones,
// beside TestLodestarValidatorOnRealCluster) that has mainSpace to itself
// until its cleanups are done: called before any other cleanup is registered,
// the unlock runs last, after the namespace is gone.
func parallelInMainSpace(t *testing.T) {
	t.Helper()
	t.Parallel()
	mainNS.Lock()
	t.Cleanup(mainNS.Unlock)
}

type deployment struct {
	c       *cluster
	ns      string
	dir     string // generated overlays
	reports string // the key holders' hostPath report directory
	pv      string // the hostPath directory of the single overlay's (or the chart's) volume
	caPool  *x509.CertPool
	caPEM   []byte // the CA of pkmanager's serving certificate
}

// deploy writes the test overlays and the secrets and applies
// deploy/overlays/<overlay> (single or ha) through its test overlay; for ha,
// pgURL is the PostgreSQL store as the pods reach it.
func (c *cluster) deploy(t *testing.T, overlay, pgURL string) *deployment {
	t.Helper()
	return c.deployAs(t, overlay, overlay, pgURL, nil)
}

// deployAs is deploy with the test files under the scenario's own name and
// extra PKM_* settings in the ConfigMap.
func (c *cluster) deployAs(t *testing.T, name, overlay, pgURL string, config map[string]string) *deployment {
	t.Helper()
	d := c.prepare(t, name, mainSpace, pgURL, config)
	c.mustKubectl(t, "apply", "-k", filepath.Join(d.dir, overlay), "--validate=strict")
	c.mustKubectl(t, "-n", d.ns, "rollout", "status", "deployment/pkmanager", "--timeout=180s")
	return d
}

// prepare writes the test overlays (and the chart's test values and volume,
// in helm/) under the scenario's name, with extra PKM_* settings, and creates
// sp's namespace, the secrets and the CA ConfigMap there. The kustomize
// overlays are for mainSpace only (their base's namespace).
func (c *cluster) prepare(t *testing.T, name string, sp space, pgURL string, config map[string]string) *deployment {
	t.Helper()
	overlay := name
	ns, serviceIP := sp.ns, sp.serviceIP
	d := &deployment{c: c, ns: ns, dir: filepath.Join(c.kn, "kustomize-"+name), reports: filepath.Join(c.kn, "reports-"+name)}
	pv := filepath.Join(c.kn, "pv-"+name, "pkmanager-data")
	d.pv = pv
	for _, dir := range []string{pv, d.reports, d.dir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// hostPath volumes get no fsGroup: the directories are made for the pods' users here
	if err := os.Chown(pv, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.reports, 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", filepath.Join(c.root, "deploy"), d.dir).CombinedOutput(); err != nil {
		t.Fatalf("copy deploy/: %v: %s", err, out)
	}
	files := map[string]string{
		"single/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../deploy/overlays/single
  - pv.yaml
images:
  - name: ghcr.io/pkmanager/pkmanager
    newName: localhost/pkmanager
    newTag: test
patches:
  - path: deployment.yaml
  - path: config.yaml
  - path: service.yaml
`,
		"ha/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../deploy/overlays/ha
images:
  - name: ghcr.io/pkmanager/pkmanager
    newName: localhost/pkmanager
    newTag: test
patches:
  - path: deployment.yaml
  - path: config.yaml
  - path: service.yaml
`,
		"pv.yaml": `apiVersion: v1
kind: PersistentVolume
metadata:
  name: pkmanager-data-` + overlay + `
spec:
  capacity:
    storage: 1Gi
  accessModes: ["ReadWriteOnce"]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef:
    namespace: ` + ns + `
    name: ` + sp.name + `-data
  hostPath:
    path: ` + pv + `
    type: Directory
`,
		"deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: pkmanager
spec:
  template:
    spec:
      containers:
        - name: pkmanager
          imagePullPolicy: Never
`,
		"config.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: pkmanager-config
data:
  PKM_WITHDRAWAL_ADDRESS: "` + withdrawTo + `"
  PKM_REUSE_DELAY: ` + reuseDelay.String() + `
  PKM_NODE_GRACE_PERIOD: 20s
  PKM_WATCH_RESYNC: 2s
  PKM_LOG_FORMAT: text
`,
		"service.yaml": `apiVersion: v1
kind: Service
metadata:
  name: pkmanager
spec:
  clusterIP: ` + serviceIP + `
`,
		"validators/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: ` + ns + `
resources:
  - validator-statefulset.yaml
images:
  - name: ghcr.io/pkmanager/pkmanager
    newName: localhost/pkmanager
    newTag: test
  - name: sigp/lighthouse
    newName: localhost/pkm-keyholder
    newTag: test
patches:
  - path: statefulset.yaml
  - target:
      kind: StatefulSet
      name: validator
    patch: |-
      - op: test
        path: /spec/template/spec/initContainers/0/args/2
        value: --keys=4
      - op: replace
        path: /spec/template/spec/initContainers/0/args/2
        value: --keys=` + strconv.Itoa(keysPerPod) + `
      - op: add
        path: /spec/template/spec/initContainers/0/args/-
        value: --insecure-kdf
      - op: replace
        path: /spec/template/spec/containers/0/command
        value: ["/usr/local/bin/keyholder"]
      - op: remove
        path: /spec/template/spec/containers/0/args
`,
		"validators/statefulset.yaml": `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: validator
spec:
  replicas: 0
  template:
    spec:
      hostAliases:
        - ip: "` + serviceIP + `"
          hostnames: ["pkmanager"]
      initContainers:
        - name: keys
          imagePullPolicy: Never
      containers:
        - name: validator
          imagePullPolicy: Never
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_UID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.uid
            - name: KEYS_DIR
              value: /keys
            - name: REPORT_DIR
              value: /reports
            - name: STOP_DELAY
              value: ` + stopDelay.String() + `
          volumeMounts:
            - name: reports
              mountPath: /reports
      volumes:
        - name: reports
          hostPath:
            path: ` + d.reports + `
            type: Directory
`,
	}
	extra := ""
	for _, k := range slices.Sorted(maps.Keys(config)) {
		extra += "  " + k + ": " + strconv.Quote(config[k]) + "\n"
	}
	files["config.yaml"] += extra
	// The chart's test values: what the overlays above patch, as values.
	files["helm/values.yaml"] = `image:
  repository: localhost/pkmanager
  tag: test
  pullPolicy: Never
config:
  PKM_WITHDRAWAL_ADDRESS: "` + withdrawTo + `"
  PKM_REUSE_DELAY: ` + reuseDelay.String() + `
  PKM_NODE_GRACE_PERIOD: 20s
  PKM_WATCH_RESYNC: 2s
  PKM_LOG_FORMAT: text
` + extra + `service:
  clusterIP: ` + serviceIP + `
`
	files["single/pv.yaml"], files["helm/pv.yaml"] = files["pv.yaml"], files["pv.yaml"]
	delete(files, "pv.yaml")
	for _, f := range []string{"deployment.yaml", "config.yaml", "service.yaml"} {
		files["single/"+f], files["ha/"+f] = files[f], files[f]
		delete(files, f)
	}
	for name, body := range files {
		p := filepath.Join(d.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ex, err := os.ReadFile(filepath.Join(c.root, "deploy", "examples", "validator-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "validators", "validator-statefulset.yaml"), ex, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM := kubetest.ServingCert(t,
		[]string{"pkmanager", "pkmanager." + ns, "pkmanager." + ns + ".svc", "pkmanager." + ns + ".svc.cluster.local"},
		[]net.IP{net.ParseIP(serviceIP)})
	d.caPEM = caPEM
	d.caPool = x509.NewCertPool()
	d.caPool.AppendCertsFromPEM(caPEM)
	kek := make([]byte, 32)
	rand.Read(kek)
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "pkmanager-tls"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}},
		{ObjectMeta: metav1.ObjectMeta{Name: "pkmanager-kek"}, Data: map[string][]byte{"kek": []byte(hex.EncodeToString(kek))}},
		{ObjectMeta: metav1.ObjectMeta{Name: "pkmanager-postgres"}, Data: map[string][]byte{"url": []byte(pgURL)}},
	} {
		if s.Name == "pkmanager-postgres" && overlay != "ha" {
			continue
		}
		if _, err := c.cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "pkmanager-ca"},
		Data: map[string]string{"ca.crt": string(caPEM)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return d
}

// keyStates reads pkmanager_keys{state} from the server's /metrics at its
// pod's IP (the Service has no endpoints while the node is not Ready). Only
// for pacing the scenarios (when have released keys cooled down?), never for
// what they prove.
func (d *deployment) keyStates() (map[string]int, error) {
	pods, err := d.c.cs.CoreV1().Pods(d.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=pkmanager"})
	if err != nil {
		return nil, err
	}
	ip := ""
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			ip = p.Status.PodIP
		}
	}
	if ip == "" {
		return nil, fmt.Errorf("no running pkmanager pod")
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.caPool, ServerName: "pkmanager"}}}
	resp, err := hc.Get("https://" + net.JoinHostPort(ip, "8080") + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, `pkmanager_keys{state="`)
		if !ok {
			continue
		}
		st, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, err
		}
		out[st] = int(n)
	}
	return out, nil
}
