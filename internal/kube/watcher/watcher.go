package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Actor is the actor recorded in the audit trail for the watcher's decisions.
const Actor = "pod-watcher"

// AuditBlocked is the audit action of a release-blocked decision.
const AuditBlocked = "release-blocked"

// Defaults.
const (
	DefaultResync     = 30 * time.Second
	DefaultAPITimeout = 10 * time.Second
)

// Store is what the watcher reads and records.
type Store interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
	AppendAudit(ctx context.Context, e store.AuditEvent) error
}

// Releaser releases a pod's keys and records the UID of their holder
// (*allocator.Allocator).
type Releaser interface {
	// ReleaseHolder releases the pod's keys only while they are held under
	// exactly podUID ("" for keys recorded without a UID).
	ReleaseHolder(ctx context.Context, pod, podUID, reason string) (allocator.ReleaseResult, error)
	// AdoptUID records uid as the UID of the pod's keys recorded without
	// one (the watcher found their holder).
	AdoptUID(ctx context.Context, pod, uid, reason string) error
}

// Leader says whether this replica may release keys now. It is asked right
// before every release.
type Leader interface {
	IsLeader() bool
}

// Config configures a Watcher. Client, Namespace, Store and Releaser are
// required.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	// Selector selects the validator pods (label selector syntax); "" is all
	// pods of the namespace.
	Selector string
	Store    Store
	Releaser Releaser
	// Leader gates releases and audit entries; nil means this replica always
	// may (single replica).
	Leader Leader
	// Resync is the period of full reconciliations besides the event-driven
	// ones (default 30 s).
	Resync time.Duration
	// APITimeout bounds each live API call (default 10 s).
	APITimeout time.Duration
	// NodeGracePeriod: a node whose heartbeat (its Lease in kube-node-lease,
	// else its Ready condition's) is older than this is not Ready, whatever
	// its condition says (DefaultNodeGracePeriod when 0).
	NodeGracePeriod time.Duration
	// UIDMargin replaces watcher.UIDMargin when not 0 (tests).
	UIDMargin time.Duration
	// Registerer receives the watcher's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
	// Reconciled, when set, is called after every complete reconciliation
	// in which every pod holding keys was found running as recorded
	// (nothing to release, nothing blocked).
	Reconciled func(ctx context.Context)
}

// Blocked is a pod whose keys are held although its object is gone.
type Blocked struct {
	Pod    string
	PodUID string
	Rule   string // BlockNodeNotReady, BlockNodeUnknown, BlockUIDUnknown
	Reason string
	Since  time.Time
}

// Watcher releases the keys of pods that can no longer run. Create it with
// New and run it with Run.
type Watcher struct {
	cfg         Config
	sel         labels.Selector
	log         *slog.Logger
	pods        cache.SharedIndexInformer
	nodes       cache.SharedIndexInformer
	podLister   corelisters.PodLister
	nodeLister  corelisters.NodeLister
	leaseLister coordinationlisters.LeaseLister
	leases      cache.SharedIndexInformer
	factories   []informers.SharedInformerFactory
	trigger     chan struct{}
	m           *watcherMetrics

	mu          sync.Mutex
	lastNode    map[string]string // pod UID -> node it was seen bound to
	dirty       map[string]bool   // pods with events since the last pass
	fullDue     bool              // the next pass checks every pod (node events, failures)
	blocked     map[string]*blockedEntry
	synced      bool
	apiErr      error
	apiErrSince time.Time
}

type blockedEntry struct {
	Blocked
	audited bool
}

