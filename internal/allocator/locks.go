package allocator

import (
	"context"
	"sync"
)

// localLocks serializes the requests of a pod within one process: one mutex per pod name, created on
// demand and dropped when nobody holds or waits for it.
type localLocks struct {
	mu    sync.Mutex
	locks map[string]*podLock
}

type podLock struct {
	ch   chan struct{} // holds one token while locked
	refs int           // holders + waiters
}

func newLocalLocks() *localLocks {
	return &localLocks{locks: make(map[string]*podLock)}
}

// Lock waits for the pod's lock or for ctx to end.
func (l *localLocks) Lock(ctx context.Context, pod string) (func(), error) {
	l.mu.Lock()
	pl := l.locks[pod]
	if pl == nil {
		pl = &podLock{ch: make(chan struct{}, 1)}
		l.locks[pod] = pl
	}
	pl.refs++
	l.mu.Unlock()

	select {
	case pl.ch <- struct{}{}:
		var once sync.Once
		return func() {
			once.Do(func() {
				<-pl.ch
				l.drop(pod, pl)
			})
		}, nil
	case <-ctx.Done():
		l.drop(pod, pl)
		return nil, ctx.Err()
	}
}

func (l *localLocks) drop(pod string, pl *podLock) {
	l.mu.Lock()
	pl.refs--
	if pl.refs == 0 {
		delete(l.locks, pod)
	}
	l.mu.Unlock()
}
