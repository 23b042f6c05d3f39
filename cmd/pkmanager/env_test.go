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
			if f.Name != "help" && !strings.Contains(f.Usage, flagEnv(c, f)) {
				t.Errorf("%s --%s: usage does not name %s", c.Name(), f.Name, flagEnv(c, f))
			}
		})
	}
}

// One variable never means two things: a flag name shared by commands has
// one type everywhere, or its variable names the command (PKM_OUT was
// request's directory and backup's file, PKM_FROM import's index and
// migrate-store's store).
func TestEnvVariablesMeanOneThing(t *testing.T) {
	root := newRootCommand()
	type use struct{ cmd, typ string }
	uses := map[string][]use{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" {
				uses[flagEnv(c, f)] = append(uses[flagEnv(c, f)], use{c.CommandPath(), f.Value.Type()})
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	for name, us := range uses {
		for _, u := range us[1:] {
			if u.typ != us[0].typ {
				t.Errorf("%s sets a %s in %s but a %s in %s", name, us[0].typ, us[0].cmd, u.typ, u.cmd)
			}
		}
	}
	for _, want := range []string{"PKM_REQUEST_OUT", "PKM_BACKUP_OUT", "PKM_DEPOSIT_DATA_OUT", "PKM_IMPORT_FROM", "PKM_MIGRATE_STORE_FROM", "PKM_MIGRATE_STORE_TO", "PKM_RESTORE_IN"} {
		if len(uses[want]) != 1 {
			t.Errorf("%s: %v, want one command's flag", want, uses[want])
		}
	}
	for _, gone := range []string{"PKM_OUT", "PKM_FROM"} {
		if len(uses[gone]) != 0 {
			t.Errorf("%s still sets %v", gone, uses[gone])
		}
	}
}

func TestScopedVariableSetsItsCommandOnly(t *testing.T) {
	root := newRootCommand()
	t.Setenv("PKM_BACKUP_OUT", "b.pkmb")
	t.Setenv("PKM_OUT", "ignored")
	backup, _, err := root.Find([]string{"backup"})
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(backup); err != nil {
		t.Fatal(err)
	}
	if got := backup.Flags().Lookup("out").Value.String(); got != "b.pkmb" {
		t.Fatalf("backup --out from the environment = %q, want b.pkmb", got)
	}
	request, _, _ := root.Find([]string{"request"})
	if err := applyEnv(request); err != nil {
		t.Fatal(err)
	}
	if got := request.Flags().Lookup("out").Value.String(); got != "" {
		t.Fatalf("request --out = %q: another command's or the old variable set it", got)
	}
}