// New checks cfg and prepares the informers (nothing runs before Run).
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil || cfg.Store == nil || cfg.Releaser == nil {
		return nil, errors.New("watcher: client, store and releaser are required")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("watcher: a namespace is required")
	}
	sel, err := labels.Parse(cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("watcher: pod selector %q: %w", cfg.Selector, err)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.APITimeout <= 0 {
		cfg.APITimeout = DefaultAPITimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watcher{
		cfg:      cfg,
		sel:      sel,
		log:      cfg.Logger.With(slog.String("component", Actor)),
		trigger:  make(chan struct{}, 1),
		lastNode: make(map[string]string),
		dirty:    make(map[string]bool),
		blocked:  make(map[string]*blockedEntry),
		m:        newWatcherMetrics(),
	}
	if cfg.Registerer != nil {
		if err := w.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("watcher: register metrics: %w", err)
		}
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel.String() }))
	nodeFactory := informers.NewSharedInformerFactory(cfg.Client, 0)
	leaseFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithNamespace(corev1.NamespaceNodeLease))
	w.factories = []informers.SharedInformerFactory{podFactory, nodeFactory, leaseFactory}
	w.leases = leaseFactory.Coordination().V1().Leases().Informer()
	w.leaseLister = leaseFactory.Coordination().V1().Leases().Lister()
	w.pods = podFactory.Core().V1().Pods().Informer()
	w.podLister = podFactory.Core().V1().Pods().Lister()
	w.nodes = nodeFactory.Core().V1().Nodes().Informer()
	w.nodeLister = nodeFactory.Core().V1().Nodes().Lister()

	if _, err := w.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.observePod(obj) },
		UpdateFunc: func(_, obj any) { w.observePod(obj) },
		DeleteFunc: func(obj any) { w.observePod(obj) },
	}); err != nil {
		return nil, fmt.Errorf("watcher: pod handler: %w", err)
	}
	if _, err := w.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { w.kickFull() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := cur.(*corev1.Node)
			if !ok1 || !ok2 || w.nodeState(o) != w.nodeState(n) {
				w.kickFull() // readiness or taints changed; heartbeats alone do not
			}
		},
		DeleteFunc: func(any) { w.kickFull() },
	}); err != nil {
		return nil, fmt.Errorf("watcher: node handler: %w", err)
	}
	onWatchErr := func(_ context.Context, _ *cache.Reflector, err error) {
		w.setAPIErr(fmt.Errorf("watch: %w", err))
		w.kickFull()
	}
	if err := w.pods.SetWatchErrorHandlerWithContext(onWatchErr); err != nil {
		return nil, err
	}
	if err := w.nodes.SetWatchErrorHandlerWithContext(onWatchErr); err != nil {
		return nil, err
	}
	if err := w.leases.SetWatchErrorHandlerWithContext(onWatchErr); err != nil {
		return nil, err
	}
	return w, nil
}

// observePod remembers the node a pod is bound to and marks the pod for the
// next pass, which checks only the pods with events (unless a full pass is
// due): the work of an event does not grow with the number of pods. A
// pod's nodeName never changes once set, so it stays true after the pod is
// gone, also when the deletion itself was missed (DeletedFinalStateUnknown).
func (w *Watcher) observePod(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	w.mu.Lock()
	if !ok {
		w.fullDue = true
	} else {
		if p.Spec.NodeName != "" {
			w.lastNode[string(p.UID)] = p.Spec.NodeName
		}
		w.dirty[p.Name] = true
	}
	w.mu.Unlock()
	w.kick()
}

// kickFull asks for a pass over every pod that holds keys (a node changed,
// or a watch failed).
func (w *Watcher) kickFull() {
	w.mu.Lock()
	w.fullDue = true
	w.mu.Unlock()
	w.kick()
}

// takeDirty returns the pods with events since the last call and whether a
// full pass is due, and clears both.
func (w *Watcher) takeDirty() (pods []string, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range w.dirty {
		pods = append(pods, p)
	}
	clear(w.dirty)
	full, w.fullDue = w.fullDue, false
	slices.Sort(pods)
	return pods, full
}

func (w *Watcher) kick() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Run watches and reconciles until ctx ends. It releases nothing before the
// informer caches have synced; while the API is unreachable it keeps every
// key and Ready reports the outage.
func (w *Watcher) Run(ctx context.Context) {
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range w.factories {
			f.Shutdown()
		}
	}()
	w.log.InfoContext(ctx, "pod watcher started", slog.String("namespace", w.cfg.Namespace),
		slog.String("selector", w.sel.String()), slog.Duration("resync", w.cfg.Resync))
	if !cache.WaitForCacheSync(ctx.Done(), w.pods.HasSynced, w.nodes.HasSynced, w.leases.HasSynced) {
		return
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	w.log.InfoContext(ctx, "pod watcher caches synced; reconciling the store's assignments")

	resync := time.NewTicker(w.cfg.Resync)
	defer resync.Stop()
	w.takeDirty() // the first pass checks every pod
	var pods []string
	full := true
	for {
		if full {
			w.Reconcile(ctx)
		} else {
			w.ReconcilePods(ctx, pods)
		}
		resynced := false
		select {
		case <-ctx.Done():
			return
		case <-w.trigger:
		case <-resync.C:
			resynced = true
		}
		// Let a burst of events settle into one pass.
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		pods, full = w.takeDirty()
		full = full || resynced
	}
}

