package k8s_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/pkmanager/pkmanager/internal/kube/auth"
	"github.com/pkmanager/pkmanager/internal/kube/kubetest"
)

// TestDeployManifests applies deploy/ to the API server: every overlay and
// the example with server-side dry run (schema, field and admission
// checks), and the single overlay for real. Schema or RBAC mistakes fail here.
func TestDeployManifests(t *testing.T) {
	needEnv(t)
	kubectl := filepath.Join(env.Assets, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		kubetest.SkipOrFail(t, "no kubectl in "+env.Assets+" (scripts/k8s-test-binaries.sh builds it)")
	}
	ctx := testCtx(t)
	_, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "validators"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", env.Kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	deploy := filepath.Join(repoRoot, "deploy")
	for _, dir := range []string{"overlays/single", "overlays/ha", "examples"} {
		out := run("apply", "-k", filepath.Join(deploy, dir), "--dry-run=server", "--validate=strict", "-o", "name")
		for _, want := range map[string][]string{
			"overlays/single": {"deployment.apps/pkmanager", "persistentvolumeclaim/pkmanager-data", "clusterrole.rbac.authorization.k8s.io/pkmanager",
				"role.rbac.authorization.k8s.io/pkmanager", "poddisruptionbudget.policy/pkmanager", "service/pkmanager"},
			"overlays/ha": {"deployment.apps/pkmanager", "rolebinding.rbac.authorization.k8s.io/pkmanager-admin"},
			"examples":    {"statefulset.apps/validator", "serviceaccount/validator", "statefulset.apps/validator-sync", "service/validator-sync"},
		}[dir] {
			if !strings.Contains(out, want) {
				t.Fatalf("%s: dry run did not produce %s:\n%s", dir, want, out)
			}
		}
	}
	// For real, then read back what matters.
	run("apply", "-k", filepath.Join(deploy, "overlays/single"), "--validate=strict")
	dep, err := env.Client.AppsV1().Deployments("validators").Get(ctx, "pkmanager", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	sc := pod.Containers[0].SecurityContext
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || dep.Spec.Strategy.Type != "Recreate" {
		t.Fatalf("single overlay: pod security context %+v, container %+v, strategy %s", pod.SecurityContext, sc, dep.Spec.Strategy.Type)
	}
	if pod.Volumes[0].PersistentVolumeClaim == nil || pod.Volumes[0].EmptyDir != nil {
		t.Fatalf("single overlay: data volume %+v, want the PVC only", pod.Volumes[0])
	}
	// The overlay's own claim lands beside the Deployment, not in kubectl's current namespace.
	if _, err := env.Client.CoreV1().PersistentVolumeClaims("validators").Get(ctx, pod.Volumes[0].PersistentVolumeClaim.ClaimName, metav1.GetOptions{}); err != nil {
		t.Fatalf("single overlay: the Deployment's claim is not in its namespace: %v", err)
	}

	// The example validator and the server agree on audience and selector.
	ex, err := os.ReadFile(filepath.Join(deploy, "examples", "validator-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cm, err := os.ReadFile(filepath.Join(deploy, "base", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"audience: " + auth.DefaultAudience, `pkmanager.io/validator: "true"`, "--token-file=/var/run/secrets/pkmanager/token"} {
		if !strings.Contains(string(ex), want) {
			t.Errorf("example StatefulSet lacks %q", want)
		}
	}
	checkSyncExample(t, filepath.Join(deploy, "examples", "validator-sync-statefulset.yaml"))
	if !strings.Contains(string(cm), `PKM_POD_SELECTOR: "`+selector+`"`) || !strings.Contains(string(cm), "PKM_TOKEN_AUDIENCE: "+auth.DefaultAudience) {
		t.Error("deploy/base/configmap.yaml disagrees with the example's selector or audience")
	}
}

// checkSyncExample checks what the `pkmanager sync` example's safety rests
// on: the validator client is a native sidecar (stopped only after the sync
// container has deleted its keys and released them), the grace period
// outlasts the sidecar's --shutdown-timeout, the client's data and keystores
// stay in memory, and the sync container has the pod's identity and token.
func checkSyncExample(t *testing.T, file string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ss *appsv1.StatefulSet
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var doc appsv1.StatefulSet
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc.Kind == "StatefulSet" {
			ss = &doc
		}
	}
	if ss == nil {
		t.Fatalf("%s: no StatefulSet", file)
	}
	pod := ss.Spec.Template.Spec
	if ss.Spec.Template.Labels["pkmanager.io/validator"] != "true" {
		t.Errorf("sync example: pod labels %v lack the pod selector's", ss.Spec.Template.Labels)
	}
	if len(pod.InitContainers) != 1 || pod.InitContainers[0].RestartPolicy == nil || *pod.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("sync example: the validator client must be the one native sidecar (init container, restartPolicy Always), so that it outlives the sync container: %d init containers", len(pod.InitContainers))
	}
	if len(pod.Containers) != 1 || len(pod.Containers[0].Args) == 0 || pod.Containers[0].Args[0] != "sync" {
		t.Fatalf("sync example: want one container running pkmanager sync, got %d containers", len(pod.Containers))
	}
	sync := pod.Containers[0]
	args := map[string]string{}
	for _, a := range sync.Args[1:] {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	shutdown, err := time.ParseDuration(args["--shutdown-timeout"])
	if err != nil || pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= shutdown {
		t.Errorf("sync example: terminationGracePeriodSeconds %v must exceed --shutdown-timeout %q (%v)", pod.TerminationGracePeriodSeconds, args["--shutdown-timeout"], err)
	}
	if args["--token-file"] != "/var/run/secrets/pkmanager/token" || args["--keymanager-token-file"] == "" || !strings.HasPrefix(args["--keymanager-url"], "http://127.0.0.1:") {
		t.Errorf("sync example: sync args %v: want the pod's projected token, the client's API token file and its loopback URL", sync.Args)
	}
	envs := map[string]string{}
	for _, e := range sync.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			envs[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if envs["POD_NAME"] != "metadata.name" || envs["POD_UID"] != "metadata.uid" {
		t.Errorf("sync example: POD_NAME and POD_UID must come from the Downward API: %v", envs)
	}
	var token bool
	for _, v := range pod.Volumes {
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				token = token || (s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == auth.DefaultAudience)
			}
		case v.EmptyDir != nil && v.EmptyDir.Medium != corev1.StorageMediumMemory:
			t.Errorf("sync example: volume %s is an emptyDir on the node's disk; the client's keystores must stay in memory", v.Name)
		case v.EmptyDir == nil && v.ConfigMap == nil:
			t.Errorf("sync example: volume %s is neither in memory nor a ConfigMap", v.Name)
		}
	}
	if !token {
		t.Errorf("sync example: no projected ServiceAccount token with audience %s", auth.DefaultAudience)
	}
}
