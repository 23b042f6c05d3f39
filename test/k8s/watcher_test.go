package k8s_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/server"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// held asserts that every key of keys is still assigned to pod under uid.
func held(t *testing.T, ctx context.Context, st store.Store, pod, uid string, keys []store.Pubkey) {
	t.Helper()
	got := podKeys(t, ctx, st, pod)
	if len(got) != len(keys) {
		t.Fatalf("pod %s holds %d keys, want %d", pod, len(got), len(keys))
	}
	for _, k := range got {
		if k.PodUID != uid || !slices.Contains(keys, k.Pubkey) {
			t.Fatalf("pod %s: key %s under uid %q, want one of its own keys under %q", pod, k.Pubkey, k.PodUID, uid)
		}
	}
}

// waitReleased waits until none of keys is assigned and all are cooling-down
// or available, and returns their records.
func waitReleased(t *testing.T, ctx context.Context, st store.Store, pod string, keys []store.Pubkey, within time.Duration) []store.Key {
	t.Helper()
	var recs []store.Key
	waitFor(t, within, "keys of "+pod+" released", func() (bool, string) {
		recs = recs[:0]
		for _, p := range keys {
			k, err := st.GetKey(ctx, p)
			if err != nil {
				return false, err.Error()
			}
			if k.State != store.StateCoolingDown && k.State != store.StateAvailable {
				return false, fmt.Sprintf("key %s is %s (pod %q)", p, k.State, k.Pod)
			}
			recs = append(recs, k)
		}
		return true, ""
	})
	return recs
}

// quiet waits long enough for several watcher passes.
func quiet() { time.Sleep(6 * watcherResync) }

