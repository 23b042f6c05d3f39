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
	RulePhaseSucceeded  = "pod-succeeded"
	RulePhaseFailed     = "pod-failed"
	RuleNodeReady       = "node-ready"
	RuleNodeDeleted     = "node-deleted"
	RuleNodeOutOfSvc    = "node-out-of-service"
	RuleAllNodesSafe    = "all-nodes-safe"
	RuleTerminating     = "pod-terminating"      // Keep
	RulePodLive         = "pod-live"             // Keep
	BlockNodeNotReady   = "node-not-ready"       // Block
	BlockNodeUnknown    = "node-unknown"         // Block
	BlockUIDUnknownDone = "uid-unknown-pod-done" // Block
)

// Pod is what the API says about the pod object that now carries the
// assignment's pod name.
type Pod struct {
	UID         string
	Phase       corev1.PodPhase
	Terminating bool // deletionTimestamp set: still running its grace period
	NodeName    string
}

// Node is the observed state of one node.
type Node struct {
	Name         string
	Exists       bool
	Ready        bool // condition Ready is True
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
}

// Decide applies the release rules to one assignment. It is pure.
//
//	holder object exists (same UID, or no UID recorded):
//	  phase Succeeded / Failed                     -> Release (no UID recorded: Block)
//	  deletionTimestamp set                        -> Keep (grace period: may still sign)
//	  otherwise (Pending, Running, Unknown)        -> Keep
//	holder object gone (none, or the name now has another UID):
//	  node deleted / out-of-service taint / Ready  -> Release
//	  node NotReady or Unknown                     -> Block node-not-ready
//	  node not known, every node safe              -> Release
//	  node not known, some node not safe           -> Block node-unknown
func Decide(f Facts) Decision {
	cur := f.Current
	if cur != nil && (f.RecordedUID == "" || cur.UID == f.RecordedUID) {
		switch cur.Phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			if f.RecordedUID == "" {
				// Keys recorded without a UID: this finished pod may be a
				// successor of the pod that really holds them.
				return Decision{Block, BlockUIDUnknownDone, fmt.Sprintf(
					"pod %s (uid %s) is %s, but its keys were recorded without a pod UID: the holder may be an earlier pod of that name; delete the pod or release by hand",
					f.Pod, cur.UID, cur.Phase)}
			}
			rule := RulePhaseSucceeded
			if cur.Phase == corev1.PodFailed {
				rule = RulePhaseFailed
			}
			return Decision{Release, rule, fmt.Sprintf("pod %s (uid %s) reached phase %s", f.Pod, cur.UID, cur.Phase)}
		}
		if cur.Terminating {
			return Decision{Keep, RuleTerminating, fmt.Sprintf("pod %s is terminating (deletionTimestamp set): it may sign until its grace period ends", f.Pod)}
		}
		return Decision{Keep, RulePodLive, ""}
	}

	gone := fmt.Sprintf("pod %s (uid %s) is gone from the API", f.Pod, orUnknown(f.RecordedUID))
	if cur != nil {
		gone = fmt.Sprintf("pod %s (uid %s) is gone from the API (the name now has uid %s)", f.Pod, orUnknown(f.RecordedUID), cur.UID)
	}
	if n := f.LastNode; n != nil {
		switch {
		case !n.Exists:
			return Decision{Release, RuleNodeDeleted, fmt.Sprintf("%s and its node %s was deleted", gone, n.Name)}
		case n.OutOfService:
			return Decision{Release, RuleNodeOutOfSvc, fmt.Sprintf("%s and its node %s is tainted %s", gone, n.Name, TaintOutOfService)}
		case n.Ready:
			return Decision{Release, RuleNodeReady, fmt.Sprintf("%s and its node %s is Ready", gone, n.Name)}
		default:
			return Decision{Block, BlockNodeNotReady, fmt.Sprintf(
				"%s but its node %s is not Ready: the pod may still run there; held until the node is Ready, deleted or tainted %s",
				gone, n.Name, TaintOutOfService)}
		}
	}
	if f.AllNodesSafe {
		return Decision{Release, RuleAllNodesSafe, gone + "; its node is not known, and every node is Ready, deleted or out-of-service"}
	}
	return Decision{Block, BlockNodeUnknown, gone + "; its node is not known and some node is not Ready: held until every node is Ready, deleted or tainted " + TaintOutOfService}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// NodeState reads a Node object.
func NodeState(n *corev1.Node) Node {
	st := Node{Name: n.Name, Exists: true}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			st.Ready = c.Status == corev1.ConditionTrue
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
	}
}
