package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// UIDConflict is what a request does when the pod name's keys are still held
// under another pod UID (a StatefulSet pod recreated under the same name
// while its predecessor's keys are not released yet).
type UIDConflict string

// UID-conflict policies.
const (
	// UIDConflictFail answers ErrPodUIDMismatch at once (the client fails
	// clearly; an init container is restarted by the kubelet with backoff).
	UIDConflictFail UIDConflict = "fail"
	// UIDConflictWait keeps the request waiting until the predecessor's keys
	// are released (by the pod watcher's rules) or the request's deadline
	// ends, then answers as Fail would.
	UIDConflictWait UIDConflict = "wait"
)

// ParseUIDConflict reads "fail" or "wait".
func ParseUIDConflict(s string) (UIDConflict, error) {
	switch p := UIDConflict(s); p {
	case UIDConflictFail, UIDConflictWait:
		return p, nil
	}
	return "", fmt.Errorf("uid conflict policy %q: use wait or fail", s)
}

// Requester is the request half of an Allocator.
type Requester interface {
	Request(ctx context.Context, pod, podUID string, n int) (Result, error)
}

// UIDWaiter applies UIDConflictWait in front of a Requester: a request with
// a pod UID whose pod name is held under another UID is retried every Poll
// until it succeeds, fails otherwise, or ctx ends. It never hands out the
// predecessor's keys: the store refuses them until they are released.
type UIDWaiter struct {
	Next   Requester
	Poll   time.Duration // default 1 s
	Logger *slog.Logger
}

// Request asks Next, waiting out UID conflicts.
func (w UIDWaiter) Request(ctx context.Context, pod, podUID string, n int) (Result, error) {
	poll := w.Poll
	if poll <= 0 {
		poll = time.Second
	}
	start := time.Now()
	logged := false
	for {
		res, err := w.Next.Request(ctx, pod, podUID, n)
		if err == nil || podUID == "" || !errors.Is(err, ErrPodUIDMismatch) {
			return res, err
		}
		if !logged && w.Logger != nil {
			w.Logger.InfoContext(ctx, "request waits: the pod name's keys are still held by a previous pod UID",
				slog.String("pod", pod), slog.String("pod_uid", podUID))
			logged = true
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, fmt.Errorf("waited %s for the previous pod's keys to be released: %w",
				time.Since(start).Round(time.Millisecond), err)
		case <-t.C:
		}
	}
}
