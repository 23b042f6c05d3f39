package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// DefaultStoreFile is the bbolt file name inside the data directory.
const DefaultStoreFile = "pkmanager.db"

// DefaultStoreURL is the store location used when --store is not given.
func DefaultStoreURL(dataDir string) string {
	return "bolt://" + filepath.Join(dataDir, DefaultStoreFile)
}

// OpenStore opens the store named by rawURL:
//
//	bolt:///abs/path/file.db   embedded bbolt file
//	/abs/path/file.db          the same, as a plain path
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
	default:
		return nil, fmt.Errorf("store %q: unsupported scheme %q (supported: bolt)", redactURL(rawURL), kind)
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
		return "", "", fmt.Errorf("store URL %q: %w", redactURL(rawURL), err)
	}
	switch u.Scheme {
	case "bolt", "bbolt":
		p := u.Path
		if u.Host != "" { // bolt://relative/path.db
			p = u.Host + u.Path
		}
		if p == "" {
			return "", "", fmt.Errorf("store URL %q names no file (use bolt:///path/to/file.db)", rawURL)
		}
		return "bolt", p, nil
	default:
		return u.Scheme, rawURL, nil
	}
}

// redactURL hides a password in a URL so it can be shown in errors and logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
