// Package apierr classifies the errors of pkmanager's rules and store once,
// for every transport: the gRPC code, the HTTP status and error code, and
// the outcome label of pkmanager_requests_total all come from one table, so
// a status and its metric always agree.
package apierr

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Outcome labels of pkmanager_requests_total.
const (
	OutcomeOK        = "ok"
	OutcomeInvalid   = "invalid"   // bad input; nothing changed
	OutcomeExhausted = "exhausted" // pool exhausted and minting off
	OutcomeConflict  = "conflict"  // e.g. the pod name is held by another pod UID
	OutcomeNotFound  = "not_found"
	OutcomeDenied    = "denied"  // the caller may not act on this pod or key
	OutcomeDeposit   = "deposit" // on-chain deposits failed, cannot be made now, or cannot be checked
	OutcomeCanceled  = "canceled"
	OutcomeNoChain   = "chain_unavailable" // the beacon node could not vouch for recycled keys; nothing handed out
	OutcomeError     = "error"             // internal or store failure
)

// Class is how an error leaves the server.
type Class struct {
	GRPC     codes.Code
	HTTP     int    // HTTP status
	HTTPCode string // the "code" of an HTTP error body
	Outcome  string // pkmanager_requests_total's outcome label
}

// Internal is the class of every error the table does not name: its
// message never leaves the server.
var Internal = Class{codes.Internal, http.StatusInternalServerError, "internal", OutcomeError}

// table is checked in order; the first sentinel err wraps decides.
var table = []struct {
	errs  []error
	class Class
}{
	{[]error{allocator.ErrInvalidRequest, store.ErrInvalidArgument, slashing.ErrInvalid}, Class{codes.InvalidArgument, http.StatusBadRequest, "invalid_argument", OutcomeInvalid}},
	{[]error{allocator.ErrPoolExhausted}, Class{codes.ResourceExhausted, http.StatusConflict, "pool_exhausted", OutcomeExhausted}},
	{[]error{store.ErrPodUIDMismatch}, Class{codes.FailedPrecondition, http.StatusConflict, "conflict", OutcomeConflict}},
	{[]error{store.ErrWrongState}, Class{codes.FailedPrecondition, http.StatusConflict, "wrong_state", OutcomeConflict}},
	{[]error{allocator.ErrPermissionDenied}, Class{codes.PermissionDenied, http.StatusForbidden, "permission_denied", OutcomeDenied}},
	{[]error{allocator.ErrDepositFailed}, Class{codes.FailedPrecondition, http.StatusConflict, "deposit_failed", OutcomeDeposit}},
	{[]error{allocator.ErrDepositsUnavailable}, Class{codes.FailedPrecondition, http.StatusServiceUnavailable, "deposits_unavailable", OutcomeDeposit}},
	{[]error{allocator.ErrChainUnavailable, beacon.ErrUnavailable}, Class{codes.Unavailable, http.StatusServiceUnavailable, "chain_unavailable", OutcomeNoChain}},
	{[]error{lifecycle.ErrNoBeacon}, Class{codes.FailedPrecondition, http.StatusConflict, "no_beacon_node", OutcomeNoChain}},
	{[]error{deposit.ErrChainUnknown}, Class{codes.FailedPrecondition, http.StatusConflict, "chain_unknown", OutcomeDeposit}},
	{[]error{deposit.ErrNotOnChain}, Class{codes.FailedPrecondition, http.StatusConflict, "not_on_chain", OutcomeDeposit}},
	// A slashing-protection upload to a server without chain parameters:
	// the server's configuration, not the file, is what is missing.
	{[]error{slashing.ErrChainUnknown}, Class{codes.FailedPrecondition, http.StatusConflict, "slashing_chain_unknown", OutcomeInvalid}},
	{[]error{store.ErrNotFound}, Class{codes.NotFound, http.StatusNotFound, "not_found", OutcomeNotFound}},
	// 499: the client closed the request (it sees no answer).
	{[]error{context.Canceled}, Class{codes.Canceled, 499, "canceled", OutcomeCanceled}},
	{[]error{context.DeadlineExceeded}, Class{codes.DeadlineExceeded, http.StatusGatewayTimeout, "deadline_exceeded", OutcomeCanceled}},
}

// Classify returns the class of err (Internal for nil or unknown errors;
// check err == nil first).
func Classify(err error) Class {
	for _, row := range table {
		for _, target := range row.errs {
			if errors.Is(err, target) {
				return row.class
			}
		}
	}
	return Internal
}

// Outcome is err's outcome label (OutcomeOK for nil).
func Outcome(err error) string {
	if err == nil {
		return OutcomeOK
	}
	return Classify(err).Outcome
}
