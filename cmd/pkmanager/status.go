package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

func newStatusCommand(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var httpURL string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the server's health, its keys by state (pool depth) and, with --http, readiness, leader and pod watcher",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			w := cmd.OutOrStdout()
			health, err := c.Health(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "server %s: %s\n", cf.server, strings.ToLower(strings.ReplaceAll(health, "_", " ")))
			ks, err := c.ListKeys(ctx, &pb.ListKeysRequest{})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "keys:   %s\n", keyCounts(ks))
			if httpURL == "" {
				return nil
			}
			return httpStatus(ctx, w, strings.TrimSuffix(httpURL, "/"))
		},
	}
	cf.register(cmd, 30*time.Second)
	cmd.Flags().StringVar(&httpURL, "http", "", "the server's HTTP address (http://host:8080): also show /readyz, leader and pod watcher from /metrics")
	return cmd
}

// keyCounts: "7 (assigned 4 to 2 pods, available 2, cooling-down 1); free or cooling down: 3".
func keyCounts(ks []*pb.KeyInfo) string {
	by := map[string]int{}
	pods := map[string]bool{}
	for _, k := range ks {
		by[k.GetState()]++
		if k.GetPodName() != "" {
			pods[k.GetPodName()] = true
		}
	}
	states := make([]string, 0, len(by))
	for s := range by {
		states = append(states, s)
	}
	slices.Sort(states)
	parts := make([]string, 0, len(states))
	for _, s := range states {
		p := fmt.Sprintf("%s %d", s, by[s])
		if s == "assigned" {
			p += " to " + plural(len(pods), "pod")
		}
		parts = append(parts, p)
	}
	return fmt.Sprintf("%d (%s); free or cooling down: %d", len(ks), strings.Join(parts, ", "), by["available"]+by["cooling-down"])
}

// httpStatus prints /readyz and what /metrics says of the leader, the pod
// watcher and the reuse gate.
func httpStatus(ctx context.Context, w io.Writer, base string) error {
	get := func(path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return 0, "", fmt.Errorf("--http: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", fmt.Errorf("--http: %w", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("/readyz")
	if err != nil {
		return err
	}
	state := "ready"
	if code != http.StatusOK {
		state = "NOT ready"
	}
	fmt.Fprintf(w, "ready:  %s: %s\n", state, strings.ReplaceAll(strings.TrimSpace(body), "\n", "; "))
	_, metrics, err := get("/metrics")
	if err != nil {
		return err
	}
	m := plainMetrics(metrics)
	if v, ok := m["pkmanager_leader"]; ok {
		fmt.Fprintf(w, "leader: %s\n", map[bool]string{true: "this replica holds the leader lease", false: "this replica does not lead"}[v == 1])
	} else {
		fmt.Fprintln(w, "leader: no leader election (one replica)")
	}
	if v, ok := m["pkmanager_kubernetes_api_up"]; ok {
		last := "never"
		if t, ok := m["pkmanager_watcher_last_reconcile_timestamp_seconds"]; ok && t > 0 {
			last = time.Since(time.Unix(int64(t), 0)).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "watcher: Kubernetes API %s, last reconciliation %s\n", map[bool]string{true: "up", false: "UNREACHABLE"}[v == 1], last)
	} else {
		fmt.Fprintln(w, "watcher: off")
	}
	if v, ok := m["pkmanager_beacon_up"]; ok {
		fmt.Fprintf(w, "beacon: %s\n", map[bool]string{true: "up", false: "UNREACHABLE"}[v == 1])
	} else {
		fmt.Fprintln(w, "beacon: none (reuse on --reuse-delay alone)")
	}
	return nil
}

// plainMetrics reads the samples without labels of a Prometheus text
// exposition.
func plainMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		value, _, _ = strings.Cut(value, " ")
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}
