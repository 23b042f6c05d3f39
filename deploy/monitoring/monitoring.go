// Package monitoring holds the Prometheus alert rules and the Grafana
// dashboard operators install (see the README, section Monitoring), and the
// parser that finds the metric names they use: its tests and test/k8s check
// those names against the /metrics of real servers.
package monitoring

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

const (
	rulesFile     = "pkmanager-rules.yaml"
	dashboardFile = "grafana-dashboard.json"
)

var (
	//go:embed pkmanager-rules.yaml
	rulesYAML []byte
	//go:embed grafana-dashboard.json
	dashboardJSON []byte
)

// ruleFile is the shape of a Prometheus rules file.
type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// alerts returns the rules file's alerts by name.
func (rf ruleFile) alerts() map[string]rule {
	out := map[string]rule{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r
		}
	}
	return out
}

// parseRules parses a rules file strictly.
func parseRules(b []byte) (ruleFile, error) {
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		return rf, fmt.Errorf("%s: %w", rulesFile, err)
	}
	if len(rf.Groups) == 0 {
		return rf, fmt.Errorf("%s has no groups", rulesFile)
	}
	return rf, nil
}

// dashboard is the part of the Grafana dashboard the tests read.
type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func parseDashboard(b []byte) (dashboard, error) {
	var d dashboard
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&d); err != nil {
		return d, fmt.Errorf("%s: %w", dashboardFile, err)
	}
	return d, nil
}

// ClusterOnly are the metrics the server registers only in a cluster (the
// pod watcher, leader election, token authentication), with what needs them.
// The server deploy/monitoring's tests scrape (serve --dev) cannot run those:
// they take these names as exported, and test/k8s (TestMonitoringMetricsLive)
// checks them on the /metrics of a server in a real cluster.
var ClusterOnly = map[string]string{
	"pkmanager_auth_denied_total":                        "token authentication (--auth kube)",
	"pkmanager_kubernetes_api_up":                        "the pod watcher",
	"pkmanager_release_blocked":                          "the pod watcher",
	"pkmanager_watcher_last_reconcile_timestamp_seconds": "the pod watcher",
	"pkmanager_watcher_reconciles_total":                 "the pod watcher",
	"pkmanager_watcher_releases_total":                   "the pod watcher",
	"pkmanager_leader":                                   "leader election (--leader-elect)",
}

// nonServerMetrics are names the rules may use that pkmanager does not export.
var nonServerMetrics = map[string]bool{"up": true}

// UsedMetrics returns the metric names the alert rules and the dashboard
// (as built into this package) use that pkmanager must export, each with
// where it is used ("alert X", "panel Y").
func UsedMetrics() (map[string][]string, error) {
	rf, err := parseRules(rulesYAML)
	if err != nil {
		return nil, err
	}
	d, err := parseDashboard(dashboardJSON)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	add := func(expr, where string) {
		for _, n := range MetricNames(expr) {
			if !nonServerMetrics[n] {
				out[n] = append(out[n], where)
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			add(r.Expr, "alert "+r.Alert)
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			add(tg.Expr, "panel "+p.Title)
		}
	}
	return out, nil
}

// MetricNames returns the metric names a PromQL expression refers to:
// identifiers followed by a selector, a range or an operator, not label names,
// functions or keywords.
func MetricNames(expr string) []string {
	// Strings (label values, regexps) and label matchers' names go first.
	expr = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(expr, `""`)
	expr = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(expr, "{}")
	expr = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(expr, "[]") // ranges, subqueries: durations only
	expr = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`).ReplaceAllString(expr, "")
	var out []string
	// A token is a number or duration (32.5e18, 10m: skipped whole, so its
	// letters are not taken for a name) or an identifier, a call when "("
	// follows.
	token := regexp.MustCompile(`([0-9][0-9.]*(?:[eE][+-]?[0-9]+)?[a-z]*)|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	for _, m := range token.FindAllStringSubmatch(expr, -1) {
		if m[1] != "" || m[2] != "" { // a number, or a function call
			continue
		}
		id := strings.TrimSpace(m[0])
		switch id {
		case "and", "or", "unless", "bool", "offset", "Inf", "NaN", "inf", "nan":
			continue
		}
		out = append(out, id)
	}
	return out
}

// SeriesNames parses a /metrics answer (the text exposition format) and
// returns the metric names it exposes, with histograms' (_bucket, _sum,
// _count) and summaries' (_sum, _count) series names: what a PromQL
// expression may select.
func SeriesNames(r io.Reader) (map[string]bool, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("/metrics does not parse: %w", err)
	}
	names := map[string]bool{}
	for name, fam := range fams {
		names[name] = true
		switch fam.GetType() {
		case dto.MetricType_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		case dto.MetricType_SUMMARY:
			for _, s := range []string{"_sum", "_count"} {
				names[name+s] = true
			}
		}
	}
	return names, nil
}