// TestWatcherReleaseRules drives pods and nodes through the API server and
// checks, on the store, that keys are released exactly when the pod can no
// longer run.
func TestWatcherReleaseRules(t *testing.T) {
	c := newCluster(t, "rules")
	ctx := c.ctx
	const delay = 2 * time.Second
	s := c.startServer(srvConfig{reuseDelay: delay, kube: server.KubeOptions{Watch: true}})
	st := s.Store()
	waitFor(t, 30*time.Second, "watcher ready", func() (bool, string) {
		err := s.Watcher().Ready()
		return err == nil, fmt.Sprint(err)
	})

	ready := c.node("ready", true)
	down := c.node("down", false)
	down2 := c.node("down2", false)
	down3 := c.node("down3", false)

	type vpod struct {
		name string
		uid  string
		keys []store.Pubkey
	}
	mk := func(name, node string) vpod {
		p := c.pod(name, node, nil)
		return vpod{name, string(p.UID), s.request(ctx, name, string(p.UID), 2)}
	}
	deleted := mk("deleted-ready", ready)
	succeeded := mk("succeeded", ready)
	failed := mk("failed", down) // a terminal phase releases even on a NotReady node
	live := mk("live", ready)
	terminating := mk("terminating", ready)
	gone1 := mk("gone-then-ready", down)
	gone2 := mk("gone-then-deleted-node", down2)
	gone3 := mk("gone-then-out-of-service", down3)
	relabeled := mk("relabeled", ready)

	// Pod deleted on a Ready node: released, into cooling-down for the reuse delay.
	c.forceDelete(deleted.name)
	recs := waitReleased(t, ctx, st, deleted.name, deleted.keys, 15*time.Second)
	for _, k := range recs {
		if k.State != store.StateCoolingDown || k.LastPod != deleted.name {
			t.Fatalf("released key %s: state %s last pod %q, want cooling-down from %s", k.Pubkey, k.State, k.LastPod, deleted.name)
		}
		if d := k.CoolingUntil.Sub(k.ReleasedAt); d != delay {
			t.Fatalf("key %s cools down for %s, want the reuse delay %s", k.Pubkey, d, delay)
		}
	}
	ev := auditFor(t, ctx, st, deleted.name, "release")
	if len(ev) != 1 || ev[0].Actor != watcher.Actor || !strings.Contains(ev[0].Reason, "is Ready") || ev[0].PodUID != deleted.uid {
		t.Fatalf("audit of the release: %+v", ev)
	}
	// After the delay the keys go back to the pool and the next pod recycles them.
	waitFor(t, delay+5*time.Second, "cooled-down keys available", func() (bool, string) {
		st := keyStates(t, ctx, st, []store.Key{{Pubkey: deleted.keys[0]}, {Pubkey: deleted.keys[1]}})
		return st[store.StateAvailable] == 2, fmt.Sprint(st)
	})

	// Terminal phases release.
	c.setPhase(succeeded.name, corev1.PodSucceeded)
	c.setPhase(failed.name, corev1.PodFailed)
	waitReleased(t, ctx, st, succeeded.name, succeeded.keys, 15*time.Second)
	waitReleased(t, ctx, st, failed.name, failed.keys, 15*time.Second)
	if ev := auditFor(t, ctx, st, failed.name, "release"); len(ev) != 1 || !strings.Contains(ev[0].Reason, "phase Failed") {
		t.Fatalf("audit of the Failed pod: %+v", ev)
	}

	// A terminating pod (deletionTimestamp set, grace period running) keeps its keys.
	c.gracefulDelete(terminating.name)
	// Pods force-deleted from NotReady nodes keep their keys.
	c.forceDelete(gone1.name)
	c.forceDelete(gone2.name)
	c.forceDelete(gone3.name)
	// A pod that no longer matches the selector is still running: it keeps its keys.
	relabel, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, relabeled.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	relabel.Labels = map[string]string{"other": "x"}
	if _, err := c.cs.CoreV1().Pods(c.ns).Update(ctx, relabel, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "three pods release-blocked", func() (bool, string) {
		b := s.Watcher().Blocked()
		return len(b) == 3, fmt.Sprintf("%+v", b)
	})
	quiet()
	held(t, ctx, st, live.name, live.uid, live.keys)
	held(t, ctx, st, terminating.name, terminating.uid, terminating.keys)
	held(t, ctx, st, relabeled.name, relabeled.uid, relabeled.keys)
	for _, p := range []vpod{gone1, gone2, gone3} {
		held(t, ctx, st, p.name, p.uid, p.keys)
		ev := auditFor(t, ctx, st, p.name, watcher.AuditBlocked)
		if len(ev) != 1 || ev[0].Actor != watcher.Actor || !strings.Contains(ev[0].Reason, "not Ready") {
			t.Fatalf("audit of the blocked release of %s: %+v", p.name, ev)
		}
	}
	for _, b := range s.Watcher().Blocked() {
		if b.Rule != watcher.BlockNodeNotReady {
			t.Fatalf("blocked %s for %s, want %s", b.Pod, b.Rule, watcher.BlockNodeNotReady)
		}
	}
	// Visible on the page, in the audit API and in the metrics.
	page := s.get(t, "/assignments")
	if n := strings.Count(page, "(release-blocked: node-not-ready)"); n != 9 { // 3 pods x 2 keys, and the 3 pods in the summary
		t.Fatalf("page shows %d release-blocked marks, want 9", n)
	}
	if j := s.get(t, "/assignments?format=json"); strings.Count(j, `"release_blocked":"node-not-ready: pod gone-then-`) != 3 {
		t.Fatalf("JSON lacks release_blocked: %s", j)
	}
	if a := s.get(t, "/api/v1/audit?action=release-blocked"); strings.Count(a, `"actor":"pod-watcher"`) != 3 || !strings.Contains(a, `"pod":"gone-then-ready"`) {
		t.Fatalf("audit API: %s", a)
	}
	metrics := s.get(t, "/metrics")
	if !strings.Contains(metrics, `pkmanager_release_blocked{reason="node-not-ready"} 3`) {
		t.Fatalf("metrics lack the blocked gauge:\n%s", grepLines(metrics, "release_blocked"))
	}

	// Each way a node becomes safe releases its pod's keys.
	c.setNodeReady(down, true)
	waitReleased(t, ctx, st, gone1.name, gone1.keys, 15*time.Second)
	c.deleteNode(down2)
	waitReleased(t, ctx, st, gone2.name, gone2.keys, 15*time.Second)
	c.taintOutOfService(down3)
	waitReleased(t, ctx, st, gone3.name, gone3.keys, 15*time.Second)
	for p, rule := range map[string]string{gone1.name: "is Ready", gone2.name: "was deleted", gone3.name: "out-of-service"} {
		if ev := auditFor(t, ctx, st, p, "release"); len(ev) != 1 || !strings.Contains(ev[0].Reason, rule) {
			t.Fatalf("audit of %s: %+v, want reason with %q", p, ev, rule)
		}
	}
	waitFor(t, 5*time.Second, "nothing blocked", func() (bool, string) {
		b := s.Watcher().Blocked()
		return len(b) == 0, fmt.Sprint(b)
	})
	if m := s.get(t, "/metrics"); !strings.Contains(m, `pkmanager_release_blocked{reason="node-not-ready"} 0`) {
		t.Fatalf("blocked gauge not back to 0:\n%s", grepLines(m, "release_blocked"))
	}

	// The terminating pod is still held; once the object is gone (grace over) it is released.
	held(t, ctx, st, terminating.name, terminating.uid, terminating.keys)
	c.forceDelete(terminating.name)
	waitReleased(t, ctx, st, terminating.name, terminating.keys, 15*time.Second)
	held(t, ctx, st, live.name, live.uid, live.keys)
	held(t, ctx, st, relabeled.name, relabeled.uid, relabeled.keys)
}

