package leader

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

type fakeLock struct {
	resourcelock.Interface
	id   string
	fail bool
}

func (l *fakeLock) Identity() string { return l.id }
func (l *fakeLock) Update(context.Context, resourcelock.LeaderElectionRecord) error {
	if l.fail {
		return errors.New("unreachable")
	}
	return nil
}

// TestIsLeader: leadership lasts RenewDeadline from the start of the last
// successful renewal, and ends before a release is sent. The Lease itself is
// exercised against a real API server in test/k8s.
func TestIsLeader(t *testing.T) {
	now := time.Unix(1000, 0)
	e, err := New(Config{Client: fake.NewClientset(), Namespace: "ns", Name: "l", Identity: "me", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLock{id: "me"}
	e.lock.Interface = fl
	ctx := context.Background()
	if e.IsLeader() {
		t.Fatal("leader before anything happened")
	}
	if err := e.lock.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"}); err != nil {
		t.Fatal(err)
	}
	if e.IsLeader() {
		t.Fatal("leader before OnStartedLeading")
	}
	e.setLeading(true)
	if !e.IsLeader() {
		t.Fatal("not leader after a renewal")
	}
	now = now.Add(DefaultRenewDeadline - time.Millisecond)
	if !e.IsLeader() {
		t.Fatal("not leader just within the renew deadline")
	}
	fl.fail = true
	e.lock.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"})
	now = now.Add(time.Millisecond)
	if e.IsLeader() {
		t.Fatal("still leader at the renew deadline after failed renewals")
	}
	fl.fail = false
	e.lock.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"})
	if !e.IsLeader() {
		t.Fatal("not leader after a successful renewal")
	}
	fl.fail = true // the release itself fails: leadership is gone anyway
	e.lock.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: ""})
	if e.IsLeader() {
		t.Fatal("leader while giving the lease up")
	}
	if _, err := New(Config{Client: fake.NewClientset(), Namespace: "ns", Name: "l", Identity: "me",
		LeaseDuration: 10 * time.Second, RenewDeadline: 10 * time.Second}); err == nil {
		t.Fatal("renew deadline equal to the lease duration accepted")
	}
}

// TestRunOwnedWork: Run starts fn only while leader and cancels its context
// as soon as leadership lapses (the deposit sender runs this way).
func TestRunOwnedWork(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, err := New(Config{Client: fake.NewClientset(), Namespace: "ns", Name: "l", Identity: "me", Now: clock, RetryPeriod: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.lock.Interface = &fakeLock{id: "me"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started, stopped := make(chan struct{}, 4), make(chan struct{}, 4)
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, "test", func(ctx context.Context) error {
			started <- struct{}{}
			<-ctx.Done()
			stopped <- struct{}{}
			return ctx.Err()
		})
	}()
	select {
	case <-started:
		t.Fatal("owned work started without leadership")
	case <-time.After(300 * time.Millisecond):
	}
	e.lock.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"})
	e.setLeading(true)
	select {
	case <-started:
	case <-time.After(2 * time.Second):
		t.Fatal("owned work not started as leader")
	}
	mu.Lock()
	now = now.Add(DefaultRenewDeadline) // no renewal within the deadline
	mu.Unlock()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("owned work not stopped when leadership lapsed")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
