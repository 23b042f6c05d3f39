package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/backup"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storeurl"
)

// toolAppName names the PostgreSQL sessions of backup, restore,
// migrate-store and import in pg_stat_activity (for operators; whether
// servers run is told by the store lock, see storeurl.Lock).
const toolAppName = "pkmanager-tool"

// toolStore says how an offline tool opens a store.
type toolStore struct {
	// create: the store may be new (import --create, and the targets of
	// restore and migrate-store). Otherwise it must exist: a bbolt file
	// that is there, a PostgreSQL schema of this version.
	create bool
	// target: a new store to fill (restore, migrate-store --to). A bbolt
	// target's directory must exist (a typo does not make a new store
	// that no server uses).
	target bool
	// createFlag: the command has --create (named in the error).
	createFlag bool
	// lock: the store lock (bbolt's file lock is always taken):
	// LockExclusive for tools that need every server stopped.
	lock storeurl.Lock
}

// openToolStore opens a store for an offline tool. A bbolt file is locked by
// a running server, so opening it proves the server is stopped; on
// PostgreSQL the store lock does (see toolStore.lock). A PostgreSQL store is
// opened without schema changes unless create is set (an empty target gets
// the schema).
func openToolStore(ctx context.Context, rawURL string, o toolStore, logger *slog.Logger) (store.Store, error) {
	s, err := storeurl.Open(ctx, rawURL, storeurl.Options{
		Logger:          logger,
		Lock:            o.lock,
		MustExist:       !o.create,
		InExistingDir:   o.target,
		ApplicationName: toolAppName,
	})
	switch {
	case err == nil:
		return s, nil
	case o.createFlag && errors.Is(err, storeurl.ErrNotExist):
		return nil, fmt.Errorf("%w; give --create to make a new store", err)
	case errors.Is(err, store.ErrLocked) && !storeurl.Shared(rawURL):
		return nil, fmt.Errorf("%w: stop the server that uses it first", err)
	}
	return nil, err
}

// checkToolLock fails when a store that holds its lock in a session
// (PostgreSQL) lost it while the tool used it: a server may have started on
// it meanwhile.
func checkToolLock(st store.Store, what string) error {
	if l, ok := store.As[store.SessionLock](st); ok {
		if err := l.CheckLock(); err != nil {
			return fmt.Errorf("%s: %w; a server may have used it meanwhile, so the result is not to be trusted: do not use it", what, err)
		}
	}
	return nil
}

// loadToolKEK reads --kek-file or PKM_KEK.
func loadToolKEK(kekFile string, logger *slog.Logger) (*seal.KEK, error) {
	if kekFile == "" {
		v, ok := os.LookupEnv("PKM_KEK")
		if !ok {
			return nil, errors.New("no key-encryption key: give --kek-file FILE or set PKM_KEK")
		}
		kek, err := seal.ParseKEK(v)
		if err != nil {
			return nil, fmt.Errorf("PKM_KEK: %w", err)
		}
		return kek, nil
	}
	kek, warning, err := seal.LoadKEKFile(kekFile)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		logger.Warn(warning)
	}
	return kek, nil
}

type backupFlags struct {
	storeURL string
	out      string
	kekFile  string
	timeout  time.Duration
}

