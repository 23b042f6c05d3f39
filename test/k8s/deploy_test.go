package k8s_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
			"examples":    {"statefulset.apps/validator", "serviceaccount/validator"},
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
	if !strings.Contains(string(cm), `PKM_POD_SELECTOR: "`+selector+`"`) || !strings.Contains(string(cm), "PKM_TOKEN_AUDIENCE: "+auth.DefaultAudience) {
		t.Error("deploy/base/configmap.yaml disagrees with the example's selector or audience")
	}
}
