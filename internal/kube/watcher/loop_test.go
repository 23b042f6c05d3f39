package watcher

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Fast tests of the watcher's safety-critical loop (Reconcile and
// ReconcilePods: the live re-check of a release, the leader gate, API
// outages, release-blocked and its audit, pruning) on a fake clientset and
// its informers, as client-go's sample-controller tests its controller.
// The same rules on a real API server: test/k8s.

const loopNS = "validators"

// memStore holds the assignments the watcher reads and the audit events it
// writes.
type memStore struct {
	mu     sync.Mutex
	keys   []store.Key
	audits []store.AuditEvent
}

func (s *memStore) ListKeys(_ context.Context, o store.ListOptions, fn func(store.Key) error) error {
	s.mu.Lock()
	keys := slices.Clone(s.keys)
	s.mu.Unlock()
	for _, k := range keys {
		if (len(o.States) > 0 && !slices.Contains(o.States, k.State)) || (o.Pod != "" && k.Pod != o.Pod) {
			continue
		}
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) AppendAudit(_ context.Context, e store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audits = append(s.audits, e)
	return nil
}

func (s *memStore) auditCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.audits)
}

// hold assigns n keys to pod under uid.
func (s *memStore) hold(pod, uid string, n int, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		var pk store.Pubkey
		pk[0], pk[1] = byte(len(s.keys)), 0xaa
		s.keys = append(s.keys, store.Key{Pubkey: pk, State: store.StateAssigned, Pod: pod, PodUID: uid, Since: since})
	}
}

// held is how many keys pod holds.
func (s *memStore) held(pod string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.keys {
		if k.Pod == pod && k.State == store.StateAssigned {
			n++
		}
	}
	return n
}

// release is what the allocator's ReleaseHolder does to the store: the
// pod's keys cool down, only while they are held under uid.
func (s *memStore) release(pod, uid string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i := range s.keys {
		k := &s.keys[i]
		if k.Pod != pod {
			continue
		}
		if k.PodUID != uid {
			return 0, store.ErrPodUIDMismatch
		}
		k.State, k.Pod, k.PodUID = store.StateCoolingDown, "", ""
		n++
	}
	return n, nil
}

type releaseCall struct{ pod, uid, reason string }

// recReleaser records the releases the watcher makes.
type recReleaser struct {
	st    *memStore
	mu    sync.Mutex
	calls []releaseCall
}

func (r *recReleaser) ReleaseHolder(_ context.Context, pod, uid, reason string) (allocator.ReleaseResult, error) {
	r.mu.Lock()
	r.calls = append(r.calls, releaseCall{pod, uid, reason})
	r.mu.Unlock()
	n, err := r.st.release(pod, uid)
	return allocator.ReleaseResult{Released: n}, err
}

func (r *recReleaser) AdoptUID(context.Context, string, string, string) error {
	return errors.New("not expected in these tests")
}

func (r *recReleaser) released() []releaseCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type flagLeader struct{ on atomic.Bool }

func (l *flagLeader) IsLeader() bool { return l.on.Load() }

// loop is a watcher over a fake cluster. Its reactors count the live pod
// reads (the re-check of a release), can make the API fail, and can answer
// live reads with a pod the informer cache does not have (a stale cache).
type loop struct {
	cs         *fake.Clientset
	w          *Watcher
	st         *memStore
	rel        *recReleaser
	leader     *flagLeader
	reconciled atomic.Int64

	liveGets atomic.Int64
	listDown atomic.Bool                // lists fail (the liveness probe among them)
	getDown  atomic.Bool                // live pod reads fail (after the liveness probe answered)
	livePod  atomic.Pointer[corev1.Pod] // answered to live reads of its name
	watches  chan string
}

