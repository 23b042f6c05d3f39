package auth

import (
	"context"
	"fmt"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Kind is what an authenticated caller may do.
type Kind int

const (
	// KindPod: a validator pod with a pod-bound token; may request its own
	// keys only.
	KindPod Kind = iota + 1
	// KindAdmin: passed the admin check of the operation it calls.
	KindAdmin
	// KindLegacyAnonymous: a caller of the legacy PrivateKeyService without a
	// token (only when that service is enabled); no pod binding is possible.
	KindLegacyAnonymous
)

// Caller is the authenticated caller of one request.
type Caller struct {
	Kind     Kind
	Identity Identity
}

type callerKey struct{}

// WithCaller returns ctx carrying c, and c's actor for the audit trail.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	ctx = context.WithValue(ctx, callerKey{}, c)
	switch c.Kind {
	case KindLegacyAnonymous:
		return store.WithActor(ctx, "legacy-anonymous")
	default:
		return store.WithActor(ctx, c.Identity.Actor())
	}
}

// CallerFrom returns the caller of ctx, or nil.
func CallerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

// Allocator is the allocator interface of the API layers (grpcapi, httpapi).
type Allocator interface {
	Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error)
	Release(ctx context.Context, pod, podUID string) (allocator.ReleaseResult, error)
	ReleaseWithProtection(ctx context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error)
	Retire(ctx context.Context, pubkey store.Pubkey, reason string) error
}

// Guard enforces the pod binding on every allocator call, whatever API it
// came through: a pod caller gets keys only under its own token's pod name
// and UID (an empty request UID is filled in from the token), admins and pods
// cannot swap roles, and a call without a caller is refused. The interceptors
// put the caller in the context; Guard is the last line behind them.
type Guard struct {
	Next Allocator
}

// Request serves pod callers (their own pod only) and anonymous legacy calls.
func (g Guard) Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error) {
	c := CallerFrom(ctx)
	switch {
	case c == nil:
		return allocator.Result{}, fmt.Errorf("%w: no authenticated caller", allocator.ErrPermissionDenied)
	case c.Kind == KindLegacyAnonymous:
	case c.Kind == KindPod:
		id := c.Identity
		if pod != id.PodName {
			return allocator.Result{}, fmt.Errorf("%w: the token is bound to pod %s/%s, not to pod %q",
				allocator.ErrPermissionDenied, id.Namespace, id.PodName, truncate(pod, 253))
		}
		if podUID != "" && podUID != id.PodUID {
			return allocator.Result{}, fmt.Errorf("%w: the token is bound to pod %s uid %s, not uid %q",
				allocator.ErrPermissionDenied, id.PodName, id.PodUID, truncate(podUID, 64))
		}
		podUID = id.PodUID
	default:
		return allocator.Result{}, fmt.Errorf("%w: only a validator pod's own token may request its keys", allocator.ErrPermissionDenied)
	}
	return g.Next.Request(ctx, pod, podUID, n)
}

// Release is for admins.
func (g Guard) Release(ctx context.Context, pod, podUID string) (allocator.ReleaseResult, error) {
	if err := requireAdmin(ctx); err != nil {
		return allocator.ReleaseResult{}, err
	}
	return g.Next.Release(ctx, pod, podUID)
}

// ReleaseWithProtection is for admins, like Release.
func (g Guard) ReleaseWithProtection(ctx context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error) {
	if err := requireAdmin(ctx); err != nil {
		return allocator.ReleaseResult{}, err
	}
	return g.Next.ReleaseWithProtection(ctx, pod, podUID, prot)
}

// Retire is for admins.
func (g Guard) Retire(ctx context.Context, pubkey store.Pubkey, reason string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	return g.Next.Retire(ctx, pubkey, reason)
}

func requireAdmin(ctx context.Context) error {
	if c := CallerFrom(ctx); c == nil || c.Kind != KindAdmin {
		return fmt.Errorf("%w: an admin caller is required", allocator.ErrPermissionDenied)
	}
	return nil
}
