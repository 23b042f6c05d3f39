package watcher

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// countingReleaser counts what the watcher asks of it; in the benchmarks
// every pod runs as recorded, so it must never be asked.
type countingReleaser struct{ calls atomic.Int64 }

func (r *countingReleaser) ReleaseHolder(context.Context, string, string, string) (allocator.ReleaseResult, error) {
	r.calls.Add(1)
	return allocator.ReleaseResult{}, nil
}

func (r *countingReleaser) AdoptUID(context.Context, string, string, string) error {
	r.calls.Add(1)
	return nil
}

// fleet is a watcher over a fake cluster (fake clientset and its informers)
// of `pods` running validator pods on 100 Ready nodes, and a real bbolt
// store in which each pod holds keysPerPod keys under its UID.
type fleet struct {
	w    *Watcher
	rel  *countingReleaser
	pods []*corev1.Pod
}

func newFleet(b testing.TB, pods, keysPerPod int) *fleet {
	b.Helper()
	const ns, nodes = "validators", 100
	now := time.Now()
	objs := make([]runtime.Object, 0, pods+2*nodes)
	for i := range nodes {
		name := fmt.Sprintf("node-%03d", i)
		objs = append(objs, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.NewTime(now),
			}}},
		}, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
			Spec:       coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: now}},
		})
	}
	f := &fleet{rel: &countingReleaser{}}
	for i := range pods {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("validator-%05d", i), Namespace: ns, UID: types.UID(fmt.Sprintf("uid-%05d", i)),
				Labels: map[string]string{"app": "validator"}, CreationTimestamp: metav1.NewTime(now.Add(-time.Hour)),
			},
			Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node-%03d", i%nodes)},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		f.pods = append(f.pods, p)
		objs = append(objs, p)
	}

	st, err := bolt.Open(b.TempDir()+"/pk.db", bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := b.Context()
	total := pods * keysPerPod
	for start := 0; start < total; start += 5000 {
		batch := make([]store.NewKey, min(5000, total-start))
		for i := range batch {
			rand.Read(batch[i].Pubkey[:])
			batch[i].SealedSecret = make([]byte, 61)
			batch[i].Origin = store.OriginImported
		}
		if err := st.AddKeys(ctx, batch, store.StateAvailable, now.Add(-2*time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < pods; i = int(next.Add(1) - 1) {
				p := f.pods[i]
				if _, err := st.Claim(ctx, store.ClaimParams{Pod: p.Name, PodUID: string(p.UID), Want: keysPerPod, Now: now.Add(-30 * time.Minute), AllOrNothing: true}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	cs := fake.NewClientset(objs...)
	// The fake lists everything, deep-copied, whatever the limit; the API
	// server answers the watcher's liveness probe (Limit 1) with one pod.
	cs.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		la, ok := a.(interface{ GetListOptions() metav1.ListOptions })
		if !ok || la.GetListOptions().Limit != 1 {
			return false, nil, nil
		}
		return true, &corev1.PodList{Items: []corev1.Pod{*f.pods[0].DeepCopy()}, ListMeta: metav1.ListMeta{Continue: "more"}}, nil
	})
	f.w, err = New(Config{Client: cs, Namespace: ns, Selector: "app=validator", Store: st, Releaser: f.rel})
	if err != nil {
		b.Fatal(err)
	}
	startInformers(b, f.w)
	return f
}

// BenchmarkReconcile measures the pod watcher on a fake cluster with a real
// bbolt store: "full" is a pass over every pod holding keys (as on start-up,
// node changes and every resync), "event" the work of one pod event (the
// pass over that pod alone that follows it). Every pod runs as recorded, so
// nothing is released.
func BenchmarkReconcile(b *testing.B) {
	for _, size := range []struct{ pods, keysPerPod int }{{1000, 10}, {10000, 10}} {
		b.Run(fmt.Sprintf("pods=%d/keys=%d", size.pods, size.pods*size.keysPerPod), func(b *testing.B) {
			f := newFleet(b, size.pods, size.keysPerPod)
			b.Run("full", func(b *testing.B) {
				for b.Loop() {
					f.w.Reconcile(b.Context())
				}
			})
			b.Run("event", func(b *testing.B) {
				f.w.takeDirty() // the informers' initial events
				i := 0
				for b.Loop() {
					f.w.observePod(f.pods[i%len(f.pods)])
					pods, full := f.w.takeDirty()
					if full || len(pods) != 1 {
						b.Fatalf("after one pod event: %d pods to check, full pass %v", len(pods), full)
					}
					f.w.ReconcilePods(b.Context(), pods)
					i += 7919
				}
			})
			if n := f.rel.calls.Load(); n != 0 {
				b.Fatalf("the watcher released or adopted %d times; every pod runs as recorded", n)
			}
			if err := f.w.Ready(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// recordingStore records the pods the watcher lists keys of ("" for all).
type recordingStore struct {
	Store
	mu     sync.Mutex
	listed []string
}

func (r *recordingStore) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	r.mu.Lock()
	r.listed = append(r.listed, opts.Pod)
	r.mu.Unlock()
	return r.Store.ListKeys(ctx, opts, fn)
}

// A pod event leads to a pass over that pod alone, reading only its keys;
// a node event to a full pass.
func TestPodEventChecksThePodAlone(t *testing.T) {
	f := newFleet(t, 20, 2)
	rec := &recordingStore{Store: f.w.cfg.Store}
	f.w.cfg.Store = rec
	f.w.takeDirty()

	f.w.observePod(f.pods[7])
	pods, full := f.w.takeDirty()
	if full || !slices.Equal(pods, []string{f.pods[7].Name}) {
		t.Fatalf("after an event of pod %s: check %v, full pass %v", f.pods[7].Name, pods, full)
	}
	f.w.ReconcilePods(t.Context(), pods)
	if !slices.Equal(rec.listed, []string{f.pods[7].Name}) {
		t.Errorf("the pass listed the keys of %q, want only pod %s's", rec.listed, f.pods[7].Name)
	}

	f.w.kickFull() // as a node event does
	if _, full := f.w.takeDirty(); !full {
		t.Error("no full pass after a node event")
	}
	if n := f.rel.calls.Load(); n != 0 {
		t.Errorf("%d releases or adoptions of running pods", n)
	}
}
