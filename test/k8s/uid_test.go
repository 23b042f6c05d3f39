package k8s_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/server"
	"github.com/pkmanager/pkmanager/internal/store"
	corev1 "k8s.io/api/core/v1"
)

// requestErr asks for n keys of pod under uid within d and returns them or
// the error.
func (r *srv) requestErr(ctx context.Context, pod, uid string, n uint32, d time.Duration) ([]store.Pubkey, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := r.client(client.Security{}).RequestKeys(ctx, pod, uid, n)
	if err != nil {
		return nil, err
	}
	out := make([]store.Pubkey, len(resp.GetKeys()))
	for i, k := range resp.GetKeys() {
		copy(out[i][:], k.GetPubkey())
	}
	return out, nil
}

// Keys recorded without a pod UID (a server that ran without the watcher)
// are never handed to a pod of that name created after them: its request
// waits while the watcher judges the old holder gone (every node safe) and
// releases only the keys recorded without a UID.
func TestUnknownUIDSuccessorWaits(t *testing.T) {
	c := newCluster(t, "uid-succ")
	ctx := c.ctx
	data := t.TempDir()
	ready := c.node("ready", true)
	old := c.pod("v-0", ready, nil)
	// No watcher, no auth: the request records no UID.
	s := c.startServer(srvConfig{dataDir: data, reuseDelay: time.Hour})
	oldKeys := s.request(ctx, "v-0", "", 2)
	if k := podKeys(t, ctx, s.Store(), "v-0"); len(k) != 2 || k[0].PodUID != "" {
		t.Fatalf("setup: keys %+v, want 2 without a UID", k)
	}
	s.stop()
	c.forceDelete("v-0")
	time.Sleep(1100 * time.Millisecond) // creation timestamps have whole seconds
	succ := c.pod("v-0", ready, nil)
	if succ.UID == old.UID {
		t.Fatal("same UID")
	}

	s = c.startServer(srvConfig{dataDir: data, reuseDelay: time.Hour,
		kube: server.KubeOptions{Watch: true, UIDMargin: 100 * time.Millisecond, UIDConflict: allocator.UIDConflictWait, UIDConflictPoll: 200 * time.Millisecond}})
	got, err := s.requestErr(ctx, "v-0", string(succ.UID), 2, 30*time.Second)
	if err != nil {
		t.Fatalf("successor's request: %v", err)
	}
	for _, k := range got {
		if slices.Contains(oldKeys, k) {
			t.Fatalf("the successor got key %s of the earlier pod of its name", k)
		}
	}
	st := s.Store()
	for _, pk := range oldKeys {
		k, err := st.GetKey(ctx, pk)
		if err != nil || k.State != store.StateCoolingDown {
			t.Errorf("old key %s: %+v, %v; want cooling-down", pk, k.State, err)
		}
	}
	ev := auditFor(t, ctx, st, "v-0", "release")
	if len(ev) != 1 || ev[0].Actor != watcher.Actor || !strings.Contains(ev[0].Reason, "created after") || len(ev[0].Pubkeys) != 2 {
		t.Fatalf("release audit: %+v", ev)
	}
	held(t, ctx, st, "v-0", string(succ.UID), got)
}

// A pod that existed when its keys were recorded without a UID is their
// holder: the watcher records its UID, and the pod's own request (with its
// UID) then gets them back.
func TestWatcherAdoptsUIDOfHolder(t *testing.T) {
	c := newCluster(t, "uid-adopt")
	ctx := c.ctx
	data := t.TempDir()
	ready := c.node("ready", true)
	p := c.pod("v-0", ready, nil)
	time.Sleep(1100 * time.Millisecond) // the keys come clearly after the pod
	s := c.startServer(srvConfig{dataDir: data})
	keys := s.request(ctx, "v-0", "", 2)
	s.stop()

	s = c.startServer(srvConfig{dataDir: data, kube: server.KubeOptions{Watch: true, UIDMargin: 100 * time.Millisecond}})
	st := s.Store()
	// The watcher records the UID some time after it starts; the store
	// writes it and its audit event (with both keys) in one transaction.
	waitFor(t, 15*time.Second, "the holder's UID recorded and audited", func() (bool, string) {
		k := podKeys(t, ctx, st, "v-0")
		ev := auditFor(t, ctx, st, "v-0", store.AuditUIDAdopted)
		return len(k) == 2 && k[0].PodUID == string(p.UID) && k[1].PodUID == string(p.UID) &&
			len(ev) == 1 && ev[0].PodUID == string(p.UID) && len(ev[0].Pubkeys) == 2, fmt.Sprintf("keys %+v, audit %+v", k, ev)
	})
	got := s.request(ctx, "v-0", string(p.UID), 2)
	slices.SortFunc(got, func(a, b store.Pubkey) int { return strings.Compare(a.String(), b.String()) })
	slices.SortFunc(keys, func(a, b store.Pubkey) int { return strings.Compare(a.String(), b.String()) })
	if !slices.Equal(got, keys) {
		t.Fatalf("the holder's own request got %v, want its keys %v", got, keys)
	}
	// Its end releases them, judged by the recorded UID.
	c.setPhase("v-0", corev1.PodSucceeded)
	waitReleased(t, ctx, st, "v-0", keys, 15*time.Second)
}

// A Ready=True condition is not believed once the node's Lease stops being
// renewed: a force-deleted pod's keys stay held (release-blocked) until the
// heartbeat comes back.
func TestWatcherDistrustsStaleNodeLease(t *testing.T) {
	c := newCluster(t, "lease")
	ctx := c.ctx
	n := c.node("silent", true)
	s := c.startServer(srvConfig{kube: server.KubeOptions{Watch: true, NodeGracePeriod: 3 * time.Second}})
	p := c.pod("v-0", n, nil)
	keys := s.request(ctx, "v-0", string(p.UID), 1)
	c.stopHeartbeat(n)
	// Past the grace period the node's Ready condition is stale.
	time.Sleep(4 * time.Second)
	c.forceDelete("v-0")
	waitFor(t, 15*time.Second, "v-0 release-blocked", func() (bool, string) {
		bl := s.Watcher().Blocked()
		return len(bl) == 1 && bl[0].Rule == watcher.BlockNodeNotReady && strings.Contains(bl[0].Reason, "heartbeat"), fmt.Sprintf("%+v", bl)
	})
	quiet()
	held(t, ctx, s.Store(), "v-0", string(p.UID), keys)
	// The kubelet is back: its heartbeat is fresh and the node Ready.
	l, err := c.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt := metav1.NewMicroTime(time.Now())
	l.Spec.RenewTime = &rt
	if _, err := c.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, ctx, s.Store(), "v-0", keys, 15*time.Second)
}
