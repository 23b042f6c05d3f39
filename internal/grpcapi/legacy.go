package grpcapi

import (
	"context"
	"log/slog"
	"time"

	"github.com/pkmanager/pkmanager/api/legacy/ethcluster"
	"github.com/pkmanager/pkmanager/api/legacy/prysmcluster"
)

// legacyRequest serves PrivateKeyService.Request: the secrets of the pod's
// whole set, as Prysm's cluster-pk-manager returned them. Legacy clients send
// no pod UID.
func (b *base) legacyRequest(ctx context.Context, pod string, numberOfKeys uint64) ([][]byte, error) {
	start := time.Now()
	secrets, err := b.legacySecrets(ctx, pod, numberOfKeys)
	return secrets, b.done(ctx, methodLegacyRequest, start, err, podAttr(pod), slog.Uint64("requested", numberOfKeys))
}

func (b *base) legacySecrets(ctx context.Context, pod string, numberOfKeys uint64) ([][]byte, error) {
	n, err := keyCount(numberOfKeys)
	if err != nil {
		return nil, err
	}
	res, err := b.alloc.Request(ctx, pod, "", n)
	if err != nil {
		return nil, err
	}
	secrets := make([][]byte, len(res.Keys))
	for i, k := range res.Keys {
		secrets[i] = k.Secret
	}
	return secrets, nil
}

// prysmLegacy is PrivateKeyService in package prysm.internal.cluster.
type prysmLegacy struct {
	prysmcluster.UnimplementedPrivateKeyServiceServer
	*base
}

// Request returns the pod's keys; the deprecated private_key field stays empty.
func (s *prysmLegacy) Request(ctx context.Context, req *prysmcluster.PrivateKeyRequest) (*prysmcluster.PrivateKeyResponse, error) {
	secrets, err := s.legacyRequest(ctx, req.GetPodName(), req.GetNumberOfKeys())
	if err != nil {
		return nil, err
	}
	return &prysmcluster.PrivateKeyResponse{PrivateKeys: &prysmcluster.PrivateKeys{PrivateKeys: secrets}}, nil
}

// ethLegacy is PrivateKeyService in package ethereum.cluster.
type ethLegacy struct {
	ethcluster.UnimplementedPrivateKeyServiceServer
	*base
}

// Request returns the pod's keys; the deprecated private_key field stays empty.
func (s *ethLegacy) Request(ctx context.Context, req *ethcluster.PrivateKeyRequest) (*ethcluster.PrivateKeyResponse, error) {
	secrets, err := s.legacyRequest(ctx, req.GetPodName(), req.GetNumberOfKeys())
	if err != nil {
		return nil, err
	}
	return &ethcluster.PrivateKeyResponse{PrivateKeys: &ethcluster.PrivateKeys{PrivateKeys: secrets}}, nil
}