// Ready reports nil when the caches are synced and the API answered the last
// check; otherwise why the watcher is degraded (it releases nothing then).
func (w *Watcher) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.synced {
		return errors.New("pod watcher: kubernetes informer caches not synced yet (no keys are released meanwhile)")
	}
	if w.apiErr != nil {
		return fmt.Errorf("pod watcher degraded: kubernetes API unreachable since %s (no keys are released meanwhile): %w",
			w.apiErrSince.UTC().Format(time.RFC3339), w.apiErr)
	}
	return nil
}

// Blocked returns the pods whose keys are release-blocked, by pod name.
func (w *Watcher) Blocked() []Blocked {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Blocked, 0, len(w.blocked))
	for _, b := range w.blocked {
		out = append(out, b.Blocked)
	}
	slices.SortFunc(out, func(a, b Blocked) int { return strings.Compare(a.Pod, b.Pod) })
	return out
}

// PodUID returns the UID of the selected pod named name from the informer
// cache ("" and false when the cache has none).
func (w *Watcher) PodUID(name string) (string, bool) {
	p, err := w.podLister.Pods(w.cfg.Namespace).Get(name)
	if err != nil {
		return "", false
	}
	return string(p.UID), true
}

func (w *Watcher) setAPIErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		if w.apiErr != nil {
			w.log.Info("kubernetes API reachable again; pod watcher resumes",
				slog.Duration("outage", w.cfg.Now().Sub(w.apiErrSince).Round(time.Millisecond)))
		}
		w.apiErr = nil
		w.m.apiUp.Set(1)
		return
	}
	if w.apiErr == nil {
		w.apiErrSince = w.cfg.Now()
		w.log.Warn("kubernetes API unreachable: pod watcher releases nothing until it answers again", slog.Any("error", err))
	}
	w.apiErr = err
	w.m.apiUp.Set(0)
}

func (w *Watcher) isLeader() bool { return w.cfg.Leader == nil || w.cfg.Leader.IsLeader() }

// Reconcile checks every pod that holds keys once. Run calls it; tests may
// call it directly.
func (w *Watcher) Reconcile(ctx context.Context) {
	w.mu.Lock()
	synced := w.synced
	w.mu.Unlock()
	if !synced {
		return
	}
	defer w.m.reconciles.Inc()
	if !w.apiAnswers(ctx) {
		return
	}
	held, err := w.assignments(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			w.log.ErrorContext(ctx, "pod watcher: list assignments", slog.Any("error", err))
		}
		return
	}
	pods := make([]string, 0, len(held))
	for p := range held {
		pods = append(pods, p)
	}
	slices.Sort(pods)
	allKept := true
	for _, pod := range pods {
		if ctx.Err() != nil {
			return
		}
		kept, ok := w.reconcilePod(ctx, pod, held[pod])
		if !ok {
			return // API failed mid-pass: stop, degraded
		}
		allKept = allKept && kept
	}
	w.prune(held)
	w.m.lastReconcile.SetToCurrentTime()
	if allKept && w.cfg.Reconciled != nil {
		w.cfg.Reconciled(ctx)
	}
}

// ReconcilePods checks the named pods (those with events) as Reconcile
// checks every pod, reading only their own keys from the store. When the
// store or the API fails, the next pass is a full one.
func (w *Watcher) ReconcilePods(ctx context.Context, pods []string) {
	w.mu.Lock()
	synced := w.synced
	w.mu.Unlock()
	if !synced || len(pods) == 0 {
		return
	}
	ok := w.apiAnswers(ctx)
	for _, pod := range pods {
		if !ok || ctx.Err() != nil {
			break
		}
		held, err := w.assignments(ctx, pod)
		if err != nil {
			if ctx.Err() == nil {
				w.log.ErrorContext(ctx, "pod watcher: list the assignments of a pod", slog.String("pod", pod), slog.Any("error", err))
			}
			ok = false
			break
		}
		h, holds := held[pod]
		if !holds {
			w.mu.Lock()
			if _, was := w.blocked[pod]; was {
				delete(w.blocked, pod)
				w.publishBlocked()
			}
			w.mu.Unlock()
			continue
		}
		_, ok = w.reconcilePod(ctx, pod, h)
	}
	if !ok {
		w.mu.Lock()
		w.fullDue = true
		w.mu.Unlock()
	}
}

