package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkmanager/pkmanager/internal/client"
	"github.com/pkmanager/pkmanager/internal/keymanager"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/keysync"
)

type syncFlags struct {
	clientFlags
	pod             podFlags // podname.go
	podUID          string
	count           uint32
	kmURL           string
	kmTokenFile     string
	kmCAFile        string
	kmTimeout       time.Duration
	interval        time.Duration
	shutdownTimeout time.Duration
	kdf             string
	insecureKDF     bool
}

func newSyncCommand(g *globalFlags) *cobra.Command {
	f := &syncFlags{}
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Sidecar: keep a validator client's keys equal to this pod's assignment, through the client's keymanager API",
		Long: `Sidecar beside a validator client that serves the standard keymanager API
(https://ethereum.github.io/keymanager-APIs/). It keeps the client's keys equal
to this pod's assignment:

  - at start, and every --interval, it requests the pod's keys (the same
    request as "pkmanager request": the keys the pod holds come back) and
    imports the missing ones into the client (POST /eth/v1/keystores) with
    their slashing-protection history; keystores are encrypted in memory with
    a random password per key and never written to disk by this command;
  - keys the pod no longer holds are deleted from the client;
  - on SIGTERM it deletes every key from the client (DELETE /eth/v1/keystores,
    repeated until GET no longer lists them), releases the pod's keys with
    the EIP-3076 history the client returned, and exits 0.

If the client cannot be reached at SIGTERM, a DELETE fails or a key stays
listed, nothing is released: the command exits 1 saying so, and the keys stay
with the pod until the pod watcher releases them (the pod can no longer run).
Run the validator client so that it outlives this command at shutdown (in
Kubernetes: the client as a sidecar container, see deploy/examples/sync).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd, g) },
	}
	f.register(cmd, 5*time.Minute)
	fl := cmd.Flags()
	f.pod.register(cmd, "pod whose keys to sync")
	fl.StringVar(&f.podUID, "pod-uid", os.Getenv("POD_UID"), "UID of the pod (default $POD_UID); the release at shutdown is for this UID only")
	fl.Uint32Var(&f.count, "keys", 1, "number of keys (0 means 1)")
	fl.StringVar(&f.kmURL, "keymanager-url", "http://127.0.0.1:5062", "the validator client's keymanager API (http or https, scheme://host:port)")
	fl.StringVar(&f.kmTokenFile, "keymanager-token-file", "", "file with the keymanager API's bearer token, as the validator client writes it (required; read for every call)")
	fl.StringVar(&f.kmCAFile, "keymanager-ca-file", "", "PEM CA certificate of an https keymanager API (default: the system roots)")
	fl.DurationVar(&f.kmTimeout, "keymanager-timeout", keymanager.DefaultTimeout, "bound of one keymanager API call (an import decrypts every keystore in the client)")
	fl.DurationVar(&f.interval, "interval", keysync.DefaultInterval, "how often to ask for the pod's assignment (sooner after a failure)")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 90*time.Second, "bound of the work after SIGTERM (delete from the client, release); keep it below the pod's termination grace period")
	fl.StringVar(&f.kdf, "kdf", string(keystore.Scrypt), "KDF of the keystores pushed to the client: scrypt (n=262144, r=8, p=1) or pbkdf2 (c=262144)")
	fl.BoolVar(&f.insecureKDF, "insecure-kdf", false, "low-cost KDF parameters (same KDF): for devnets and tests only")
	return cmd
}

func (f *syncFlags) run(cmd *cobra.Command, g *globalFlags) error {
	pod, err := f.pod.resolve(cmd)
	if err != nil {
		return err
	}
	if f.kmTokenFile == "" {
		return errors.New("--keymanager-token-file is required: the file where the validator client writes its keymanager API token")
	}
	kdf := keystore.KDF(f.kdf)
	if kdf != keystore.Scrypt && kdf != keystore.PBKDF2 {
		return fmt.Errorf("--kdf %q: use scrypt or pbkdf2", f.kdf)
	}
	for name, d := range map[string]time.Duration{"--interval": f.interval, "--shutdown-timeout": f.shutdownTimeout,
		"--keymanager-timeout": f.kmTimeout, "--timeout": f.timeout} {
		if d <= 0 {
			return fmt.Errorf("%s %s: must be more than 0", name, d)
		}
	}
	logger, err := g.logger()
	if err != nil {
		return err
	}
	km, err := keymanager.New(f.kmURL, keymanager.Options{TokenFile: f.kmTokenFile, CAFile: f.kmCAFile, Timeout: f.kmTimeout})
	if err != nil {
		return fmt.Errorf("--keymanager-url: %w", err)
	}
	c, err := f.dial(cmd, g)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := keysync.New(keysync.Config{
		Server:        syncServer{c: c, pod: pod, podUID: f.podUID, count: f.count, timeout: f.timeout},
		Client:        km,
		Interval:      f.interval,
		Keystore:      keystore.Options{KDF: kdf, Insecure: f.insecureKDF},
		ImportTimeout: f.kmTimeout,
		Logger:        logger,
	})
	if err != nil {
		return err
	}
	logger.Info("syncing the validator client with the pod's assignment", slog.String("pod", pod), slog.String("server", f.server),
		slog.String("keymanager", km.URL()), slog.Duration("interval", f.interval))
	ctx := cmd.Context() // ends at SIGTERM or SIGINT
	if err := s.Run(ctx); err != nil {
		return err
	}
	logger.Info("stopping: deleting the keys from the validator client, then releasing them", slog.String("pod", pod))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.shutdownTimeout)
	defer cancel()
	msg, err := s.Shutdown(sctx)
	if err != nil {
		return fmt.Errorf("pod %s: %w", pod, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "pod %s: keys deleted from the validator client and released: %s\n", pod, msg)
	return nil
}

// syncServer is the pkmanager server for one pod, as package keysync uses
// it.
type syncServer struct {
	c       *client.Client
	pod     string
	podUID  string
	count   uint32
	timeout time.Duration
}

func (s syncServer) Request(ctx context.Context) (keysync.Assignment, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.c.RequestKeys(ctx, s.pod, s.podUID, s.count)
	if err != nil {
		return keysync.Assignment{}, err
	}
	ks, err := toKeydir(resp) // request.go: every secret checked against its pubkey
	if err != nil {
		return keysync.Assignment{}, err
	}
	a := keysync.Assignment{SlashingProtection: resp.GetSlashingProtection(), GenesisValidatorsRoot: resp.GetGenesisValidatorsRoot()}
	for _, k := range ks {
		a.Keys = append(a.Keys, keysync.Key{Pubkey: k.Pubkey, Secret: k.Secret, Path: k.Path})
	}
	return a, nil
}

func (s syncServer) Release(ctx context.Context, slashingProtection []byte) (string, error) {
	resp, err := s.c.ReleaseKeys(ctx, s.pod, s.podUID, slashingProtection)
	if err != nil {
		return "", err
	}
	return resp.GetMessage(), nil
}
