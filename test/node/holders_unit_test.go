package node_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConflicts checks the checker on made-up reports (no cluster): a key
// taken over after its holder's last record is fine, one taken while the
// holder still reports, or still runs, is held twice.
func TestConflicts(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(id, pod string, keys []string, from, to time.Duration, stopped bool) {
		var b []byte
		add := func(ev string, at time.Duration) {
			l, _ := json.Marshal(record{Event: ev, Time: t0.Add(at), Pod: pod, PodUID: pod + "-uid", Container: id, Pubkeys: keys})
			b = append(append(b, l...), '\n')
		}
		add("loading", from)
		add("loaded", from+time.Millisecond)
		for at := from + 250*time.Millisecond; at < to; at += 250 * time.Millisecond {
			add("holding", at)
		}
		if stopped {
			add("stopped", to)
		}
		if err := os.WriteFile(filepath.Join(dir, id+".jsonl"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "validator-0", []string{"0xk1", "0xk2"}, 0, 10*time.Second, true)
	write("b", "validator-1", []string{"0xk2", "0xk3"}, 15*time.Second, 20*time.Second, true) // after a: fine
	write("c", "validator-2", []string{"0xk3"}, 19*time.Second, 30*time.Second, false)        // while b holds k3
	hs, err := readReports(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !hs["a"].Loaded || !hs["a"].Stopped || hs["c"].Stopped || !hs["b"].End.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("reports read wrong: %+v %+v %+v", hs["a"], hs["b"], hs["c"])
	}
	got := conflicts(hs, nil)
	if len(got) != 1 || !strings.Contains(got[0], "key 0xk3 held twice: by b") {
		t.Fatalf("conflicts = %q, want k3 by b and c", got)
	}
	// a container still running holds its keys past its last record
	write("d", "validator-3", []string{"0xk1"}, 40*time.Second, 41*time.Second, false)
	write("e", "validator-4", []string{"0xk1"}, 50*time.Second, 51*time.Second, false)
	if hs, err = readReports(dir); err != nil {
		t.Fatal(err)
	}
	if got := conflicts(hs, map[string]bool{"d": true}); len(got) != 2 || !strings.Contains(got[0]+got[1], "by d (pod validator-3") {
		t.Fatalf("conflicts with d running = %q", got)
	}
	if got := conflicts(hs, nil); len(got) != 1 {
		t.Fatalf("conflicts with d stopped = %q, want only k3", got)
	}
}
