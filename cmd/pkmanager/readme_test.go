package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's devnet example (serve against a devnet's execution client,
// outside a cluster) is what scripts/e2e-geth.sh runs against geth --dev:
// every flag of the example is in the script's serve command, so the
// example works as written.
func TestREADMEDevnetExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("../../scripts/e2e-geth.sh")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "Against a devnet's execution client")
	if !ok {
		t.Fatal("README: no devnet example")
	}
	example := command(t, after, "./pkmanager serve ")
	run := command(t, string(script), `"$pkm" serve `)
	flag := regexp.MustCompile(`--[a-z0-9-]+`)
	have := map[string]bool{}
	for _, f := range flag.FindAllString(run, -1) {
		have[f] = true
	}
	wanted := flag.FindAllString(example, -1)
	if len(wanted) < 8 {
		t.Fatalf("README example has only %v", wanted)
	}
	for _, f := range wanted {
		if !have[f] {
			t.Errorf("the README's devnet example uses %s, which scripts/e2e-geth.sh does not run", f)
		}
	}
	for _, f := range []string{"--watch", "--auth"} {
		if !strings.Contains(example, f) {
			t.Errorf("the README's devnet example lacks %s: outside a cluster the server needs it", f)
		}
	}
}

// command returns the shell command starting at prefix in text, with its
// continuation lines, without comments.
func command(t *testing.T, text, prefix string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, prefix)
	if !ok {
		t.Fatalf("no %q command", prefix)
	}
	var b strings.Builder
	for _, line := range strings.Split(rest, "\n") {
		line, _, _ = strings.Cut(line, " #")
		line = strings.TrimSpace(line)
		b.WriteString(strings.TrimSuffix(line, "\\") + " ")
		if !strings.HasSuffix(line, "\\") {
			break
		}
	}
	return b.String()
}
