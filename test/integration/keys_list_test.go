package integration

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// keys list shows every key with its state, pod and origin, as a table or
// as JSON, filtered by pod and state.
func TestKeysList(t *testing.T) {
	s := startServer(t, t.TempDir(), "--reuse-delay", "1h")
	dir := t.TempDir()
	mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "list-a", "--keys", "2", "--insecure-kdf", "--out", filepath.Join(dir, "a"))
	mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "list-b", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(dir, "b"))
	mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "list-b")

	var all []struct {
		Pubkey, State, Pod, LastPod, Origin, CoolingUntil string
	}
	out := mustRun(t, "keys", "list", "--server", s.grpcAddr, "-o", "json")
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("keys list -o json: %v\n%s", err, out)
	}
	states := map[string]int{}
	for _, k := range all {
		states[k.State+"/"+k.Pod]++
		if len(k.Pubkey) != 98 || k.Origin == "" {
			t.Errorf("key %+v: want a 0x pubkey and an origin", k)
		}
	}
	if len(all) != 3 || states["assigned/list-a"] != 2 || states["cooling-down/"] != 1 {
		t.Fatalf("keys list -o json = %+v", all)
	}

	table := mustRun(t, "keys", "list", "--server", s.grpcAddr)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "PUBKEY ") || lines[4] != "3 keys" ||
		!strings.Contains(table, "last pod list-b; reusable from ") {
		t.Fatalf("keys list:\n%s", table)
	}
	if out := mustRun(t, "keys", "list", "--server", s.grpcAddr, "--pod", "list-a"); strings.Count(out, " assigned ") != 2 || !strings.HasSuffix(strings.TrimSpace(out), "2 keys") {
		t.Fatalf("keys list --pod list-a:\n%s", out)
	}
	if out := mustRun(t, "keys", "list", "--server", s.grpcAddr, "--state", "cooling-down"); !strings.HasSuffix(strings.TrimSpace(out), "1 key") {
		t.Fatalf("keys list --state cooling-down:\n%s", out)
	}
}
