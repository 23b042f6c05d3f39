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
	err := st.Bind(ctx, store.BindKEK, kek.ID())
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrBindingMismatch) {
		return fmt.Errorf("check key-encryption key against the store: %w", err)
	}
	need := "unknown"
	if b, berr := st.Bindings(ctx); berr == nil && b[store.BindKEK] != "" {
		need = b[store.BindKEK]
	}
	// The sentinel is kept for errors.Is, not repeated in the text.
	return &kekMismatch{msg: fmt.Sprintf("the store %s was created with another key-encryption key: it needs the key with id %s, the one given (--kek-file or PKM_KEK) has id %s",
		redact.URL(storeURL), need, kek.ID()), err: err}
}

type kekMismatch struct {
	msg string
	err error
}

func (e *kekMismatch) Error() string { return e.msg }
func (e *kekMismatch) Unwrap() error { return e.err }
