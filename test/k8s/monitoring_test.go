package k8s_test

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/deploy/monitoring"
	"github.com/pkmanager/pkmanager/internal/server"
)

// TestMonitoringMetricsLive: the metrics the alert rules and the Grafana
// dashboard (deploy/monitoring) use that only a server in a cluster exports
// (monitoring.ClusterOnly: the pod watcher, leader election, token
// authentication) are on the /metrics of a server in a real cluster with
// all three on; deploy/monitoring's tests check every other name on a
// dev-mode server. Metrics that count events (refusals, releases by rule)
// exist at 0 per label from the start, so no event is provoked.
func TestMonitoringMetricsLive(t *testing.T) {
	c := newCluster(t, "monitoring")
	s := c.startServer(srvConfig{kube: server.KubeOptions{Watch: true, Auth: server.AuthToken, LeaderElect: true,
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond}})

	used, err := monitoring.UsedMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for n := range monitoring.ClusterOnly {
		if _, ok := used[n]; !ok {
			t.Errorf("%s: no alert or panel uses it (drop it from monitoring.ClusterOnly)", n)
		}
	}
	// The watcher's first reconciliation and the first lease decision take
	// a moment; wait until the names are there (or time out naming them).
	waitFor(t, 30*time.Second, "the cluster-only metrics the rules and the dashboard use on /metrics", func() (bool, string) {
		names, err := monitoring.SeriesNames(strings.NewReader(s.get(t, "/metrics")))
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for n := range monitoring.ClusterOnly {
			if !names[n] {
				missing = append(missing, n+" (used by "+strings.Join(used[n], ", ")+")")
			}
		}
		sort.Strings(missing)
		return len(missing) == 0, "missing: " + strings.Join(missing, "; ")
	})
	t.Logf("%d cluster-only metrics the rules and the dashboard use, all on /metrics", len(monitoring.ClusterOnly))
}
