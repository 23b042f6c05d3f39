// Command pkmanager hands Ethereum validator keys to validator pods and takes
// them back when the pods are gone. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pkmanager:", redact.String(err.Error()))
		var ec exitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

type exitCoder interface{ ExitCode() int }

type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "pkmanager",
		Short:         "Hands Ethereum validator keys to Kubernetes pods, and takes them back",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildVersion(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			rememberSecrets(cmd)
			if cmd.Name() != "serve" { // the server's own decisions are "server"'s (store.ActorFrom)
				cmd.SetContext(store.WithActor(cmd.Context(), "cli:"+strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")))
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		newServeCommand(g),
		newRequestCommand(g),
		newReleaseCommand(g),
		newSyncCommand(g),
		newDepositDataCommand(g),
		newDepositContractCommand(g),
		newImportCommand(g),
		newKeysCommand(g),
		newExitCommand(g), newRetireCommand(g), // exit.go
		newVersionCommand(),
		newMnemonicCommand(), newStatusCommand(g), // mnemonic.go, status.go
		newBackupCommand(g), newRestoreCommand(g), newMigrateStoreCommand(g), // backup.go
	)
	addEnvHelp(root)
	return root
}

// rememberSecrets has package redact keep the secrets of every URL among
// the flags (--store, --eth1-rpc, --from, --to, set directly or from the
// environment) and of PGPASSWORD out of all output: errors, logs, banner.
func rememberSecrets(cmd *cobra.Command) {
	redact.Secret(os.Getenv("PGPASSWORD"), os.Getenv("PGSSLPASSWORD"))
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if v := f.Value.String(); strings.Contains(v, "://") {
			redact.Remember(v)
		}
	})
}

// logger builds the process logger (stderr); every record is scrubbed of
// secrets (package redact).
func (g *globalFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(redact.Handler(slog.NewTextHandler(os.Stderr, opts))), nil
	case "json":
		return slog.New(redact.Handler(slog.NewJSONHandler(os.Stderr, opts))), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", g.logFormat)
	}
}
