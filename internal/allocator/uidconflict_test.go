package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
)

type scripted struct {
	calls int
	errs  []error
}

func (s *scripted) Request(context.Context, string, string, int) (allocator.Result, error) {
	s.calls++
	if len(s.errs) == 0 {
		return allocator.Result{Minted: 1}, nil
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return allocator.Result{}, err
}

func TestUIDWaiter(t *testing.T) {
	mismatch := fmt.Errorf("claim: %w", allocator.ErrPodUIDMismatch)
	ctx := context.Background()

	s := &scripted{errs: []error{mismatch, mismatch}}
	res, err := allocator.UIDWaiter{Next: s, Poll: time.Millisecond}.Request(ctx, "p", "uid", 1)
	if err != nil || res.Minted != 1 || s.calls != 3 {
		t.Fatalf("waited request: %+v %v after %d calls", res, err, s.calls)
	}
	// Without a UID there is nothing to wait for; other errors are returned at once.
	s = &scripted{errs: []error{mismatch}}
	if _, err := (allocator.UIDWaiter{Next: s, Poll: time.Millisecond}).Request(ctx, "p", "", 1); !errors.Is(err, allocator.ErrPodUIDMismatch) || s.calls != 1 {
		t.Fatalf("no uid: %v after %d calls", err, s.calls)
	}
	s = &scripted{errs: []error{allocator.ErrPoolExhausted}}
	if _, err := (allocator.UIDWaiter{Next: s, Poll: time.Millisecond}).Request(ctx, "p", "u", 1); !errors.Is(err, allocator.ErrPoolExhausted) || s.calls != 1 {
		t.Fatalf("other error: %v after %d calls", err, s.calls)
	}
	// The deadline ends the wait with the conflict, not a bare timeout.
	s = &scripted{errs: []error{mismatch, mismatch, mismatch, mismatch, mismatch, mismatch, mismatch, mismatch}}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := (allocator.UIDWaiter{Next: s, Poll: 10 * time.Millisecond}).Request(dctx, "p", "u", 1); !errors.Is(err, allocator.ErrPodUIDMismatch) {
		t.Fatalf("deadline: %v", err)
	}
	for _, in := range []string{"wait", "fail"} {
		if p, err := allocator.ParseUIDConflict(in); err != nil || string(p) != in {
			t.Errorf("ParseUIDConflict(%q) = %q, %v", in, p, err)
		}
	}
	if _, err := allocator.ParseUIDConflict("retry"); err == nil {
		t.Error("unknown policy accepted")
	}
}