func newBackupCommand(g *globalFlags) *cobra.Command {
	f := &backupFlags{}
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write an encrypted, consistent snapshot of a store to a file",
		Long: `Write a consistent snapshot of the store (every key with its sealed secret and
deposit, pods, bindings, derivation index, audit trail) to --out.

The secret keys stay sealed with the key-encryption key (KEK) as in the store, and the
whole file is encrypted and authenticated with a key derived from the KEK. Its clear
header names the format version and the KEK's ID; restore needs the same KEK.

A bbolt store can only be backed up while its server is stopped (the file is locked).
A PostgreSQL store can be backed up while servers run (one consistent snapshot).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd, g) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.storeURL, "store", "", "store to back up: bolt:///path/file.db or postgres://... (required)")
	fl.StringVar(&f.out, "out", "", "backup file to write; must not exist (required)")
	fl.StringVar(&f.kekFile, "kek-file", "", "key-encryption key file of the store (or PKM_KEK)")
	fl.DurationVar(&f.timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

func (f *backupFlags) run(cmd *cobra.Command, g *globalFlags) error {
	logger, err := g.logger()
	if err != nil {
		return err
	}
	if f.storeURL == "" || f.out == "" {
		return errors.New("--store and --out are required")
	}
	kek, err := loadToolKEK(f.kekFile, logger)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(f.out); err == nil {
		return fmt.Errorf("%s exists; choose a new file name", f.out)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	// A PostgreSQL store is read in one snapshot while servers run.
	st, err := openToolStore(ctx, f.storeURL, toolStore{lock: storeurl.LockNone}, logger)
	if err != nil {
		return err
	}
	defer st.Close()

	var sum backup.Summary
	err = writeNewFile(f.out, func(w io.Writer) error {
		var werr error
		sum, werr = backup.Write(ctx, w, st, kek, time.Now())
		return werr
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "backup written to %s\n  keys:   %d (%s)\n  other:  %d bindings, next derivation index %d, %d audit events\n  digest: %s\n  needs key-encryption key %s\n",
		f.out, sum.Keys, backup.DescribeCounts(sum.Counts), sum.Bindings, sum.NextIndex, sum.AuditEvents, sum.KeysDigest, kek.ID())
	return nil
}

// writeNewFile writes path (mode 0600) through a temporary file in the
// same directory that is synced and renamed only when write succeeds; path
// must not exist.
func writeNewFile(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link fails if path appeared meanwhile: never overwrite a file.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	os.Remove(tmp.Name())
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

type restoreFlags struct {
	storeURL   string
	in         string
	kekFile    string
	reuseDelay time.Duration
	timeout    time.Duration
}

// restoreRuleHelp describes the restore rule for restore and migrate-store.
const restoreRuleHelp = `

The snapshot may be older than the live state it replaces, and pods of that
live state may still sign with keys the snapshot calls free. So nothing comes
back into circulation sooner than the live system would have let it: every
available and cooling-down key cools down for --reuse-delay from now (use the
server's --reuse-delay), and the servers on the filled store warn that they
run on a restored snapshot until the pod watcher has found every pod that
holds keys running as recorded. Keys pending deposit are checked against the
chain before any deposit is sent.`

// applyRestoreRule applies backup.Restored and returns what the filled
// store must then read back as.
func applyRestoreRule(snap *store.Snapshot, keys []store.Key, delay time.Duration) (backup.RestoreReport, backup.Summary, error) {
	rep, err := backup.Restored(snap, keys, time.Now(), delay)
	if err != nil {
		return rep, backup.Summary{}, fmt.Errorf("--reuse-delay: %w", err)
	}
	want, err := backup.Digest(keys, *snap)
	return rep, want, err
}

func describeRestoreRule(rep backup.RestoreReport) string {
	return fmt.Sprintf("  cooling down: %d available and cooling-down keys until %s (restore rule)\n", rep.Cooled, rep.Until.UTC().Format(time.RFC3339))
}

func newRestoreCommand(g *globalFlags) *cobra.Command {
	f := &restoreFlags{}
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Fill an empty store from a backup file",
		Long: `Read a backup file written by "pkmanager backup", check it completely (every frame
authenticates with the key-encryption key, nothing is missing or added, counts and
digest match), and load it into --store, which must be empty (a new bbolt file in an
existing directory, or an empty PostgreSQL database). Afterwards the store is read back
and compared with the file. No server may run on the target: a PostgreSQL target that
servers hold (their store lock) is refused, and held by restore until it is done.` + restoreRuleHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd, g) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.in, "in", "", "backup file (required)")
	fl.StringVar(&f.storeURL, "store", "", "empty store to fill: bolt:///path/file.db or postgres://... (required)")
	fl.StringVar(&f.kekFile, "kek-file", "", "key-encryption key file (or PKM_KEK); the file header names the KEK ID it needs")
	fl.DurationVar(&f.reuseDelay, "reuse-delay", allocator.DefaultReuseDelay, "keys free in the snapshot cool down this long from now (the server's --reuse-delay)")
	fl.DurationVar(&f.timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

func (f *restoreFlags) run(cmd *cobra.Command, g *globalFlags) error {
	logger, err := g.logger()
	if err != nil {
		return err
	}
	if f.storeURL == "" || f.in == "" {
		return errors.New("--in and --store are required")
	}
	kek, err := loadToolKEK(f.kekFile, logger)
	if err != nil {
		return err
	}
	file, err := os.Open(f.in)
	if err != nil {
		return err
	}
	defer file.Close()
	c, err := backup.Read(file, kek)
	if err != nil {
		return fmt.Errorf("backup %s: %w", f.in, err)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	st, err := openToolStore(ctx, f.storeURL, toolStore{create: true, target: true, lock: storeurl.LockExclusive}, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	rep, want, err := applyRestoreRule(&c.Snapshot, c.Keys, f.reuseDelay)
	if err != nil {
		return err
	}
	if err := st.Load(ctx, c.Snapshot, c.Keys); err != nil {
		if errors.Is(err, store.ErrNotEmpty) {
			return fmt.Errorf("restore only fills an empty store: %w", err)
		}
		return err
	}
	got, err := backup.Summarize(ctx, st)
	if err != nil {
		return fmt.Errorf("read the restored store back: %w", err)
	}
	if !got.Equal(want) {
		return fmt.Errorf("the restored store differs from the backup (%s); do not use it", want.Diff(got))
	}
	if err := checkToolLock(st, "the restored store"); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s\n  keys:   %d (%s)\n  digest: %s (verified)\n%s",
		f.in, redact.URL(f.storeURL), got.Keys, backup.DescribeCounts(got.Counts), got.KeysDigest, describeRestoreRule(rep))
	return nil
}

type migrateFlags struct {
	from, to   string
	reuseDelay time.Duration
	timeout    time.Duration
}

func newMigrateStoreCommand(g *globalFlags) *cobra.Command {
	f := &migrateFlags{}
	cmd := &cobra.Command{
		Use:   "migrate-store",
		Short: "Copy a stopped installation's store into another, empty store (e.g. bbolt to PostgreSQL)",
		Long: `Copy every key (sealed secrets as they are: no key-encryption key needed), pod,
binding, the derivation index and the audit trail from --from into the empty store
--to, in one consistent snapshot, then verify: the counts per state and a digest over
every field of every key, and of the rest, must be equal on both sides.

Stop the servers first. For a bbolt store, its file lock proves it; for a PostgreSQL
store, the store lock every server holds while it runs: a source or target that
servers (or imports) hold is refused. The target must be empty; a new bbolt target
is created in an existing directory.` + restoreRuleHelp,
		Example: "  pkmanager migrate-store --from bolt:///var/lib/pkmanager/pkmanager.db --to postgres://pkmanager@db:5432/pkmanager",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return f.run(cmd, g) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "source store (required)")
	fl.StringVar(&f.to, "to", "", "empty target store (required)")
	fl.DurationVar(&f.reuseDelay, "reuse-delay", allocator.DefaultReuseDelay, "keys free in the source cool down this long from now (the server's --reuse-delay)")
	fl.DurationVar(&f.timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

func (f *migrateFlags) run(cmd *cobra.Command, g *globalFlags) error {
	logger, err := g.logger()
	if err != nil {
		return err
	}
	if f.from == "" || f.to == "" {
		return errors.New("--from and --to are required")
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	// Both stores are held exclusively until the copy is verified: no
	// server runs on either meanwhile.
	src, err := openToolStore(ctx, f.from, toolStore{lock: storeurl.LockExclusive}, logger)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer src.Close()
	dst, err := openToolStore(ctx, f.to, toolStore{create: true, target: true, lock: storeurl.LockExclusive}, logger)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer dst.Close()

	var keys []store.Key
	snap, err := src.Dump(ctx, func(k store.Key) error {
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the source: %w", err)
	}
	source, err := backup.Digest(keys, snap)
	if err != nil {
		return err
	}
	rep, want, err := applyRestoreRule(&snap, keys, f.reuseDelay)
	if err != nil {
		return err
	}
	if err := dst.Load(ctx, snap, keys); err != nil {
		if errors.Is(err, store.ErrNotEmpty) {
			return fmt.Errorf("target: migrate-store only fills an empty store: %w", err)
		}
		return fmt.Errorf("target: %w", err)
	}
	got, err := backup.Summarize(ctx, dst)
	if err != nil {
		return fmt.Errorf("read the target back: %w", err)
	}
	if !got.Equal(want) {
		return fmt.Errorf("the target differs from the source after the copy (%s); do not use it", want.Diff(got))
	}
	if err := checkToolLock(src, "source"); err != nil {
		return err
	}
	if err := checkToolLock(dst, "target"); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "copied %s to %s\n  keys:   %d (%s)\n  other:  %d bindings, next derivation index %d, %d audit events\n  digest: source %s, target %s (verified after the restore rule)\n%s",
		redact.URL(f.from), redact.URL(f.to), got.Keys, backup.DescribeCounts(got.Counts),
		got.Bindings, got.NextIndex, got.AuditEvents, source.KeysDigest, got.KeysDigest, describeRestoreRule(rep))
	return nil
}
