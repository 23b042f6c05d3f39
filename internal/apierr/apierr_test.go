package apierr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err     error
		grpc    codes.Code
		http    int
		outcome string
	}{
		{allocator.ErrInvalidRequest, codes.InvalidArgument, 400, OutcomeInvalid},
		{store.ErrInvalidArgument, codes.InvalidArgument, 400, OutcomeInvalid},
		{allocator.ErrPoolExhausted, codes.ResourceExhausted, 409, OutcomeExhausted},
		{store.ErrPodUIDMismatch, codes.FailedPrecondition, 409, OutcomeConflict},
		{store.ErrWrongState, codes.FailedPrecondition, 409, OutcomeConflict},
		{allocator.ErrPermissionDenied, codes.PermissionDenied, 403, OutcomeDenied},
		{allocator.ErrDepositFailed, codes.FailedPrecondition, 409, OutcomeDeposit},
		{allocator.ErrDepositsUnavailable, codes.FailedPrecondition, 503, OutcomeDeposit},
		{fmt.Errorf("claim: %w: %w", allocator.ErrChainUnavailable, errors.New("dial tcp: refused")), codes.Unavailable, 503, OutcomeNoChain},
		{deposit.ErrChainUnknown, codes.FailedPrecondition, 409, OutcomeDeposit},
		{deposit.ErrNotOnChain, codes.FailedPrecondition, 409, OutcomeDeposit},
		{slashing.ErrInvalid, codes.InvalidArgument, 400, OutcomeInvalid},
		{slashing.ErrChainUnknown, codes.FailedPrecondition, 409, OutcomeInvalid},
		{store.ErrNotFound, codes.NotFound, 404, OutcomeNotFound},
		{context.Canceled, codes.Canceled, 499, OutcomeCanceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded, http.StatusGatewayTimeout, OutcomeCanceled},
		{errors.New("disk on fire"), codes.Internal, 500, OutcomeError},
		// The first sentinel in the table wins over a later one it also wraps.
		{fmt.Errorf("claim: %w (%w)", store.ErrInvalidArgument, context.Canceled), codes.InvalidArgument, 400, OutcomeInvalid},
	} {
		err := fmt.Errorf("wrapped: %w", c.err)
		got := Classify(err)
		if got.GRPC != c.grpc || got.HTTP != c.http || got.Outcome != c.outcome || got.HTTPCode == "" {
			t.Errorf("Classify(%v) = %+v, want gRPC %s, HTTP %d, outcome %s", c.err, got, c.grpc, c.http, c.outcome)
		}
	}
	if Outcome(nil) != OutcomeOK {
		t.Errorf("Outcome(nil) = %q", Outcome(nil))
	}
}