func newLoop(t *testing.T, objs ...runtime.Object) *loop {
	t.Helper()
	l := &loop{st: &memStore{}, leader: &flagLeader{}, watches: make(chan string, 8)}
	l.rel = &recReleaser{st: l.st}
	l.leader.on.Store(true)
	l.cs = fake.NewClientset(objs...)
	down := errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
	l.cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if l.listDown.Load() && a.GetVerb() == "list" {
			return true, nil, down
		}
		return false, nil, nil
	})
	l.cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l.liveGets.Add(1)
		if l.getDown.Load() {
			return true, nil, down
		}
		if p := l.livePod.Load(); p != nil && p.Name == a.(k8stesting.GetAction).GetName() {
			return true, p.DeepCopy(), nil
		}
		return false, nil, nil
	})
	// The fake's watches carry only the changes made after they started:
	// the tests change the cluster once every informer watches.
	l.cs.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		l.watches <- a.GetResource().Resource
		return false, nil, nil
	})
	var err error
	l.w, err = New(Config{
		Client: l.cs, Namespace: loopNS, Selector: "app=validator", Store: l.st, Releaser: l.rel, Leader: l.leader,
		Reconciled: func(context.Context) { l.reconciled.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startInformers starts w's informers (as Run does, until the test ends)
// and waits until their caches are synced; the test then calls Reconcile
// itself.
func startInformers(tb testing.TB, w *Watcher) {
	tb.Helper()
	ctx := tb.Context()
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	tb.Cleanup(func() {
		for _, f := range w.factories {
			f.Shutdown()
		}
	})
	if !cache.WaitForCacheSync(ctx.Done(), w.pods.HasSynced, w.nodes.HasSynced, w.leases.HasSynced) {
		tb.Fatal("caches did not sync")
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
}

// start starts the informers and waits until their watches are
// established too.
func (l *loop) start(t *testing.T) {
	t.Helper()
	startInformers(t, l.w)
	seen := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(seen) < 3 {
		select {
		case r := <-l.watches:
			seen[r] = true
		case <-timeout:
			t.Fatalf("informer watches not established: %v", seen)
		}
	}
}

// deletePod deletes a pod and waits until the informer cache has seen it.
func (l *loop) deletePod(t *testing.T, name string) {
	t.Helper()
	if err := l.cs.CoreV1().Pods(loopNS).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := l.w.PodUID(name); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the informer cache still has pod %s", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readyNode(name string, now time.Time) []runtime.Object {
	return []runtime.Object{
		&corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.NewTime(now),
			}}},
		},
		&coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
			Spec:       coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: now}},
		},
	}
}

func notReadyNode(name string, now time.Time) runtime.Object {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionUnknown, LastHeartbeatTime: metav1.NewTime(now.Add(-time.Hour)),
		}}},
	}
}

func validatorPod(name, uid, node string, created time.Time) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: loopNS, UID: types.UID(uid),
			Labels: map[string]string{"app": "validator"}, CreationTimestamp: metav1.NewTime(created),
		},
		Spec:   corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// A pod that is deleted while its Ready node stays is released, by its
// recorded UID, once the live API confirms it is gone; while it ran, nothing
// was released and the pass counted as reconciled.
func TestLoopReleasesDeletedPodOnReadyNode(t *testing.T) {
	now := time.Now()
	objs := append(readyNode("n1", now), validatorPod("v-0", "u0", "n1", now.Add(-time.Hour)))
	l := newLoop(t, objs...)
	l.st.hold("v-0", "u0", 2, now.Add(-30*time.Minute))
	l.start(t)

	l.w.Reconcile(t.Context())
	if got := l.rel.released(); len(got) != 0 {
		t.Fatalf("released a running pod's keys: %+v", got)
	}
	if l.reconciled.Load() != 1 {
		t.Fatalf("a pass in which every pod runs as recorded did not count as reconciled (%d)", l.reconciled.Load())
	}

	l.deletePod(t, "v-0")
	gets := l.liveGets.Load()
	l.w.ReconcilePods(t.Context(), []string{"v-0"}) // the pod's event
	got := l.rel.released()
	if len(got) != 1 || got[0].pod != "v-0" || got[0].uid != "u0" || !strings.Contains(got[0].reason, "its node n1 is Ready") {
		t.Fatalf("releases after the deletion: %+v, want v-0 under u0 because node n1 is Ready", got)
	}
	if l.liveGets.Load() == gets {
		t.Fatal("released without reading the pod from the live API")
	}
	if n := l.st.held("v-0"); n != 0 {
		t.Fatalf("v-0 still holds %d keys", n)
	}
	if v := testutil.ToFloat64(l.w.m.releases.WithLabelValues(RuleNodeReady)); v != 1 {
		t.Errorf("pkmanager_watcher_releases_total{rule=%q} = %v, want 1", RuleNodeReady, v)
	}
	l.w.Reconcile(t.Context())
	if got := l.rel.released(); len(got) != 1 {
		t.Fatalf("released again: %+v", got)
	}
}

