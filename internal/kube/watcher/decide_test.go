package watcher

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	live := func(phase corev1.PodPhase) *Pod { return &Pod{UID: "u1", Phase: phase, NodeName: "n1"} }
	ready := Node{Name: "n1", Exists: true, Ready: true}
	notReady := Node{Name: "n1", Exists: true}
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
		{"no uid recorded, live", Facts{Current: live(corev1.PodRunning)}, Keep, RulePodLive, ""},
		{"no uid recorded, succeeded", Facts{Current: live(corev1.PodSucceeded)}, Block, BlockUIDUnknownDone, "without a pod UID"},
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
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	if s := NodeState(n); !s.Exists || s.Ready || s.OutOfService || s.Safe() {
		t.Errorf("node without conditions: %+v, safe %v", s, s.Safe())
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue}, {Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}
	if s := NodeState(n); s.Ready || s.Safe() {
		t.Errorf("Ready=Unknown read as ready: %+v", s)
	}
	n.Status.Conditions[1].Status = corev1.ConditionTrue
	if s := NodeState(n); !s.Ready || !s.Safe() {
		t.Errorf("Ready=True not ready: %+v", s)
	}
	n.Status.Conditions[1].Status = corev1.ConditionFalse
	n.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}, {Key: TaintOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute}}
	if s := NodeState(n); s.Ready || !s.OutOfService || !s.Safe() {
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
