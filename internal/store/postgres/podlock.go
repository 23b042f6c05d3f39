package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PodLocks serializes the requests of one pod across every replica that
// shares the database (an allocator.PodLocker), so duplicate requests that
// reach different replicas mint a pod's shortfall once.
//
// A lock is a PostgreSQL session advisory lock (64 bits of SHA-256 of the
// schema and pod name). Each replica holds its pod locks on a few dedicated
// sessions (the pod's hash picks one), taken with pg_try_advisory_lock and
// retried with a short backoff while another replica holds the pod: a
// waiting request holds no connection, so requests that wait long (for
// deposits) do not use up connections. Requests of one pod within one
// replica queue in process first (a session's advisory locks are
// reentrant, so this also keeps them exclusive). When a session breaks,
// PostgreSQL frees its locks: a replica that dies never blocks a pod.
//
// The locks are for not minting twice; safety does not depend on them (the
// store's transactions keep a key in one pod on their own). A lock lost with
// its session is not reported to its holder.
type PodLocks struct {
	sessions []*lockSession
	ns       string
	local    keyedMutex
}

// lockSession is one dedicated connection holding advisory locks.
type lockSession struct {
	mu      sync.Mutex
	connect func(context.Context) (*pgx.Conn, error)
	conn    *pgx.Conn
	closed  bool
}

// Backoff while another replica holds a pod's lock.
const (
	lockPollMin = 2 * time.Millisecond
	lockPollMax = 50 * time.Millisecond
)

func newPodLocks(connect func(context.Context) (*pgx.Conn, error), sessions int, schema string) *PodLocks {
	l := &PodLocks{ns: schema, local: keyedMutex{m: map[string]*keyedEntry{}}}
	for range sessions {
		l.sessions = append(l.sessions, &lockSession{connect: connect})
	}
	return l
}

// Key returns the advisory lock key of pod (pg_locks shows it as classid =
// high 32 bits, objid = low 32 bits, objsubid = 1).
func (l *PodLocks) Key(pod string) int64 { return lockKey("pkmanager pod", l.ns, pod) }

// unlockTimeout bounds the unlock query; on failure the session is closed,
// which frees its locks as well.
const unlockTimeout = 5 * time.Second

// Lock waits for the pod's lock or for ctx to end.
func (l *PodLocks) Lock(ctx context.Context, pod string) (func(), error) {
	unlockLocal, err := l.local.lock(ctx, pod)
	if err != nil {
		return nil, err
	}
	key := l.Key(pod)
	s := l.sessions[uint64(key)%uint64(len(l.sessions))]
	wait := lockPollMin
	for {
		ok, err := s.query(ctx, `SELECT pg_try_advisory_lock($1)`, key)
		if err == nil && ok {
			break
		}
		if ctx.Err() != nil {
			unlockLocal()
			return nil, fmt.Errorf("pod lock %s: %w", pod, ctx.Err())
		}
		select {
		case <-ctx.Done():
			unlockLocal()
			return nil, fmt.Errorf("pod lock %s: %w", pod, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, lockPollMax)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// The request is answered; the unlock need not delay it. The
			// local lock goes at once: a session's advisory locks are
			// counted, so a next request of this pod on this replica that
			// locks before this unlock runs still holds the pod after it.
			unlockLocal()
			go func() {
				uctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
				defer cancel()
				_, _ = s.query(uctx, `SELECT pg_advisory_unlock($1)`, key)
			}()
		})
	}, nil
}

// query runs a boolean query on the session, (re)connecting it when needed;
// a failed query drops the session (freeing its locks).
func (s *lockSession) query(ctx context.Context, q string, key int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, errors.New("store closed")
	}
	if s.conn == nil || s.conn.IsClosed() {
		c, err := s.connect(ctx)
		if err != nil {
			return false, err
		}
		s.conn = c
	}
	var ok bool
	if err := s.conn.QueryRow(ctx, q, key).Scan(&ok); err != nil {
		_ = s.conn.PgConn().Conn().Close()
		s.conn = nil
		return false, err
	}
	return ok, nil
}

func (l *PodLocks) close() {
	for _, s := range l.sessions {
		s.mu.Lock()
		s.closed = true
		if s.conn != nil {
			_ = s.conn.PgConn().Conn().Close()
			s.conn = nil
		}
		s.mu.Unlock()
	}
}

// keyedMutex is one in-process mutex per name, dropped when unused.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch   chan struct{}
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, name string) (func(), error) {
	k.mu.Lock()
	e := k.m[name]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[name] = e
	}
	e.refs++
	k.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			k.drop(name, e)
		}, nil
	case <-ctx.Done():
		k.drop(name, e)
		return nil, ctx.Err()
	}
}

func (k *keyedMutex) drop(name string, e *keyedEntry) {
	k.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(k.m, name)
	}
	k.mu.Unlock()
}
