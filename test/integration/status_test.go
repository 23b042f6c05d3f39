package integration

import (
	"path/filepath"
	"strings"
	"testing"
)

// status shows the server's health, its keys by state and, with --http,
// readiness, leader election, pod watcher and beacon node.
func TestStatus(t *testing.T) {
	s := startServer(t, t.TempDir())
	mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "st-0", "--keys", "2", "--insecure-kdf", "--out", filepath.Join(t.TempDir(), "k"))
	out := mustRun(t, "status", "--server", s.grpcAddr, "--http", "http://"+s.httpAddr)
	for _, want := range []string{
		"server " + s.grpcAddr + ": serving\n",
		"keys:   2 (assigned 2 to 1 pod); free or cooling down: 0\n",
		"ready:  ready: ",
		"leader: no leader election (one replica)\n",
		"watcher: off\n",
		"beacon: none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if out := mustRun(t, "status", "--server", s.grpcAddr); strings.Contains(out, "ready:") || !strings.Contains(out, "keys:   2 ") {
		t.Errorf("status without --http:\n%s", out)
	}
}
