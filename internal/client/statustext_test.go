package client

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors read as words, never as the status code's Go name.
func TestStatusText(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.InvalidArgument, "invalid request: pod name is empty"), "invalid request: pod name is empty"},
		{status.Error(codes.FailedPrecondition, "claim for pod u-0: its keys are held under pod UID a, not b"), "claim for pod u-0: its keys are held under pod UID a, not b"},
		{status.Error(codes.PermissionDenied, "token of pod a may not ask for pod b"), "permission denied: token of pod a may not ask for pod b"},
		{status.Error(codes.PermissionDenied, "permission denied: no"), "permission denied: no"},
		{status.Error(codes.Unauthenticated, "no bearer token"), "not authenticated: no bearer token"},
		{status.Error(codes.Internal, "internal error"), "server error: internal error"},
		{errors.New("plain"), "plain"},
	} {
		if got := statusText(tc.err); got != tc.want {
			t.Errorf("statusText(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
