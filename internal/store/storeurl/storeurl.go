// Package storeurl opens a store by its URL: the one table of store
// backends (URL schemes, how a location is read, how it is opened) that
// serve and the offline tools (backup, restore, migrate-store, import)
// share, as database/sql's driver table is for its drivers.
//
// A third backend is a package that implements store.Store (and passes
// storetest.Run), one row in backends below, and the optional interfaces of
// package store it has features for (store.Clock, store.Owners,
// store.SessionLock).
package storeurl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
)

// Lock says how a process holds a store against other processes. bbolt's
// file lock admits one process whatever is asked; PostgreSQL's store lock
// tells servers and the tools that need them stopped apart.
type Lock int

const (
	// LockShared: servers and imports (the zero value). Several may hold a
	// store shared at once; none while one holds it exclusively.
	LockShared Lock = iota
	// LockExclusive: tools that need every server stopped (restore,
	// migrate-store).
	LockExclusive
	// LockNone: no store lock where the backend can do without (backup, which
	// reads one consistent snapshot while servers run).
	LockNone
)

// Options say how Open opens a store.
type Options struct {
	// Logger receives the backend's notices. Nil means slog.Default().
	Logger *slog.Logger
	// Lock is how the store is held (see Lock).
	Lock Lock
	// MustExist: the store must exist already (a bbolt file that is there,
	// a PostgreSQL database holding this build's schema, which is then not
	// changed); else Open fails with an error wrapping ErrNotExist.
	MustExist bool
	// InExistingDir: a new bbolt file is made only in a directory that
	// exists (a typo does not make a new store that no server uses).
	InExistingDir bool
	// ApplicationName names PostgreSQL's connections in pg_stat_activity
	// ("" means the backend's default).
	ApplicationName string
}

// ErrNotExist is wrapped by Open's error when Options.MustExist is set and
// the store does not exist.
var ErrNotExist = errors.New("store does not exist")

// backend is one row of the table: a store backend, its URL schemes and how
// to open it.
type backend struct {
	name    string
	schemes []string
	// shared: several processes may use one store at once (replicas).
	shared bool
	// location turns the URL into what open takes.
	location func(raw string, u *url.URL) (string, error)
	open     func(ctx context.Context, location string, o Options) (store.Store, error)
}

// backends is the table; a plain path (no "://") names a bbolt file.
var backends = []backend{
	{name: "bolt", schemes: []string{"bolt", "bbolt"}, location: boltLocation, open: openBolt},
	{name: "postgres", schemes: []string{"postgres", "postgresql"}, shared: true, location: rawLocation, open: openPostgres},
}

// The optional features of the backends (package store's optional
// interfaces): a backend that loses one would silently lose its safety
// (PostgreSQL's replicas would all own every role), so it does not compile.
var (
	_ store.Clock       = (*postgres.Store)(nil)
	_ store.Owners      = (*postgres.Store)(nil)
	_ store.SessionLock = (*postgres.Store)(nil)
)

// Open opens the store named by rawURL:
//
//	bolt:///abs/path/file.db   embedded bbolt file (one server process)
//	/abs/path/file.db          the same, as a plain path
//	postgres://user@host:5432/db?sslmode=...   PostgreSQL, shared by replicas
//	                           (also postgresql://; the password may be in the
//	                           URL, PGPASSWORD or ~/.pgpass)
//
// The store is behind the checking front (store.Front), which checks every
// call's ctx and arguments before the backend sees it; store.As reaches the
// backend's optional interfaces. Its errors never show a password of the
// URL.
func Open(ctx context.Context, rawURL string, o Options) (store.Store, error) {
	b, location, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	s, err := b.open(ctx, location, o)
	if err != nil {
		return nil, err
	}
	return store.Front(s), nil
}

// Parse splits a store URL into its backend's name ("bolt", "postgres")
// and the location that backend opens.
func Parse(rawURL string) (kind, location string, err error) {
	b, location, err := parse(rawURL)
	if err != nil {
		return "", "", err
	}
	return b.name, location, nil
}

// Shared reports whether rawURL names a store that several processes may
// use at once (PostgreSQL), as opposed to one a process holds to itself
// (bbolt's file lock). An unknown or bad URL is not shared.
func Shared(rawURL string) bool {
	b, _, err := parse(rawURL)
	return err == nil && b.shared
}

func parse(rawURL string) (*backend, string, error) {
	if rawURL == "" {
		return nil, "", fmt.Errorf("no store given")
	}
	if !strings.Contains(rawURL, "://") {
		return &backends[0], rawURL, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error quotes the whole URL, password included: keep
		// only its reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, "", fmt.Errorf("store URL %s: %w", redact.URL(rawURL), err)
	}
	for i := range backends {
		b := &backends[i]
		if slices.Contains(b.schemes, u.Scheme) {
			location, err := b.location(rawURL, u)
			return b, location, err
		}
	}
	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = b.name
	}
	return nil, "", fmt.Errorf("store %q: unsupported scheme %q (supported: %s)", redact.URL(rawURL), u.Scheme, strings.Join(names, ", "))
}

// boltLocation is the file of bolt:///abs/path.db (or bolt://relative/path.db).
func boltLocation(raw string, u *url.URL) (string, error) {
	p := u.Path
	if u.Host != "" { // bolt://relative/path.db
		p = u.Host + u.Path
	}
	if p == "" {
		return "", fmt.Errorf("store URL %q names no file (use bolt:///path/to/file.db)", redact.URL(raw))
	}
	return p, nil
}

// rawLocation: the backend takes the whole URL (PostgreSQL's connection
// string).
func rawLocation(raw string, _ *url.URL) (string, error) { return raw, nil }

func openBolt(_ context.Context, path string, o Options) (store.Store, error) {
	if o.InExistingDir {
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("store %s: directory %s does not exist; create it first (a new store is made only in an existing directory)", path, dir)
		}
	}
	if o.MustExist {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, notExist{fmt.Errorf("store %s does not exist (a typo in --store or --data-dir?)", path)}
		} else if err != nil {
			return nil, fmt.Errorf("store %s: %w", path, err)
		}
	}
	s, err := bolt.Open(path, bolt.Options{Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func openPostgres(ctx context.Context, rawURL string, o Options) (store.Store, error) {
	lock := postgres.LockShared
	switch o.Lock {
	case LockExclusive:
		lock = postgres.LockExclusive
	case LockNone:
		lock = postgres.LockNone
	}
	s, err := postgres.Open(ctx, rawURL, postgres.Options{Logger: o.Logger, NoMigrate: o.MustExist, ApplicationName: o.ApplicationName, Lock: lock})
	if errors.Is(err, postgres.ErrNoSchema) {
		return nil, notExist{err}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// notExist marks err as ErrNotExist and keeps its message.
type notExist struct{ error }

func (e notExist) Unwrap() error        { return e.error }
func (e notExist) Is(target error) bool { return target == ErrNotExist }
