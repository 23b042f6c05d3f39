package allocator

import "errors"

// ErrPermissionDenied: the caller may not act on this pod or key (returned by
// access-checking wrappers such as the Kubernetes auth guard, never by the
// Allocator itself). The API layers map it to PermissionDenied / 403.
var ErrPermissionDenied = errors.New("permission denied")
