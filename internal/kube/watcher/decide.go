// Package watcher returns the keys of validator pods to the pool once those
// pods can no longer be running, and never earlier.
//
// It watches the selected pods (and every node) through client-go informers,
// reconciles the store's assignments against them on start, on every event and
// on every resync, and releases a pod's keys only when Decide says the pod
// cannot sign any more. Every Release decision is confirmed against the live
// API (not the informer cache) right before the keys are released; while the
// API is unreachable nothing is released.
package watcher

import (
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
)

// TaintOutOfService is the taint an operator puts on a node that is shut down
// for good: its pods are known not to run (Kubernetes' non-graceful node
// shutdown).
const TaintOutOfService = "node.kubernetes.io/out-of-service"

// Verdict is what Decide concluded about one pod's assignment.
type Verdict int

const (
	// Keep: the pod may be running (or is terminating); its keys stay.
	Keep Verdict = iota
	// Release: the pod cannot be running any more; release its keys.
	Release
	// Block: the pod object is gone but it may still be running somewhere;
	// keep its keys and report why (release-blocked).
	Block
)

func (v Verdict) String() string {
	switch v {
	case Keep:
		return "keep"
	case Release:
		return "release"
	case Block:
		return "release-blocked"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Rules of Release decisions (the reason label of metrics).
const (
	RulePhaseSucceeded = "pod-succeeded"
	RulePhaseFailed    = "pod-failed"
	RuleNodeReady      = "node-ready"
	RuleNodeDeleted    = "node-deleted"
	RuleNodeOutOfSvc   = "node-out-of-service"
	RuleAllNodesSafe   = "all-nodes-safe"
	RuleTerminating    = "pod-terminating" // Keep
	RulePodLive        = "pod-live"        // Keep
	BlockNodeNotReady  = "node-not-ready"  // Block
	BlockNodeUnknown   = "node-unknown"    // Block
	BlockUIDUnknown    = "uid-unknown"     // Block
)

// UIDMargin is how clearly a pod's creation must come before or after the
// assignment of keys recorded without a pod UID for Decide to tell whether
// it is their holder: API timestamps have whole seconds, and the store's
// clock and the API server's may differ a little.
const UIDMargin = 10 * time.Second

// DefaultNodeGracePeriod is how old a node's heartbeat (its Lease in
// kube-node-lease, else its Ready condition's) may be before a Ready
// condition is not believed: the node lifecycle controller's
// node-monitor-grace-period (50 s), the time it takes to mark a silent node
// Unknown.
const DefaultNodeGracePeriod = 50 * time.Second

// Pod is what the API says about the pod object that now carries the
// assignment's pod name.
type Pod struct {
	UID         string
	Phase       corev1.PodPhase
	Terminating bool // deletionTimestamp set: still running its grace period
	NodeName    string
	Created     time.Time // creationTimestamp
}

// Node is the observed state of one node.
type Node struct {
	Name   string
	Exists bool
	// Ready: condition Ready is True and the node's heartbeat is fresh.
	Ready bool
	// Stale: condition Ready is True but the node's last heartbeat is
	// older than the grace period (so Ready is false): the condition is
	// not believed.
	Stale        bool
	OutOfService bool // carries TaintOutOfService
}

// Safe reports whether no pod of the node can be running unnoticed: the node
// is gone, fenced off (out-of-service) or Ready (its kubelet is back in touch
// with the API and kills pods the API no longer has).
func (n Node) Safe() bool { return !n.Exists || n.OutOfService || n.Ready }

// Facts are the inputs of one decision.
type Facts struct {
	Pod string // name, for reasons
	// RecordedUID is the pod UID the store holds the keys under; "" when
	// the caller gave none.
	RecordedUID string
	// HeldSince is when the pod got its first key (the earliest Since of
	// its keys); with no UID recorded it tells whether the pod now carrying
	// the name existed then, i.e. is the holder.
	HeldSince time.Time
	// UIDMargin replaces the package's UIDMargin when not 0 (tests).
	UIDMargin time.Duration
	// Current is the pod object with this name in the API now; nil if none.
	Current *Pod
	// LastNode is the state of the node the holder (RecordedUID) was seen
	// bound to (nodeName is immutable once set); nil when not known, e.g.
	// the pod was created and deleted while pkmanager was not watching, or
	// was only ever seen unbound (it may have been bound in between).
	LastNode *Node
	// AllNodesSafe: every node is Safe (used when the holder's node is not
	// known, e.g. the pod was deleted while pkmanager was down).
	AllNodesSafe bool
}

// Decision is the outcome of Decide.
type Decision struct {
	Verdict Verdict
	// Rule is a short fixed label (metrics); Reason a sentence for logs and
	// the audit trail.
	Rule   string
	Reason string
	// AdoptUID, when set, is the UID of the holder of keys recorded
	// without one: the pod now carrying the name existed when the keys
	// were assigned, so it is the holder; the watcher records its UID.
	AdoptUID string
}

// Holder says whether the pod now carrying the name holds the keys: it has
// the recorded UID, or, with none recorded, it provably existed when the
// keys were assigned (created more than UIDMargin before HeldSince: pod
// names are unique at any moment). ambiguous: no UID recorded and the pod
// was created too close to the assignment to tell.
func Holder(f Facts) (holder, ambiguous bool) {
	cur := f.Current
	margin := f.UIDMargin
	if margin == 0 {
		margin = UIDMargin
	}
	switch {
	case cur == nil:
		return false, false
	case f.RecordedUID != "":
		return cur.UID == f.RecordedUID, false
	case cur.Created.IsZero() || f.HeldSince.IsZero():
		return false, true
	case cur.Created.Before(f.HeldSince.Add(-margin)):
		return true, false
	case cur.Created.After(f.HeldSince.Add(margin)):
		return false, false
	}
	return false, true
}

// Decide applies the release rules to one assignment. It is pure.
//
//	holder object exists (same UID; or no UID recorded and created before the keys were assigned):
//	  phase Succeeded / Failed                     -> Release
//	  deletionTimestamp set                        -> Keep (grace period: may still sign)
//	  otherwise (Pending, Running, Unknown)        -> Keep
//	  (no UID recorded: AdoptUID names the holder's UID for the store)
//	no UID recorded, a pod created too close to the assignment to tell
//	                                               -> Block uid-unknown
//	holder object gone (none, or the name now has another UID, or a pod
//	created after the keys were assigned):
//	  node deleted / out-of-service taint / Ready (fresh heartbeat) -> Release
//	  node NotReady, Unknown or its heartbeat stale               -> Block node-not-ready
//	  node not known, every node safe              -> Release
//	  node not known, some node not safe           -> Block node-unknown
func Decide(f Facts) Decision {
	cur := f.Current
	holder, ambiguous := Holder(f)
	if holder {
		adopt := ""
		if f.RecordedUID == "" {
			adopt = cur.UID
		}
		switch cur.Phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			rule := RulePhaseSucceeded
			if cur.Phase == corev1.PodFailed {
				rule = RulePhaseFailed
			}
			return Decision{Release, rule, fmt.Sprintf("pod %s (uid %s) reached phase %s", f.Pod, cur.UID, cur.Phase), adopt}
		}
		if cur.Terminating {
			return Decision{Keep, RuleTerminating, fmt.Sprintf("pod %s is terminating (deletionTimestamp set): it may sign until its grace period ends", f.Pod), adopt}
		}
		return Decision{Keep, RulePodLive, "", adopt}
	}
	if ambiguous {
		return Decision{Verdict: Block, Rule: BlockUIDUnknown, Reason: fmt.Sprintf(
			"pod %s's keys were recorded without a pod UID, and the pod now named so (uid %s, created %s) was created too close to their assignment (%s) to tell whether it holds them; "+
				"held until that pod is gone and the name's holder can be judged, or an operator releases them",
			f.Pod, cur.UID, cur.Created.UTC().Format(time.RFC3339), f.HeldSince.UTC().Format(time.RFC3339))}
	}

	gone := fmt.Sprintf("pod %s (uid %s) is gone from the API", f.Pod, orUnknown(f.RecordedUID))
	if cur != nil {
		gone = fmt.Sprintf("pod %s (uid %s) is gone from the API (the name now has uid %s)", f.Pod, orUnknown(f.RecordedUID), cur.UID)
		if f.RecordedUID == "" {
			gone = fmt.Sprintf("pod %s's keys were recorded without a pod UID, and the pod now named so (uid %s) was created after they were assigned: their holder, an earlier pod, is gone from the API",
				f.Pod, cur.UID)
		}
	}
	if n := f.LastNode; n != nil {
		switch {
		case !n.Exists:
			return Decision{Verdict: Release, Rule: RuleNodeDeleted, Reason: fmt.Sprintf("%s and its node %s was deleted", gone, n.Name)}
		case n.OutOfService:
			return Decision{Verdict: Release, Rule: RuleNodeOutOfSvc, Reason: fmt.Sprintf("%s and its node %s is tainted %s", gone, n.Name, TaintOutOfService)}
		case n.Ready:
			return Decision{Verdict: Release, Rule: RuleNodeReady, Reason: fmt.Sprintf("%s and its node %s is Ready", gone, n.Name)}
		case n.Stale:
			return Decision{Verdict: Block, Rule: BlockNodeNotReady, Reason: fmt.Sprintf(
				"%s but its node %s, although its Ready condition is True, has not renewed its heartbeat within the grace period: the pod may still run there; held until the node is Ready with a fresh heartbeat, deleted or tainted %s",
				gone, n.Name, TaintOutOfService)}
		default:
			return Decision{Verdict: Block, Rule: BlockNodeNotReady, Reason: fmt.Sprintf(
				"%s but its node %s is not Ready: the pod may still run there; held until the node is Ready, deleted or tainted %s",
				gone, n.Name, TaintOutOfService)}
		}
	}
	if f.AllNodesSafe {
		return Decision{Verdict: Release, Rule: RuleAllNodesSafe, Reason: gone + "; its node is not known, and every node is Ready (with a fresh heartbeat), deleted or out-of-service"}
	}
	return Decision{Verdict: Block, Rule: BlockNodeUnknown, Reason: gone + "; its node is not known and some node is not Ready: held until every node is Ready, deleted or tainted " + TaintOutOfService}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// NodeState reads a Node object, with its Lease in kube-node-lease (nil
// when there is none), at now: a Ready condition is believed only while the
// node's heartbeat (the Lease's renewTime, else the condition's
// lastHeartbeatTime) is at most grace old (DefaultNodeGracePeriod when 0).
func NodeState(n *corev1.Node, lease *coordinationv1.Lease, now time.Time, grace time.Duration) Node {
	if grace <= 0 {
		grace = DefaultNodeGracePeriod
	}
	st := Node{Name: n.Name, Exists: true}
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady || c.Status != corev1.ConditionTrue {
			continue
		}
		beat := c.LastHeartbeatTime.Time
		if lease != nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(beat) {
			beat = lease.Spec.RenewTime.Time
		}
		if now.Sub(beat) > grace {
			st.Stale = true
		} else {
			st.Ready = true
		}
	}
	for _, t := range n.Spec.Taints {
		if t.Key == TaintOutOfService {
			st.OutOfService = true
		}
	}
	return st
}

// PodState reads a Pod object.
func PodState(p *corev1.Pod) *Pod {
	return &Pod{
		UID:         string(p.UID),
		Phase:       p.Status.Phase,
		Terminating: p.DeletionTimestamp != nil,
		NodeName:    p.Spec.NodeName,
		Created:     p.CreationTimestamp.Time,
	}
}