// apiAnswers makes a live call first, and records whether the API
// answered: the caches keep serving stale data while it is unreachable.
func (w *Watcher) apiAnswers(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, w.cfg.APITimeout)
	_, err := w.cfg.Client.CoreV1().Pods(w.cfg.Namespace).List(pctx, metav1.ListOptions{LabelSelector: w.sel.String(), Limit: 1})
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.setAPIErr(err)
		}
		return false
	}
	w.setAPIErr(nil)
	return true
}

// reconcilePod decides about one pod; kept reports a Keep verdict (the pod
// runs as recorded), ok is false when the live API failed.
func (w *Watcher) reconcilePod(ctx context.Context, pod string, h holding) (kept, ok bool) {
	uid := h.uid
	d := Decide(w.cachedFacts(pod, h))
	if d.Verdict == Release {
		if !w.isLeader() {
			w.log.DebugContext(ctx, "pod watcher: not the leader; leaving the release to the leader", slog.String("pod", pod))
			return false, true
		}
		// Confirm against the API itself, not the cache.
		f, err := w.liveFacts(ctx, pod, h)
		if err != nil {
			if ctx.Err() == nil {
				w.setAPIErr(err)
			}
			return false, false
		}
		d = Decide(f)
	}
	switch d.Verdict {
	case Keep:
		w.unblock(ctx, pod)
		if d.AdoptUID != "" && w.isLeader() {
			reason := fmt.Sprintf("pod %s's keys were recorded without a pod UID; the pod named so now (uid %s) existed when they were assigned, so it holds them", pod, d.AdoptUID)
			if err := w.cfg.Releaser.AdoptUID(store.WithActor(ctx, Actor), pod, d.AdoptUID, reason); err != nil {
				w.log.WarnContext(ctx, "pod watcher: record the holder's pod UID", slog.String("pod", pod), slog.Any("error", err))
				return false, true
			}
			w.log.InfoContext(ctx, "pod watcher recorded the holder's pod UID", slog.String("pod", pod), slog.String("pod_uid", d.AdoptUID))
		}
		return d.AdoptUID == "", true
	case Block:
		w.block(ctx, pod, uid, d)
	case Release:
		if !w.isLeader() {
			return false, true
		}
		// Only the holder decided about: a successor that holds the name by
		// now keeps its keys.
		res, err := w.cfg.Releaser.ReleaseHolder(store.WithActor(ctx, Actor), pod, uid, d.Reason)
		if err != nil {
			level := slog.LevelError
			if errors.Is(err, store.ErrPodUIDMismatch) {
				level = slog.LevelInfo // a successor holds the name now: nothing of the old UID left
			}
			w.log.Log(ctx, level, "pod watcher: release failed", slog.String("pod", pod),
				slog.String("pod_uid", uid), slog.String("rule", d.Rule), slog.Any("error", err))
			return false, true
		}
		w.m.releases.WithLabelValues(d.Rule).Inc()
		w.log.InfoContext(ctx, "pod watcher released keys", slog.String("pod", pod), slog.String("pod_uid", uid),
			slog.Int("keys", res.Released), slog.String("rule", d.Rule), slog.String("reason", d.Reason),
			slog.Time("reusable_from", res.CoolingUntil))
		w.mu.Lock()
		delete(w.blocked, pod)
		w.publishBlocked()
		w.mu.Unlock()
	}
	return false, true
}

// holding is what the store says of a pod that holds keys.
type holding struct {
	uid   string    // the recorded UID
	since time.Time // the earliest Since of its keys
}