// TestWatcherStatefulSetRecreation: a pod recreated under the same name
// never gets keys while its predecessor may still run.
func TestWatcherStatefulSetRecreation(t *testing.T) {
	c := newCluster(t, "sts")
	ctx := c.ctx
	data := t.TempDir()
	down := c.node("down", false)
	ready := c.node("ready", true)

	s := c.startServer(srvConfig{dataDir: data, reuseDelay: time.Hour, kube: server.KubeOptions{Watch: true, UIDConflict: allocator.UIDConflictFail}})
	st := s.Store()
	old := c.pod("web-0", down, nil)
	oldKeys := s.request(ctx, "web-0", string(old.UID), 3)
	// The node drops off; the StatefulSet pod is force-deleted and recreated.
	c.forceDelete("web-0")
	cur := c.pod("web-0", ready, nil)

	// fail: the new pod's request fails clearly, and nothing changes.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := s.client(client.Security{}).RequestKeys(rctx, "web-0", string(cur.UID), 3)
	cancel()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "another pod UID") {
		t.Fatalf("request of the recreated pod: %v, want FailedPrecondition", err)
	}
	// A legacy-style request without UID gets the live pod's UID, so it fails too.
	rctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	_, err = s.client(client.Security{}).RequestKeys(rctx, "web-0", "", 3)
	cancel()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("request without UID of the recreated pod: %v, want FailedPrecondition", err)
	}
	quiet()
	held(t, ctx, st, "web-0", string(old.UID), oldKeys)
	if b := s.Watcher().Blocked(); len(b) != 1 || b[0].PodUID != string(old.UID) || b[0].Rule != watcher.BlockNodeNotReady {
		t.Fatalf("blocked: %+v", b)
	}
	s.stop()

	// wait: the request waits until the old pod's node is Ready, then gets
	// keys; the old ones are cooling-down, so they are fresh keys.
	s = c.startServer(srvConfig{dataDir: data, reuseDelay: time.Hour, kube: server.KubeOptions{Watch: true, UIDConflict: allocator.UIDConflictWait}})
	st = s.Store()
	type answer struct {
		keys []string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		resp, err := s.client(client.Security{}).RequestKeys(rctx, "web-0", string(cur.UID), 3)
		var a answer
		a.err = err
		for _, k := range resp.GetKeys() {
			a.keys = append(a.keys, fmt.Sprintf("%x", k.GetPubkey()))
		}
		got <- a
	}()
	select {
	case a := <-got:
		t.Fatalf("request answered while the predecessor may still run: %+v", a)
	case <-time.After(6 * watcherResync):
	}
	held(t, ctx, st, "web-0", string(old.UID), oldKeys)
	c.setNodeReady(down, true)
	var a answer
	select {
	case a = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("waiting request not answered after the old node became Ready")
	}
	if a.err != nil || len(a.keys) != 3 {
		t.Fatalf("waiting request: %+v", a)
	}
	for _, k := range oldKeys {
		if slices.Contains(a.keys, fmt.Sprintf("%x", k[:])) {
			t.Fatalf("the recreated pod got key %s of its predecessor", k)
		}
	}
	newKeys := podKeys(t, ctx, st, "web-0")
	if len(newKeys) != 3 || newKeys[0].PodUID != string(cur.UID) {
		t.Fatalf("store after recreation: %+v", newKeys)
	}
	if n := keyStates(t, ctx, st, []store.Key{{Pubkey: oldKeys[0]}, {Pubkey: oldKeys[1]}, {Pubkey: oldKeys[2]}})[store.StateCoolingDown]; n != 3 {
		t.Fatalf("old keys cooling-down: %d, want 3", n)
	}
}

