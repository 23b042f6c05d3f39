package storetest

import (
	"maps"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

var podSizeTests = []testCase{
	{name: "PodSizes/PodsWithKeys", fn: testPodSizes},
}

// podSizes calls PodSizes and fails the test on an error.
func podSizes(t *testing.T, s store.Store) map[string]int {
	t.Helper()
	got, err := s.PodSizes(t.Context())
	if err != nil {
		t.Fatalf("PodSizes: %v", err)
	}
	return got
}

// testPodSizes: every pod with keys under its name (assigned, pending
// intended for it), with as many keys as ListOptions{Pod} lists; no pod
// for spares, the pool or cooling-down keys, none for a pod released.
func testPodSizes(t *testing.T, s store.Store) {
	if got := podSizes(t, s); len(got) != 0 {
		t.Fatalf("PodSizes of an empty store = %v, want none", got)
	}
	addKeys(t, s, store.StateAvailable, at(0), 1, 2, 3)
	addKeys(t, s, store.StatePendingDeposit, at(0), 4) // a spare
	addAssigned(t, s, "pod-a", "A", 2, nks(10, 11), 1)
	addPending(t, s, "pod-a", "A", 3, nks(12), at(1))
	addPending(t, s, "pod-c", "C", 2, nks(20, 21, 22), at(1)) // 22 is a spare
	claim(t, s, "pod-b", "B", 1, at(2))
	claim(t, s, "pod-d", "D", 1, at(2))
	if n := release(t, s, "pod-d", "D", at(10), at(3)); n != 1 {
		t.Fatalf("Release(pod-d) = %d, want 1", n)
	}
	want := map[string]int{"pod-a": 3, "pod-b": 1, "pod-c": 2}
	got := podSizes(t, s)
	if !maps.Equal(got, want) {
		t.Fatalf("PodSizes = %v, want %v", got, want)
	}
	for pod, n := range got {
		if keys := list(t, s, store.ListOptions{Pod: pod}); len(keys) != n {
			t.Errorf("PodSizes[%s] = %d, ListKeys(Pod %s) lists %d", pod, n, pod, len(keys))
		}
	}
}
