package k8s_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/server"
	"github.com/pkmanager/pkmanager/internal/store"
)

// TestAuditActors: with token authentication on, a pod's request with its
// pod-bound ServiceAccount token leaves audit events naming the token's
// subject (the keys minted for it; keys recycled to the next pod), the pod's
// deletion a release by the pod watcher with its reason; GET /api/v1/audit
// answers the same events.
func TestAuditActors(t *testing.T) {
	c := newCluster(t, "audit")
	ctx := c.ctx
	node := c.node("n", true)
	first := c.pod("first", node, nil)
	second := c.pod("second", node, nil)
	s := c.startServer(srvConfig{reuseDelay: time.Second, kube: server.KubeOptions{Watch: true, Auth: server.AuthToken}})
	st := s.Store()
	subject := "user:system:serviceaccount:" + c.ns + ":" + validatorSA

	tok := func(name string, uid types.UID) string {
		t.Helper()
		tk, err := env.PodToken(ctx, c.ns, validatorSA, name, uid, "pkmanager")
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	if e, resp := s.requestAs(ctx, tok("first", first.UID), "first", ""); e != "" || len(resp.GetKeys()) != 1 {
		t.Fatalf("first with its token: %s", e)
	}
	keys := podKeys(t, ctx, st, "first")
	if len(keys) != 1 {
		t.Fatalf("first's keys: %+v", keys)
	}
	ev := auditFor(t, ctx, st, "first", store.AuditMint)
	if len(ev) != 1 || ev[0].Actor != subject || ev[0].PodUID != string(first.UID) || len(ev[0].Pubkeys) != 1 || ev[0].Pubkeys[0] != keys[0].Pubkey {
		t.Fatalf("mint events of first: %+v, want one by %s", ev, subject)
	}

	// Deleted: the watcher releases the keys, and says why.
	c.forceDelete("first")
	waitReleased(t, ctx, st, "first", []store.Pubkey{keys[0].Pubkey}, 15*time.Second)
	ev = auditFor(t, ctx, st, "first", "release")
	if len(ev) != 1 || ev[0].Actor != watcher.Actor || !strings.Contains(ev[0].Reason, "gone from the API") || ev[0].PodUID != string(first.UID) {
		t.Fatalf("release events of first: %+v, want one by %s with the reason", ev, watcher.Actor)
	}

	// Cooled down, the key is recycled to the next pod: an assignment by
	// that pod's token subject.
	waitFor(t, 20*time.Second, "the released key available", func() (bool, string) {
		k, err := st.GetKey(ctx, keys[0].Pubkey)
		return err == nil && k.State == store.StateAvailable, string(k.State)
	})
	if e, _ := s.requestAs(ctx, tok("second", second.UID), "second", ""); e != "" {
		t.Fatalf("second with its token: %s", e)
	}
	ev = auditFor(t, ctx, st, "second", store.AuditAssign)
	if len(ev) != 1 || ev[0].Actor != subject || len(ev[0].Pubkeys) != 1 || ev[0].Pubkeys[0] != keys[0].Pubkey {
		t.Fatalf("assign events of second: %+v, want the recycled key by %s", ev, subject)
	}
	if ev := auditFor(t, ctx, st, "second", store.AuditMint); len(ev) != 0 {
		t.Fatalf("second got minted keys although the pool had one: %+v", ev)
	}

	// The API shows the same trail.
	adminTok, err := env.ServiceAccountToken(ctx, c.ns, adminSA, "pkmanager")
	if err != nil {
		t.Fatal(err)
	}
	code, body := s.getAs(t, "/api/v1/audit?pod=first", adminTok)
	if code != 200 {
		t.Fatalf("GET /api/v1/audit: %d %s", code, body)
	}
	var page struct {
		Events []struct {
			Action, Actor, Reason string
			Pubkeys               []string
		}
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range page.Events {
		got[e.Action] = e.Actor
	}
	if got[store.AuditMint] != subject || got["release"] != watcher.Actor {
		t.Fatalf("GET /api/v1/audit?pod=first: actors by action %v, want mint by %s and release by %s (%s)", got, subject, watcher.Actor, body)
	}
}