// assignments returns pod -> holding of every pod holding keys (or intended
// pending-deposit keys), or only of the named pod.
func (w *Watcher) assignments(ctx context.Context, pod string) (map[string]holding, error) {
	held := make(map[string]holding)
	err := w.cfg.Store.ListKeys(ctx, store.ListOptions{States: []store.State{store.StateAssigned, store.StatePendingDeposit}, Pod: pod},
		func(k store.Key) error {
			if k.Pod == "" {
				return nil
			}
			h, ok := held[k.Pod]
			if !ok || k.Since.Before(h.since) {
				h.since = k.Since
			}
			if !ok || h.uid == "" {
				h.uid = k.PodUID
			}
			held[k.Pod] = h
			return nil
		})
	return held, err
}

func (w *Watcher) nodeOf(uid string) string {
	if uid == "" {
		return ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastNode[uid]
}

// nodeState reads a node from the cache, with its Lease, at the watcher's
// now.
func (w *Watcher) nodeState(n *corev1.Node) Node {
	lease, err := w.leaseLister.Leases(corev1.NamespaceNodeLease).Get(n.Name)
	if err != nil {
		lease = nil
	}
	return NodeState(n, lease, w.cfg.Now(), w.cfg.NodeGracePeriod)
}

// cachedFacts reads the informer caches.
func (w *Watcher) cachedFacts(pod string, h holding) Facts {
	f := Facts{Pod: pod, RecordedUID: h.uid, HeldSince: h.since, UIDMargin: w.cfg.UIDMargin}
	if p, err := w.podLister.Pods(w.cfg.Namespace).Get(pod); err == nil {
		f.Current = PodState(p)
		if holder, ambiguous := Holder(f); holder || ambiguous {
			return f
		}
	}
	if name := w.nodeOf(h.uid); name != "" {
		n := Node{Name: name}
		if obj, err := w.nodeLister.Get(name); err == nil {
			n = w.nodeState(obj)
		}
		f.LastNode = &n
		return f
	}
	nodes, _ := w.nodeLister.List(labels.Everything())
	f.AllNodesSafe = true
	for _, n := range nodes {
		f.AllNodesSafe = f.AllNodesSafe && w.nodeState(n).Safe()
	}
	return f
}

// liveFacts reads the API (uncached, the pod without the selector: a pod
// whose labels changed still runs; nodes with their Leases).
func (w *Watcher) liveFacts(ctx context.Context, pod string, h holding) (Facts, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.APITimeout)
	defer cancel()
	core := w.cfg.Client.CoreV1()
	f := Facts{Pod: pod, RecordedUID: h.uid, HeldSince: h.since, UIDMargin: w.cfg.UIDMargin}
	p, err := core.Pods(w.cfg.Namespace).Get(ctx, pod, metav1.GetOptions{})
	switch {
	case err == nil:
		f.Current = PodState(p)
		if p.Spec.NodeName != "" {
			w.observePod(p)
		}
		if holder, ambiguous := Holder(f); holder || ambiguous {
			return f, nil
		}
	case !apierrors.IsNotFound(err):
		return f, fmt.Errorf("get pod %s: %w", pod, err)
	}
	leases := map[string]*coordinationv1.Lease{}
	if name := w.nodeOf(h.uid); name != "" {
		n := Node{Name: name}
		obj, err := core.Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			l, err := w.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return f, fmt.Errorf("get the lease of node %s: %w", name, err)
			}
			if err == nil {
				leases[name] = l
			}
			n = NodeState(obj, leases[name], w.cfg.Now(), w.cfg.NodeGracePeriod)
		case !apierrors.IsNotFound(err):
			return f, fmt.Errorf("get node %s: %w", name, err)
		}
		f.LastNode = &n
		return f, nil
	}
	list, err := core.Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list nodes: %w", err)
	}
	ll, err := w.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list node leases: %w", err)
	}
	for i := range ll.Items {
		leases[ll.Items[i].Name] = &ll.Items[i]
	}
	f.AllNodesSafe = true
	for i := range list.Items {
		n := &list.Items[i]
		f.AllNodesSafe = f.AllNodesSafe && NodeState(n, leases[n.Name], w.cfg.Now(), w.cfg.NodeGracePeriod).Safe()
	}
	return f, nil
}

