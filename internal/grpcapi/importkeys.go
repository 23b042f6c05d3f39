package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/importer"
)

const methodImportKeys = "ImportKeys"

// maxImportKeys bounds one ImportKeys call.
const maxImportKeys = 100_000

// Importer adds keys whose deposits were made elsewhere (the server's
// importer.Import with its store and KEK).
type Importer interface {
	Import(ctx context.Context, keys []importer.Key, fingerprint []byte) (importer.Result, error)
}

// ImportKeys adds keys to the pool as available, without deposits.
func (s *keyService) ImportKeys(ctx context.Context, req *pkmanagerv1.ImportKeysRequest) (*pkmanagerv1.ImportKeysResponse, error) {
	if s.importer == nil {
		return nil, status.Error(codes.Unimplemented, "this server does not import keys")
	}
	start := time.Now()
	resp, err := s.importKeys(ctx, req)
	if err := s.done(ctx, methodImportKeys, start, err, slog.Int("keys", len(req.GetKeys()))); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *keyService) importKeys(ctx context.Context, req *pkmanagerv1.ImportKeysRequest) (*pkmanagerv1.ImportKeysResponse, error) {
	n := len(req.GetKeys())
	if n == 0 || n > maxImportKeys {
		return nil, fmt.Errorf("%w: %d keys to import, allowed 1 to %d", allocator.ErrInvalidRequest, n, maxImportKeys)
	}
	if fp := req.GetMnemonicFingerprint(); len(fp) != 0 && len(fp) != 48 {
		return nil, fmt.Errorf("%w: mnemonic fingerprint has %d bytes, want 48", allocator.ErrInvalidRequest, len(fp))
	}
	keys := make([]importer.Key, n)
	for i, k := range req.GetKeys() {
		if len(k.GetSecretKey()) != 32 {
			return nil, fmt.Errorf("%w: key %d has a %d-byte secret, want 32", allocator.ErrInvalidRequest, i+1, len(k.GetSecretKey()))
		}
		keys[i] = importer.Key{Secret: k.GetSecretKey(), DerivationIndex: k.GetDerivationIndex(), HasDerivationIndex: k.GetHasDerivationIndex()}
	}
	res, err := s.importer.Import(ctx, keys, req.GetMnemonicFingerprint())
	if err != nil {
		return nil, err
	}
	resp := &pkmanagerv1.ImportKeysResponse{}
	for _, pk := range res.Imported {
		resp.Imported = append(resp.Imported, pubkeyBytes(pk))
	}
	for _, pk := range res.Existing {
		resp.Existing = append(resp.Existing, pubkeyBytes(pk))
	}
	if res.ReservedThrough != nil {
		resp.HasReserved, resp.ReservedThrough = true, *res.ReservedThrough
	}
	s.logger.InfoContext(ctx, "keys imported", slog.Int("imported", len(res.Imported)), slog.Int("already_stored", len(res.Existing)))
	return resp, nil
}
