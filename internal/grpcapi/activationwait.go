package grpcapi

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
)

// activationWaits holds, by pod, what the requests served here that wait
// for activation last reported (allocator.WithWaitReporter). The zero
// value is ready to use.
type activationWaits struct {
	mu sync.Mutex
	m  map[string]*waitEntry
}

// waitEntry is one request's report; a request clears only its own.
type waitEntry struct{ w *allocator.ActivationWait }

// track returns ctx with a reporter that records the pod's wait.
func (ws *activationWaits) track(ctx context.Context, pod string) context.Context {
	e := &waitEntry{}
	return allocator.WithWaitReporter(ctx, func(w *allocator.ActivationWait) {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		if w == nil {
			if ws.m[pod] == e {
				delete(ws.m, pod)
			}
			return
		}
		if ws.m == nil {
			ws.m = make(map[string]*waitEntry)
		}
		e.w = w
		ws.m[pod] = e
	})
}

// get returns the pod's latest wait, or nil.
func (ws *activationWaits) get(pod string) *pkmanagerv1.ActivationWait {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	e := ws.m[pod]
	if e == nil {
		return nil
	}
	w := e.w
	return &pkmanagerv1.ActivationWait{Want: uint32(w.Want), Active: uint32(w.Active), Inactive: uint32(w.Inactive),
		Lack: uint32(w.Lack), Activating: uint32(w.Activating), Available: uint32(w.Available),
		Since: timestamppb.New(w.Since), Message: w.Message}
}

// sendWaitHeader sends the pod's wait, if a request of it waits, as the
// stream's header pkmanagerv1.ActivationWaitHeader (before any key): a
// request's progress also while the pod holds no keys.
func (ws *activationWaits) sendWaitHeader(stream grpc.ServerStream, pod string) error {
	w := ws.get(pod)
	if w == nil {
		return nil
	}
	b, err := proto.Marshal(w)
	if err != nil {
		return err
	}
	return stream.SendHeader(metadata.Pairs(pkmanagerv1.ActivationWaitHeader, string(b)))
}
