package grpcapi

import (
	"context"
	"fmt"
	"time"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Exiter signs and submits voluntary exits (*server.Server).
type Exiter interface {
	ExitKeys(ctx context.Context, req lifecycle.ExitRequest) ([]lifecycle.Signed, error)
}

// ExitKeys signs voluntary exits and submits them, or returns them for
// offline submission.
func (s *keyService) ExitKeys(ctx context.Context, req *pkmanagerv1.ExitKeysRequest) (*pkmanagerv1.ExitKeysResponse, error) {
	start := time.Now()
	resp, err := s.exitKeys(ctx, req)
	if err := s.done(ctx, methodExitKeys, start, err); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *keyService) exitKeys(ctx context.Context, req *pkmanagerv1.ExitKeysRequest) (*pkmanagerv1.ExitKeysResponse, error) {
	if s.exits == nil {
		return nil, lifecycle.ErrNoBeacon
	}
	r := lifecycle.ExitRequest{Count: int(req.GetCount()), Force: req.GetForce(), Submit: req.GetSubmit(), Reason: req.GetReason()}
	for i, raw := range req.GetPubkeys() {
		if len(raw) != store.PubkeyLength {
			return nil, fmt.Errorf("%w: public key %d has %d bytes, want %d", allocator.ErrInvalidRequest, i+1, len(raw), store.PubkeyLength)
		}
		r.Pubkeys = append(r.Pubkeys, store.Pubkey(raw))
	}
	out, err := s.exits.ExitKeys(ctx, r)
	if err != nil && len(out) == 0 {
		return nil, err
	}
	resp := &pkmanagerv1.ExitKeysResponse{}
	for _, e := range out {
		resp.Exits = append(resp.Exits, &pkmanagerv1.SignedExit{
			Pubkey: e.Pubkey[:], ValidatorIndex: uint64(e.Exit.Message.ValidatorIndex), Epoch: uint64(e.Exit.Message.Epoch),
			Signature: e.Exit.Signature[:], Submitted: e.Submitted,
		})
	}
	if err != nil {
		resp.SubmitError = err.Error()
	}
	return resp, nil
}
