package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix: every flag --some-flag can also be set as PKM_SOME_FLAG. A flag
// given on the command line wins over the environment.
const envPrefix = "PKM_"

// envName returns the environment variable that sets a flag.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag of cmd that was not given on the command line from
// its PKM_* variable.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error
	apply := func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			// The value (and the parser's error, which quotes it) is not
			// repeated: the variable may hold something private by mistake.
			firstErr = fmt.Errorf("environment variable %s: invalid value for --%s (want a %s)", envName(f.Name), f.Name, f.Value.Type())
			return
		}
		f.Changed = true
	}
	cmd.Flags().VisitAll(apply)
	cmd.InheritedFlags().VisitAll(apply)
	return firstErr
}

// addEnvHelp appends the PKM_* variable to the usage text of every flag of
// cmd and its subcommands.
func addEnvHelp(cmd *cobra.Command) {
	add := func(f *pflag.Flag) {
		if f.Name != "help" && !strings.Contains(f.Usage, "["+envPrefix) {
			f.Usage += " [" + envName(f.Name) + "]"
		}
	}
	cmd.Flags().VisitAll(add)
	cmd.PersistentFlags().VisitAll(add)
	for _, c := range cmd.Commands() {
		addEnvHelp(c)
	}
}