// The informer cache may miss a pod the API has (a stale cache): a release
// the cache suggests is re-checked against the live API, which keeps the
// keys; only when the API confirms the pod gone are they released.
func TestLoopLiveRecheckKeepsPodTheCacheMisses(t *testing.T) {
	now := time.Now()
	l := newLoop(t, readyNode("n1", now)...)
	l.st.hold("v-0", "u0", 1, now.Add(-30*time.Minute))
	l.livePod.Store(validatorPod("v-0", "u0", "n1", now.Add(-time.Hour)))
	l.start(t)

	l.w.Reconcile(t.Context())
	if got := l.rel.released(); len(got) != 0 {
		t.Fatalf("released on the cache's word although the API has the pod: %+v", got)
	}
	if l.liveGets.Load() != 1 {
		t.Fatalf("live pod reads: %d, want 1 (the re-check)", l.liveGets.Load())
	}
	if n := l.st.held("v-0"); n != 1 {
		t.Fatalf("v-0 holds %d keys, want 1", n)
	}

	l.livePod.Store(nil) // now gone from the API too
	l.w.Reconcile(t.Context())
	got := l.rel.released()
	// The live read showed the pod bound to n1: its node is known now.
	if len(got) != 1 || got[0].uid != "u0" || !strings.Contains(got[0].reason, "its node n1 is Ready") {
		t.Fatalf("releases once the API has no pod: %+v, want v-0 (its node n1 is Ready)", got)
	}
}

// Only the leader releases, and nothing is released before the caches have
// synced; a replica that is not the leader does not even re-check.
func TestLoopLeaderGate(t *testing.T) {
	now := time.Now()
	l := newLoop(t, readyNode("n1", now)...)
	l.st.hold("v-0", "u0", 1, now.Add(-30*time.Minute))

	l.w.Reconcile(t.Context()) // caches not synced
	if got := l.rel.released(); len(got) != 0 {
		t.Fatalf("released before the caches synced: %+v", got)
	}
	l.start(t)
	l.leader.on.Store(false)
	l.w.Reconcile(t.Context())
	l.w.ReconcilePods(t.Context(), []string{"v-0"})
	if got := l.rel.released(); len(got) != 0 {
		t.Fatalf("a replica that is not the leader released: %+v", got)
	}
	if n := l.liveGets.Load(); n != 0 {
		t.Fatalf("a replica that is not the leader re-checked %d times", n)
	}
	l.leader.on.Store(true)
	l.w.Reconcile(t.Context())
	if got := l.rel.released(); len(got) != 1 || got[0].pod != "v-0" {
		t.Fatalf("the leader's releases: %+v, want v-0", got)
	}
}

