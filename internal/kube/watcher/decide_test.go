package watcher

import (
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	live := func(phase corev1.PodPhase) *Pod { return &Pod{UID: "u1", Phase: phase, NodeName: "n1"} }
	ready := Node{Name: "n1", Exists: true, Ready: true}
	notReady := Node{Name: "n1", Exists: true}
	stale := Node{Name: "n1", Exists: true, Stale: true}
	since := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	// A pod that existed when the keys were assigned, one created after,
	// one created too close to tell.
	before := func(phase corev1.PodPhase) *Pod {
		return &Pod{UID: "u1", Phase: phase, NodeName: "n1", Created: since.Add(-time.Hour)}
	}
	after := &Pod{UID: "u2", Phase: corev1.PodPending, Created: since.Add(time.Hour)}
	close := &Pod{UID: "u2", Phase: corev1.PodRunning, Created: since.Add(3 * time.Second)}
	tests := []struct {
		name   string
		f      Facts
		want   Verdict
		rule   string
		reason string // substring
	}{
		{"running", Facts{RecordedUID: "u1", Current: live(corev1.PodRunning)}, Keep, RulePodLive, ""},
		{"pending", Facts{RecordedUID: "u1", Current: live(corev1.PodPending)}, Keep, RulePodLive, ""},
		{"unknown phase", Facts{RecordedUID: "u1", Current: live(corev1.PodUnknown)}, Keep, RulePodLive, ""},
		{"running on a NotReady node", Facts{RecordedUID: "u1", Current: live(corev1.PodRunning), LastNode: &notReady}, Keep, RulePodLive, ""},
		{"terminating", Facts{RecordedUID: "u1", Current: &Pod{UID: "u1", Phase: corev1.PodRunning, Terminating: true}, LastNode: &ready}, Keep, RuleTerminating, "grace period"},
		{"succeeded", Facts{RecordedUID: "u1", Current: live(corev1.PodSucceeded)}, Release, RulePhaseSucceeded, "phase Succeeded"},
		{"failed", Facts{RecordedUID: "u1", Current: live(corev1.PodFailed)}, Release, RulePhaseFailed, "phase Failed"},
		{"failed and terminating", Facts{RecordedUID: "u1", Current: &Pod{UID: "u1", Phase: corev1.PodFailed, Terminating: true}}, Release, RulePhaseFailed, ""},
		{"no uid recorded, live since before the assignment", Facts{Current: before(corev1.PodRunning), HeldSince: since}, Keep, RulePodLive, ""},
		{"no uid recorded, succeeded, existed at the assignment", Facts{Current: before(corev1.PodSucceeded), HeldSince: since}, Release, RulePhaseSucceeded, "phase Succeeded"},
		{"no uid recorded, pod created too close to tell", Facts{Current: close, HeldSince: since, AllNodesSafe: true}, Block, BlockUIDUnknown, "too close"},
		{"no uid recorded, no creation time", Facts{Current: live(corev1.PodRunning), HeldSince: since, AllNodesSafe: true}, Block, BlockUIDUnknown, "without a pod UID"},
		{"no uid recorded, a successor created after, all nodes safe", Facts{Current: after, HeldSince: since, AllNodesSafe: true}, Release, RuleAllNodesSafe, "created after they were assigned"},
		{"no uid recorded, a successor created after, a node not safe", Facts{Current: after, HeldSince: since}, Block, BlockNodeUnknown, "created after"},
		{"gone from a node whose heartbeat is stale", Facts{RecordedUID: "u1", LastNode: &stale, AllNodesSafe: true}, Block, BlockNodeNotReady, "heartbeat"},
		{"gone from Ready node", Facts{RecordedUID: "u1", LastNode: &ready}, Release, RuleNodeReady, "node n1 is Ready"},
		{"gone from NotReady node", Facts{RecordedUID: "u1", LastNode: &notReady, AllNodesSafe: true}, Block, BlockNodeNotReady, "not Ready"},
		{"gone from NotReady node now tainted", Facts{RecordedUID: "u1", LastNode: &Node{Name: "n1", Exists: true, OutOfService: true}}, Release, RuleNodeOutOfSvc, TaintOutOfService},
		{"gone, node deleted", Facts{RecordedUID: "u1", LastNode: &Node{Name: "n1"}}, Release, RuleNodeDeleted, "deleted"},
		{"gone, node unknown, all nodes safe", Facts{RecordedUID: "u1", AllNodesSafe: true}, Release, RuleAllNodesSafe, "every node"},
		{"gone, node unknown, some node not safe", Facts{RecordedUID: "u1"}, Block, BlockNodeUnknown, "not known"},
		{"name reused, old on NotReady node", Facts{RecordedUID: "u1", Current: &Pod{UID: "u2", Phase: corev1.PodPending}, LastNode: &notReady}, Block, BlockNodeNotReady, "now has uid u2"},
		{"name reused, old on Ready node", Facts{RecordedUID: "u1", Current: &Pod{UID: "u2", Phase: corev1.PodRunning}, LastNode: &ready}, Release, RuleNodeReady, ""},
		{"name reused, new one succeeded, old node unknown", Facts{RecordedUID: "u1", Current: &Pod{UID: "u2", Phase: corev1.PodSucceeded}}, Block, BlockNodeUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Pod = "validator-0"
			d := Decide(tt.f)
			wantAdopt := ""
			if h, _ := Holder(tt.f); h && tt.f.RecordedUID == "" {
				wantAdopt = tt.f.Current.UID
			}
			if d.AdoptUID != wantAdopt {
				t.Errorf("AdoptUID = %q, want %q", d.AdoptUID, wantAdopt)
			}
			if d.Verdict != tt.want || d.Rule != tt.rule {
				t.Fatalf("Decide = %v/%s (%s), want %v/%s", d.Verdict, d.Rule, d.Reason, tt.want, tt.rule)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q does not mention %q", d.Reason, tt.reason)
			}
			if d.Verdict != Keep && !strings.Contains(d.Reason, "validator-0") {
				t.Errorf("reason %q does not name the pod", d.Reason)
			}
		})
	}
}