func (w *Watcher) block(ctx context.Context, pod, uid string, d Decision) {
	w.mu.Lock()
	e := w.blocked[pod]
	changed := e == nil || e.Rule != d.Rule || e.PodUID != uid
	if changed {
		e = &blockedEntry{Blocked: Blocked{Pod: pod, PodUID: uid, Rule: d.Rule, Reason: d.Reason, Since: w.cfg.Now()}}
		w.blocked[pod] = e
		w.publishBlocked()
	}
	e.Reason = d.Reason
	audit := !e.audited && w.isLeader()
	w.mu.Unlock()
	if changed {
		w.log.WarnContext(ctx, "pod watcher: release blocked; keys stay with the pod", slog.String("pod", pod),
			slog.String("pod_uid", uid), slog.String("rule", d.Rule), slog.String("reason", d.Reason))
	}
	if !audit {
		return
	}
	err := w.cfg.Store.AppendAudit(store.WithActor(ctx, Actor), store.AuditEvent{
		Time: w.cfg.Now(), Action: AuditBlocked, Pod: pod, PodUID: uid, Reason: d.Reason,
	})
	if err != nil {
		w.log.ErrorContext(ctx, "pod watcher: record release-blocked in the audit trail", slog.String("pod", pod), slog.Any("error", err))
		return
	}
	w.mu.Lock()
	if cur := w.blocked[pod]; cur == e {
		e.audited = true
	}
	w.mu.Unlock()
}

func (w *Watcher) unblock(ctx context.Context, pod string) {
	w.mu.Lock()
	_, was := w.blocked[pod]
	delete(w.blocked, pod)
	w.publishBlocked()
	w.mu.Unlock()
	if was {
		w.log.InfoContext(ctx, "pod watcher: pod no longer release-blocked", slog.String("pod", pod))
	}
}

// prune forgets pods that hold nothing any more and updates the gauges.
func (w *Watcher) prune(held map[string]holding) {
	live := make(map[string]bool)
	for _, h := range held {
		live[h.uid] = true
	}
	if objs, err := w.podLister.List(labels.Everything()); err == nil {
		for _, p := range objs {
			live[string(p.UID)] = true
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for uid := range w.lastNode {
		if !live[uid] {
			delete(w.lastNode, uid)
		}
	}
	for pod := range w.blocked {
		if _, ok := held[pod]; !ok {
			delete(w.blocked, pod)
		}
	}
	w.publishBlocked()
}

// publishBlocked sets the release-blocked gauge from w.blocked, after every
// change to it; w.mu held.
func (w *Watcher) publishBlocked() {
	counts := map[string]int{BlockNodeNotReady: 0, BlockNodeUnknown: 0, BlockUIDUnknown: 0}
	for _, e := range w.blocked {
		counts[e.Rule]++
	}
	for rule, n := range counts {
		w.m.blocked.WithLabelValues(rule).Set(float64(n))
	}
}

type watcherMetrics struct {
	blocked       *prometheus.GaugeVec
	releases      *prometheus.CounterVec
	apiUp         prometheus.Gauge
	reconciles    prometheus.Counter
	lastReconcile prometheus.Gauge
}

func newWatcherMetrics() *watcherMetrics {
	m := &watcherMetrics{
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pkmanager_release_blocked",
			Help: "Pods whose object is gone but whose keys are held because the pod may still run, by reason.",
		}, []string{"reason"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkmanager_watcher_releases_total",
			Help: "Pods whose keys the pod watcher released, by rule.",
		}, []string{"rule"}),
		apiUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkmanager_kubernetes_api_up",
			Help: "1 when the Kubernetes API answered the pod watcher's last check, else 0 (nothing is released while 0).",
		}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pkmanager_watcher_reconciles_total",
			Help: "Reconciliation passes of the pod watcher.",
		}),
		lastReconcile: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkmanager_watcher_last_reconcile_timestamp_seconds",
			Help: "Unix time of the pod watcher's last complete reconciliation.",
		}),
	}
	// Every rule's series at 0 from the start, so a first release or block
	// is an increase and the series exist before it.
	for _, rule := range []string{RulePhaseSucceeded, RulePhaseFailed, RuleNodeReady, RuleNodeDeleted, RuleNodeOutOfSvc, RuleAllNodesSafe} {
		m.releases.WithLabelValues(rule)
	}
	for _, rule := range []string{BlockNodeNotReady, BlockNodeUnknown, BlockUIDUnknown} {
		m.blocked.WithLabelValues(rule)
	}
	return m
}

func (m *watcherMetrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.blocked, m.releases, m.apiUp, m.reconciles, m.lastReconcile} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
