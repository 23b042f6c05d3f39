package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pkmanager/pkmanager/internal/importer"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
)

// importService imports keys into the server's store (KeyService.ImportKeys).
type importService struct {
	store store.Store
	kek   *seal.KEK
	now   func() time.Time
}

func (i importService) Import(ctx context.Context, keys []importer.Key, fingerprint []byte) (importer.Result, error) {
	return importer.Import(ctx, i.store, i.kek, keys, fingerprint, i.now())
}

// CheckKEK binds a store to kek on first use and fails clearly when the
// store was made with another KEK (for commands that open a store without a
// server, such as import).
func CheckKEK(ctx context.Context, st store.Store, kek *seal.KEK, storeURL string) error {
	if err := st.Bind(ctx, store.BindKEK, kek.ID()); err != nil {
		if errors.Is(err, store.ErrBindingMismatch) {
			return fmt.Errorf("the store %s was created with another key-encryption key than the one given (id %s): %w",
				redact.URL(storeURL), kek.ID(), err)
		}
		return fmt.Errorf("check key-encryption key against the store: %w", err)
	}
	return nil
}