func TestNodeAndPodState(t *testing.T) {
	at := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	state := func(n *corev1.Node, l *coordinationv1.Lease) Node { return NodeState(n, l, at, 0) }
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	if s := state(n, nil); !s.Exists || s.Ready || s.OutOfService || s.Safe() {
		t.Errorf("node without conditions: %+v, safe %v", s, s.Safe())
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue}, {Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}
	if s := state(n, nil); s.Ready || s.Safe() {
		t.Errorf("Ready=Unknown read as ready: %+v", s)
	}
	n.Status.Conditions[1].Status = corev1.ConditionTrue
	n.Status.Conditions[1].LastHeartbeatTime = metav1.NewTime(at.Add(-10 * time.Second))
	if s := state(n, nil); !s.Ready || !s.Safe() {
		t.Errorf("Ready=True with a fresh heartbeat not ready: %+v", s)
	}
	// A stale heartbeat: Ready=True is not believed.
	n.Status.Conditions[1].LastHeartbeatTime = metav1.NewTime(at.Add(-DefaultNodeGracePeriod - time.Second))
	if s := state(n, nil); s.Ready || !s.Stale || s.Safe() {
		t.Errorf("Ready=True with a stale heartbeat and no lease: %+v, safe %v", s, s.Safe())
	}
	// The node's Lease is its heartbeat: a fresh renewal wins, a stale one
	// does not help.
	renew := func(d time.Duration) *coordinationv1.Lease {
		rt := metav1.NewMicroTime(at.Add(-d))
		return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{RenewTime: &rt}}
	}
	if s := state(n, renew(5*time.Second)); !s.Ready || s.Stale {
		t.Errorf("fresh lease: %+v", s)
	}
	if s := state(n, renew(time.Hour)); s.Ready || !s.Stale {
		t.Errorf("stale lease and stale condition: %+v", s)
	}
	if s := NodeState(n, renew(20*time.Second), at, 10*time.Second); s.Ready || !s.Stale {
		t.Errorf("lease older than a 10 s grace period: %+v", s)
	}
	n.Status.Conditions[1].Status = corev1.ConditionFalse
	n.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}, {Key: TaintOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute}}
	if s := state(n, renew(time.Second)); s.Ready || !s.OutOfService || !s.Safe() {
		t.Errorf("out-of-service taint not seen: %+v", s)
	}
	if !(Node{Name: "gone"}).Safe() {
		t.Error("deleted node not safe")
	}

	now := metav1.NewTime(time.Now())
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u", DeletionTimestamp: &now}, Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	if s := PodState(p); s.UID != "u" || !s.Terminating || s.NodeName != "n1" || s.Phase != corev1.PodRunning {
		t.Errorf("PodState = %+v", s)
	}
}
