package kubetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// NodeBinaries returns the directory of the real one-node cluster's binaries
// (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, crictl, helm
// and the API server's): $PKM_K8S_NODE, or the cache of
// scripts/k8s-node/build.sh; "" and the reason when there is none.
func NodeBinaries() (string, string) {
	if d := os.Getenv("PKM_K8S_NODE"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "kubelet")); err != nil {
			return "", "PKM_K8S_NODE=" + d + " holds no kubelet"
		}
		return d, ""
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err.Error()
	}
	out, err := exec.Command("bash", filepath.Join(root, "scripts", "k8s-node", "build.sh"), "--cached").Output()
	if err != nil {
		return "", "no cluster binaries cached: run scripts/k8s-node/build.sh (about 16 min cold) or set PKM_K8S_NODE"
	}
	return strings.TrimSpace(string(out)), ""
}
