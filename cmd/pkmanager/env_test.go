package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestEnvSetsUnsetFlags(t *testing.T) {
	var delay time.Duration
	var server, pod string
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().DurationVar(&delay, "reuse-delay", time.Minute, "")
	cmd.Flags().StringVar(&server, "server", "default", "")
	cmd.Flags().StringVar(&pod, "pod-name", "", "")
	t.Setenv("PKM_REUSE_DELAY", "5s")
	t.Setenv("PKM_SERVER", "from-env:1")
	t.Setenv("PKM_POD_NAME", "env-pod")
	if err := cmd.ParseFlags([]string{"--pod-name", "flag-pod"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd); err != nil {
		t.Fatal(err)
	}
	if delay != 5*time.Second || server != "from-env:1" {
		t.Fatalf("env not applied: delay %s server %s", delay, server)
	}
	if pod != "flag-pod" {
		t.Fatalf("environment overrode a command-line flag: %s", pod)
	}
}

func TestEnvInvalidValueNamesVariableNotValue(t *testing.T) {
	var n int
	cmd := &cobra.Command{Use: "x"}
	cmd.Flags().IntVar(&n, "max-keys-per-request", 1, "")
	t.Setenv("PKM_MAX_KEYS_PER_REQUEST", "not-a-number-s3cr3t")
	err := applyEnv(cmd)
	if err == nil || !strings.Contains(err.Error(), "PKM_MAX_KEYS_PER_REQUEST") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("error repeats the value: %v", err)
	}
}

func TestEveryFlagDocumentsItsVariable(t *testing.T) {
	root := newRootCommand()
	for _, c := range root.Commands() {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(f.Usage, envName(f.Name)) {
				t.Errorf("%s --%s: usage does not name %s", c.Name(), f.Name, envName(f.Name))
			}
		})
	}
}
