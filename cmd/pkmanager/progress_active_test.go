package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

type fixedLister []*pb.KeyInfo

func (l fixedLister) ListKeys(context.Context, *pb.ListKeysRequest) ([]*pb.KeyInfo, error) {
	return l, nil
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