// TestWatcherReconcileOnStart: pods deleted while the server was down are
// handled by the same rules when it starts.
func TestWatcherReconcileOnStart(t *testing.T) {
	c := newCluster(t, "restart")
	ctx := c.ctx
	data := t.TempDir()
	ready := c.node("ready", true)
	down := c.node("down", false)
	s := c.startServer(srvConfig{dataDir: data, kube: server.KubeOptions{Watch: true}})
	a := c.pod("a", ready, nil)
	b := c.pod("b", down, nil)
	live := c.pod("live", ready, nil)
	aKeys := s.request(ctx, "a", string(a.UID), 1)
	bKeys := s.request(ctx, "b", string(b.UID), 1)
	liveKeys := s.request(ctx, "live", string(live.UID), 1)
	s.stop()

	c.forceDelete("a")
	c.forceDelete("b")
	// The new process never saw a or b: their nodes are unknown, and one
	// node is NotReady, so nothing may be released yet.
	s = c.startServer(srvConfig{dataDir: data, kube: server.KubeOptions{Watch: true}})
	st := s.Store()
	waitFor(t, 15*time.Second, "a and b release-blocked", func() (bool, string) {
		bl := s.Watcher().Blocked()
		return len(bl) == 2 && bl[0].Rule == watcher.BlockNodeUnknown && bl[1].Rule == watcher.BlockNodeUnknown, fmt.Sprintf("%+v", bl)
	})
	held(t, ctx, st, "a", string(a.UID), aKeys)
	held(t, ctx, st, "b", string(b.UID), bKeys)
	// Once every node is Ready (kubelets reconciled), both are released.
	c.setNodeReady(down, true)
	waitReleased(t, ctx, st, "a", aKeys, 15*time.Second)
	waitReleased(t, ctx, st, "b", bKeys, 15*time.Second)
	if ev := auditFor(t, ctx, st, "a", "release"); len(ev) != 1 || !strings.Contains(ev[0].Reason, "every node") {
		t.Fatalf("audit of a: %+v", ev)
	}
	held(t, ctx, st, "live", string(live.UID), liveKeys)
}

// A store filled from a snapshot: the server warns (and
// pkmanager_restored_snapshot is 1) until the pod watcher has found every
// pod that holds keys running as recorded; a pod that cannot be judged yet
// (its node NotReady) keeps it so.
func TestWatcherReconcilesRestoredSnapshot(t *testing.T) {
	c := newCluster(t, "restored")
	ctx := c.ctx
	data := t.TempDir()
	ready := c.node("ready", true)
	down := c.node("down", false)
	s := c.startServer(srvConfig{dataDir: data, kube: server.KubeOptions{Watch: true}})
	live := c.pod("live", ready, nil)
	gone := c.pod("gone", down, nil)
	s.request(ctx, "live", string(live.UID), 1)
	goneKeys := s.request(ctx, "gone", string(gone.UID), 1)
	s.stop()
	// Mark the store as restore does.
	st, err := bolt.Open(filepath.Join(data, "pk.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Bind(ctx, store.BindRestoredAt, time.Now().UTC().Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	c.forceDelete("gone")

	s = c.startServer(srvConfig{dataDir: data, kube: server.KubeOptions{Watch: true}})
	if !strings.Contains(s.logs.String(), "filled from a snapshot") {
		t.Errorf("no warning about the restored snapshot in the log")
	}
	restored := func() string {
		for _, l := range strings.Split(s.get(t, "/metrics"), "\n") {
			if strings.HasPrefix(l, "pkmanager_restored_snapshot ") {
				return strings.TrimPrefix(l, "pkmanager_restored_snapshot ")
			}
		}
		return "missing"
	}
	waitFor(t, 15*time.Second, "gone release-blocked", func() (bool, string) {
		bl := s.Watcher().Blocked()
		return len(bl) == 1 && bl[0].Pod == "gone", fmt.Sprintf("%+v", bl)
	})
	quiet()
	if got := restored(); got != "1" {
		t.Fatalf("pkmanager_restored_snapshot = %s while a holder is release-blocked, want 1", got)
	}
	// Its node comes back: gone's keys are released, live runs as recorded.
	c.setNodeReady(down, true)
	waitReleased(t, ctx, s.Store(), "gone", goneKeys, 15*time.Second)
	waitFor(t, 15*time.Second, "restore reconciled", func() (bool, string) { return restored() == "0", restored() })
	b, err := s.Store().Bindings(ctx)
	if err != nil || b[store.BindRestoreReconciled] == "" {
		t.Errorf("bindings %v, %v; want %s set", b, err, store.BindRestoreReconciled)
	}
	if ev := auditFor(t, ctx, s.Store(), "", "restore-reconciled"); len(ev) != 1 {
		t.Errorf("restore-reconciled audit events: %+v", ev)
	}
	s.stop()
	// A later start does not warn again.
	s = c.startServer(srvConfig{dataDir: data, kube: server.KubeOptions{Watch: true}})
	if strings.Contains(s.logs.String(), "filled from a snapshot") {
		t.Errorf("the warning repeats after the snapshot was reconciled")
	}
}
