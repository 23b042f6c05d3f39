package monitoring

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	ruleCRFile    = "prometheusrule.yaml"
	ruleTestsFile = "rules_test.yaml"
)

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := parseRules(b)
	if err != nil {
		t.Fatal(err)
	}
	return rf
}

// exportedMetrics returns the metric families the server can export: every
// pkmanager_* name declared in a collector's options (Name: "...") or a
// prometheus.NewDesc in the server's packages, with the series names of
// histograms (_bucket, _sum, _count) and counters.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(pkmanager_[a-z0-9_]+)"`)
	histogram := regexp.MustCompile(`(?s)NewHistogram(?:Vec)?\(prometheus\.HistogramOpts\{\s*Name:\s*"(pkmanager_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir(filepath.Join("..", "..", "internal"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllSubmatch(src, -1) {
			names[string(m[1])] = true
		}
		for _, m := range histogram.FindAllSubmatch(src, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[string(m[1])+suffix] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A scanner that finds nothing would let every name through.
	for _, known := range []string{"pkmanager_keys", "pkmanager_leader", "pkmanager_beacon_up", "pkmanager_release_blocked",
		"pkmanager_request_duration_seconds_bucket", "pkmanager_deposit_confirmation_seconds_bucket"} {
		if !names[known] {
			t.Fatalf("the scan of ../../internal found no %s: the scanner is broken (found %d names)", known, len(names))
		}
	}
	return names
}

func TestRuleExpressionsNameExportedMetrics(t *testing.T) {
	exported := exportedNames(t)
	rf := readRules(t)
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule that is not an alert (%q)", g.Name, r.Record)
				continue
			}
			alerts++
			names := MetricNames(r.Expr)
			if len(names) == 0 {
				t.Errorf("alert %s: no metric in %q", r.Alert, r.Expr)
			}
			for _, n := range names {
				if !exported[n] && !nonServerMetrics[n] {
					t.Errorf("alert %s names %s, which the server does not export", r.Alert, n)
				}
			}
			if sev := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, sev) {
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: needs a summary and a description", r.Alert)
			}
		}
	}
	// The cases the README promises an alert for.
	for _, want := range []string{"PkmanagerKeyStillSigning", "PkmanagerReleaseBlocked", "PkmanagerPoolLow", "PkmanagerDepositsFailing",
		"PkmanagerDepositsStuck", "PkmanagerFunderBalanceLow", "PkmanagerKubernetesAPIUnreachable", "PkmanagerBeaconNodeUnreachable", "PkmanagerNoLeader"} {
		if _, ok := rf.alerts()[want]; !ok {
			t.Errorf("no alert %s", want)
		}
	}
	t.Logf("%d alerts, every metric they name is exported (%d names)", alerts, len(exported))
}

// The expression scanner finds metric names and nothing else.
func TestMetricNames(t *testing.T) {
	got := MetricNames(`0 < max by (namespace, job) (pkmanager_funder_balance_wei{state="a b"}) < 32.5e18 and sum without (instance) (increase(pkmanager_x_total[10m] offset 1h)) == 0 or rate(pkmanager_y_bucket[$__rate_interval]) > 1e-3 or up{job="pkmanager"} == 0 and time() - foo_seconds > 300`)
	want := []string{"pkmanager_funder_balance_wei", "pkmanager_x_total", "pkmanager_y_bucket", "up", "foo_seconds"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metricNames = %v, want %v", got, want)
	}
}

// prometheusRule renders the PrometheusRule resource that carries the rules
// file's groups (comments included).
func prometheusRule(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	_, groups, ok := bytes.Cut(src, []byte("\ngroups:\n"))
	if !ok {
		t.Fatalf("%s: no top-level groups:", rulesFile)
	}
	var b bytes.Buffer
	b.WriteString(`# Generated from pkmanager-rules.yaml by deploy/monitoring/rules_test.go (PKM_UPDATE_RULES=1 go test ./deploy/monitoring):
# edit the rules file, not this one. For prometheus-operator; the labels must match your Prometheus's ruleSelector.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: pkmanager
  labels:
    app.kubernetes.io/name: pkmanager
spec:
  groups:
`)
	for _, line := range strings.SplitAfter(string(groups), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

func TestPrometheusRuleCarriesTheRulesFile(t *testing.T) {
	want := prometheusRule(t)
	if os.Getenv("PKM_UPDATE_RULES") == "1" {
		if err := os.WriteFile(ruleCRFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(ruleCRFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not the rules file's groups: regenerate it with PKM_UPDATE_RULES=1 go test ./deploy/monitoring", ruleCRFile)
	}
	// Both parse to the same groups.
	var cr struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Spec       ruleFile `json:"spec"`
	}
	if err := yaml.Unmarshal(got, &cr); err != nil {
		t.Fatal(err)
	}
	if cr.Kind != "PrometheusRule" || !reflect.DeepEqual(cr.Spec, readRules(t)) {
		t.Fatalf("%s does not parse to the rules file's groups", ruleCRFile)
	}
}

// promtool returns the promtool binary: $PKM_PROMTOOL, else the one
// scripts/promtool.sh built. Without one the test skips, except under
// CI=true.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PKM_PROMTOOL"); p != "" {
		return p
	}
	out, err := exec.Command("bash", filepath.Join("..", "..", "scripts", "promtool.sh"), "--cached").Output()
	if err == nil {
		return strings.TrimSpace(string(out))
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no promtool but CI=true: .ci/run builds it (scripts/promtool.sh) and exports PKM_PROMTOOL")
	}
	t.Skip("no promtool: build it with scripts/promtool.sh (a few minutes, once), or set PKM_PROMTOOL")
	return ""
}

// summariesOnly writes the rules file with each alert's annotations cut
// down to its summary, and rules_test.yaml pointing at it, into a temporary
// directory; it returns that rules_test.yaml. The unit tests check the
// summaries (their $value and labels) but not the long descriptions.
func summariesOnly(t *testing.T) string {
	t.Helper()
	rf := readRules(t)
	for _, g := range rf.Groups {
		for i, r := range g.Rules {
			g.Rules[i].Annotations = map[string]string{"summary": r.Annotations["summary"]}
		}
	}
	b, err := yaml.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, rulesFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ruleTestsFile), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, ruleTestsFile)
}

func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", summariesOnly(t)},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// Every alert has a unit test in rules_test.yaml that expects it to fire.
func TestEveryAlertHasAUnitTest(t *testing.T) {
	b, err := os.ReadFile(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	for name := range readRules(t).alerts() {
		if !fires[name] {
			t.Errorf("alert %s: no test in %s expects it to fire", name, ruleTestsFile)
		}
	}
}

func TestDashboard(t *testing.T) {
	exported := exportedNames(t)
	declared := exportedMetrics(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseDashboard(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatal("dashboard without uid or title")
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source is not the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range MetricNames(tg.Expr) {
				used[n] = true
				if !exported[n] && !nonServerMetrics[n] {
					t.Errorf("panel %q names %s, which the server does not export", p.Title, n)
				}
			}
		}
	}
	// Every metric the server declares is on the dashboard (histograms by
	// their buckets).
	var missing []string
	for n := range declared {
		base := strings.TrimSuffix(strings.TrimSuffix(n, "_sum"), "_count")
		if used[n] || used[base+"_bucket"] {
			continue
		}
		missing = append(missing, n)
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics the dashboard does not show: %v", missing)
	}
}
