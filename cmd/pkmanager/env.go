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

// scopedFlags mean different things for different commands (--out is
// request's directory but backup's file, --from import's derivation index
// but migrate-store's store, --count import's keys to derive): their variables name the command,
// PKM_<COMMAND>_<FLAG> (PKM_BACKUP_OUT, PKM_MIGRATE_STORE_FROM), so one
// variable never means two things.
var scopedFlags = map[string]bool{"out": true, "from": true, "to": true, "in": true, "count": true}

// flagEnv returns the variable that sets flag f of command cmd.
func flagEnv(cmd *cobra.Command, f *pflag.Flag) string {
	if !scopedFlags[f.Name] || cmd.Flags().Lookup(f.Name) != f || !cmd.HasParent() {
		return envName(f.Name)
	}
	path := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
	return envName(strings.ReplaceAll(path, " ", "-") + "-" + f.Name)
}

// applyEnv sets every flag of cmd that was not given on the command line from
// its PKM_* variable.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error
	apply := func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "help" {
			return
		}
		name := flagEnv(cmd, f)
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			// The value (and the parser's error, which quotes it) is not
			// repeated: the variable may hold something private by mistake.
			firstErr = fmt.Errorf("environment variable %s: invalid value for --%s (want a %s)", name, f.Name, f.Value.Type())
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
			f.Usage += " [" + flagEnv(cmd, f) + "]"
		}
	}
	cmd.Flags().VisitAll(add)
	cmd.PersistentFlags().VisitAll(add)
	for _, c := range cmd.Commands() {
		addEnvHelp(c)
	}
}
