package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
)

// DefaultStoreFile is the bbolt file name inside the data directory.
const DefaultStoreFile = "pkmanager.db"

// DefaultStoreURL is the store location used when --store is not given.
func DefaultStoreURL(dataDir string) string {
	return "bolt://" + filepath.Join(dataDir, DefaultStoreFile)
}

// OpenStore opens the store named by rawURL:
//
//	bolt:///abs/path/file.db   embedded bbolt file (one server process)
//	/abs/path/file.db          the same, as a plain path
//	postgres://user@host:5432/db?sslmode=...   PostgreSQL, shared by replicas
//	                           (also postgresql://; the password may be in the
//	                           URL, PGPASSWORD or ~/.pgpass)
func OpenStore(ctx context.Context, rawURL string, logger *slog.Logger) (store.Store, error) {
	kind, location, err := ParseStoreURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "bolt":
		s, err := bolt.Open(location, bolt.Options{Logger: logger})
		if err != nil {
			return nil, err
		}
		return s, nil
	case "postgres":
		// Every server holds the store lock shared while it runs, so that
		// tools that need the servers stopped can tell (migrate-store).
		s, err := postgres.Open(ctx, location, postgres.Options{Logger: logger, Lock: postgres.LockShared})
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("store %q: unsupported scheme %q (supported: bolt, postgres)", redact.URL(rawURL), kind)
	}
}

// ParseStoreURL splits a store URL into its kind and location.
func ParseStoreURL(rawURL string) (kind, location string, err error) {
	if rawURL == "" {
		return "", "", fmt.Errorf("no store given")
	}
	if !strings.Contains(rawURL, "://") {
		return "bolt", rawURL, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error quotes the whole URL, password included: keep
		// only its reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", "", fmt.Errorf("store URL %s: %w", redact.URL(rawURL), err)
	}
	switch u.Scheme {
	case "postgres", "postgresql":
		return "postgres", rawURL, nil
	case "bolt", "bbolt":
		p := u.Path
		if u.Host != "" { // bolt://relative/path.db
			p = u.Host + u.Path
		}
		if p == "" {
			return "", "", fmt.Errorf("store URL %q names no file (use bolt:///path/to/file.db)", redact.URL(rawURL))
		}
		return "bolt", p, nil
	default:
		return u.Scheme, rawURL, nil
	}
}
