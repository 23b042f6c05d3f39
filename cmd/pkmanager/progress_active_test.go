package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

type fixedLister []*pb.KeyInfo

func (l fixedLister) PodKeys(context.Context, string) ([]*pb.KeyInfo, *pb.ActivationWait, error) {
	return l, nil, nil
}

// waitingLister is a pod with no keys whose request waits for activation.
type waitingLister struct{ w *pb.ActivationWait }

func (l waitingLister) PodKeys(context.Context, string) ([]*pb.KeyInfo, *pb.ActivationWait, error) {
	return nil, l.w, nil
}

// Once a pod's deposits are done and its keys wait for activation
// (--require-active), the progress line says how many are active.
func TestActivationProgressLine(t *testing.T) {
	var buf bytes.Buffer
	keys := fixedLister{
		{State: "assigned", ValidatorStatus: "active_ongoing"},
		{State: "assigned", ValidatorStatus: "pending_queued"},
		{State: "assigned"}, // not seen by the beacon node yet
	}
	p := &progress{c: keys, pod: "p-0", want: 3, interval: 5 * time.Millisecond,
		logger: slog.New(slog.NewTextHandler(&buf, nil)), stopCh: make(chan struct{}), done: make(chan struct{})}
	go p.run(context.Background())
	time.Sleep(60 * time.Millisecond)
	p.stop()
	if want := "pod p-0: waiting for activation: 1 of 3 keys active, 2 waiting for activation"; !strings.Contains(buf.String(), want) {
		t.Errorf("progress log %q, want %q", buf.String(), want)
	}
	// A server without statuses (no beacon node) shows none.
	buf.Reset()
	p = &progress{c: fixedLister{{State: "assigned"}}, pod: "p-1", want: 2, interval: 5 * time.Millisecond,
		logger: slog.New(slog.NewTextHandler(&buf, nil)), stopCh: make(chan struct{}), done: make(chan struct{})}
	go p.run(context.Background())
	time.Sleep(30 * time.Millisecond)
	p.stop()
	if buf.Len() != 0 {
		t.Errorf("progress without statuses: %q", buf.String())
	}
}

// While the pod holds no keys yet and its request waits for pool keys to
// activate, the line comes from the server's account of the wait.
func TestActivationProgressLineEmptyPod(t *testing.T) {
	var buf bytes.Buffer
	w := &pb.ActivationWait{Want: 2, Lack: 2, Activating: 2, Since: timestamppb.New(time.Now().Add(-time.Minute)),
		Message: "pod p-2 holds 0 of 2 keys active; it lacks 2: ..."}
	p := &progress{c: waitingLister{w}, pod: "p-2", want: 2, interval: 5 * time.Millisecond,
		logger: slog.New(slog.NewTextHandler(&buf, nil)), stopCh: make(chan struct{}), done: make(chan struct{})}
	go p.run(context.Background())
	time.Sleep(60 * time.Millisecond)
	p.stop()
	want := "pod p-2: waiting for activation: 0 of 2 keys active, 2 pool keys activating (server: pod p-2 holds 0 of 2 keys active; it lacks 2: ...) (1m0s)"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("progress log %q, want %q", buf.String(), want)
	}
}