// While the API is unreachable (the liveness probe fails, or the live
// re-check does) nothing is released and Ready reports the outage, also
// when the calls a release needs would answer; when it answers again the
// release goes ahead.
func TestLoopAPIDownReleasesNothing(t *testing.T) {
	now := time.Now()
	objs := append(readyNode("n1", now), validatorPod("v-0", "u0", "n1", now.Add(-time.Hour)))
	l := newLoop(t, objs...)
	l.st.hold("v-0", "u0", 1, now.Add(-30*time.Minute))
	l.start(t)
	l.deletePod(t, "v-0")

	for name, fail := range map[string]*atomic.Bool{"liveness probe": &l.listDown, "live re-check": &l.getDown} {
		fail.Store(true)
		l.w.Reconcile(t.Context())
		l.w.ReconcilePods(t.Context(), []string{"v-0"})
		if got := l.rel.released(); len(got) != 0 {
			t.Fatalf("%s failing: released %+v", name, got)
		}
		if err := l.w.Ready(); err == nil || !strings.Contains(err.Error(), "kubernetes API unreachable") {
			t.Fatalf("%s failing: Ready() = %v, want the outage", name, err)
		}
		if v := testutil.ToFloat64(l.w.m.apiUp); v != 0 {
			t.Fatalf("%s failing: pkmanager_kubernetes_api_up = %v", name, v)
		}
		fail.Store(false)
	}
	l.w.Reconcile(t.Context())
	if got := l.rel.released(); len(got) != 1 {
		t.Fatalf("releases once the API answers: %+v, want v-0", got)
	}
	if err := l.w.Ready(); err != nil {
		t.Fatalf("Ready() after the outage: %v", err)
	}
}

// A pod gone from the API whose node is not Ready is release-blocked: its
// keys stay, Blocked and the gauge show it, the leader records it in the
// audit trail once (a replica that is not the leader not at all), and it is
// forgotten once the pod holds nothing any more.
func TestLoopBlockAuditsOnceAndPrunes(t *testing.T) {
	now := time.Now()
	l := newLoop(t, notReadyNode("n2", now), validatorPod("v-0", "u0", "n2", now.Add(-time.Hour)))
	l.st.hold("v-0", "u0", 1, now.Add(-30*time.Minute))
	l.start(t)
	l.deletePod(t, "v-0")
	gauge := func() float64 { return testutil.ToFloat64(l.w.m.blocked.WithLabelValues(BlockNodeNotReady)) }

	l.leader.on.Store(false)
	l.w.Reconcile(t.Context())
	b := l.w.Blocked()
	if len(b) != 1 || b[0].Pod != "v-0" || b[0].PodUID != "u0" || b[0].Rule != BlockNodeNotReady {
		t.Fatalf("Blocked() = %+v, want v-0 (u0) %s", b, BlockNodeNotReady)
	}
	if g := gauge(); g != 1 {
		t.Fatalf("pkmanager_release_blocked{reason=%q} = %v, want 1", BlockNodeNotReady, g)
	}
	if n := l.st.auditCount(); n != 0 {
		t.Fatalf("a replica that is not the leader wrote %d audit events", n)
	}
	l.leader.on.Store(true)
	l.w.Reconcile(t.Context())
	l.w.Reconcile(t.Context())
	if n := l.st.auditCount(); n != 1 {
		t.Fatalf("audit events of one blocked pod over two passes: %d, want 1", n)
	}
	if e := l.st.audits[0]; e.Action != AuditBlocked || e.Pod != "v-0" || e.PodUID != "u0" || !strings.Contains(e.Reason, "node n2 is not Ready") {
		t.Fatalf("audit event %+v", e)
	}
	if got := l.rel.released(); len(got) != 0 || l.st.held("v-0") != 1 {
		t.Fatalf("released a blocked pod's keys: %+v", got)
	}
	if l.reconciled.Load() != 0 {
		t.Fatal("a pass with a blocked pod counted as reconciled")
	}

	if _, err := l.st.release("v-0", "u0"); err != nil { // an operator's release
		t.Fatal(err)
	}
	l.w.Reconcile(t.Context())
	if b := l.w.Blocked(); len(b) != 0 {
		t.Fatalf("Blocked() after the keys were released = %+v", b)
	}
	if g := gauge(); g != 0 {
		t.Fatalf("pkmanager_release_blocked{reason=%q} = %v after the release, want 0", BlockNodeNotReady, g)
	}
}
