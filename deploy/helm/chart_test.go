// Package helm holds the Helm chart of pkmanager (deploy/helm/pkmanager). Its
// test keeps the chart in step with the kustomize manifests: the chart
// rendered with its default values is deploy/base, with values-single.yaml
// deploy/overlays/single and with values-ha.yaml deploy/overlays/ha, object
// for object (kinds, names, namespaces and every spec field: containers,
// args, env, ports, probes, security contexts, volumes, RBAC rules), apart
// from the labels Helm adds. Changing one without the other fails here.
//
// It renders with the helm binary scripts/k8s-node/build.sh builds and
// kubectl's kustomize from scripts/k8s-test-binaries.sh (no cluster). Without
// them the test skips; under CI=true it fails.
package helm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/pkmanager/pkmanager/internal/kube/kubetest"
)

// helmLabels are the labels the chart adds to every object beside the base's
// (the overlays' own objects, such as the single overlay's claim, lack even
// the base's app.kubernetes.io/name, which the chart puts on all).
var helmLabels = map[string]bool{
	"app.kubernetes.io/name":       true,
	"app.kubernetes.io/instance":   true,
	"app.kubernetes.io/version":    true,
	"app.kubernetes.io/managed-by": true,
	"helm.sh/chart":                true,
}

func TestChartMatchesKustomize(t *testing.T) {
	helm, kubectl := tools(t)
	root, err := kubetest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(root, "deploy", "helm", "pkmanager")
	for _, tc := range []struct{ values, kustomize string }{
		{"", "deploy/base"},
		{"values-single.yaml", "deploy/overlays/single"},
		{"values-ha.yaml", "deploy/overlays/ha"},
	} {
		t.Run(tc.kustomize, func(t *testing.T) {
			args := []string{"template", "pkmanager", chart, "--namespace", "validators"}
			if tc.values != "" {
				args = append(args, "-f", filepath.Join(chart, tc.values))
			}
			fromHelm := objects(t, run(t, helm, args...))
			fromKustomize := objects(t, run(t, kubectl, "kustomize", filepath.Join(root, tc.kustomize)))
			for _, d := range compare(fromHelm, fromKustomize) {
				t.Error(d)
			}
		})
	}
}

// TestChartRefusesBrokenShapes: what the kustomize overlays cannot get wrong
// by construction, the chart refuses to render.
func TestChartRefusesBrokenShapes(t *testing.T) {
	helm, _ := tools(t)
	root, err := kubetest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(root, "deploy", "helm", "pkmanager")
	for _, set := range []string{
		"replicas=3", // several replicas without leader election
		"persistence.enabled=true,postgres.enabled=true", // two stores
	} {
		out, err := exec.Command(helm, "template", "pkmanager", chart, "--set", set).CombinedOutput()
		if err == nil {
			t.Errorf("helm template --set %s rendered:\n%.300s", set, out)
		}
	}
}

// tools returns the helm and kubectl binaries, or skips (fails under CI=true).
func tools(t *testing.T) (helm, kubectl string) {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("under CI=true: %s", why)
		}
		t.Skip(why)
	}
	nodeBin, why := kubetest.NodeBinaries()
	if nodeBin == "" {
		missing("no helm: " + why)
	}
	assets, why := kubetest.Assets()
	if assets == "" {
		missing("no kubectl: " + why)
	}
	helm, kubectl = filepath.Join(nodeBin, "helm"), filepath.Join(assets, "kubectl")
	for _, b := range []string{helm, kubectl} {
		if _, err := os.Stat(b); err != nil {
			missing(err.Error())
		}
	}
	return helm, kubectl
}

func run(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// objects decodes a multi-document YAML stream into objects by "Kind/name".
func objects(t *testing.T, stream []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if obj == nil {
			continue
		}
		meta, _ := obj["metadata"].(map[string]any)
		id := fmt.Sprintf("%v/%v", obj["kind"], meta["name"])
		if _, dup := out[id]; dup {
			t.Fatalf("%s twice", id)
		}
		out[id] = obj
	}
	if len(out) == 0 {
		t.Fatal("no objects rendered")
	}
	return out
}

// compare lists every difference between the chart's objects and the
// kustomize ones: objects only in one, labels other than Helm's own, and any
// other field.
func compare(fromHelm, fromKustomize map[string]map[string]any) []string {
	var diffs []string
	ids := map[string]bool{}
	for id := range fromHelm {
		ids[id] = true
	}
	for id := range fromKustomize {
		ids[id] = true
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	for _, id := range sorted {
		h, k := fromHelm[id], fromKustomize[id]
		switch {
		case h == nil:
			diffs = append(diffs, id+": in the kustomize output only")
			continue
		case k == nil:
			diffs = append(diffs, id+": in the chart only")
			continue
		}
		hl, kl := popLabels(h), popLabels(k)
		for name, v := range kl {
			if hl[name] != v {
				diffs = append(diffs, fmt.Sprintf("%s: label %s is %q in the chart, %q in kustomize", id, name, hl[name], v))
			}
		}
		for name, v := range hl {
			if _, ok := kl[name]; !ok && !helmLabels[name] {
				diffs = append(diffs, fmt.Sprintf("%s: label %s=%q in the chart only", id, name, v))
			}
		}
		diffs = append(diffs, diff(id, h, k)...)
	}
	return diffs
}

// popLabels removes and returns metadata.labels.
func popLabels(obj map[string]any) map[string]string {
	meta, _ := obj["metadata"].(map[string]any)
	out := map[string]string{}
	if l, ok := meta["labels"].(map[string]any); ok {
		for k, v := range l {
			out[k] = fmt.Sprint(v)
		}
	}
	delete(meta, "labels")
	return out
}

// diff lists the paths at which a (the chart) and b (kustomize) differ.
func diff(path string, a, b any) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		var out []string
		for _, k := range sortedKeys(keys) {
			out = append(out, diff(path+"."+k, am[k], bm[k])...)
		}
		return out
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok && len(al) == len(bl) {
		var out []string
		for i := range al {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i])...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []string{fmt.Sprintf("%s: chart %s, kustomize %s", path, js(a), js(b))}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func js(v any) string {
	if v == nil {
		return "(none)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}
