package server

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storeurl"
)

// DefaultStoreFile is the bbolt file name inside the data directory.
const DefaultStoreFile = "pkmanager.db"

// DefaultStoreURL is the store location used when --store is not given.
func DefaultStoreURL(dataDir string) string {
	return "bolt://" + filepath.Join(dataDir, DefaultStoreFile)
}

// OpenStore opens the store named by rawURL for a server (the URLs:
// storeurl.Open). Every server holds the store lock shared while it runs,
// so that tools that need the servers stopped can tell (migrate-store).
func OpenStore(ctx context.Context, rawURL string, logger *slog.Logger) (store.Store, error) {
	return storeurl.Open(ctx, rawURL, storeurl.Options{Logger: logger, Lock: storeurl.LockShared})
}
