package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

// The store lock tells tools that need a store to themselves (migrate-store's
// source and target, restore's target) whether pkmanager processes use it,
// by something every such process holds rather than by a name it may set
// differently (application_name): a PostgreSQL session advisory lock on 64
// bits of SHA-256 of "pkmanager store" and the schema (installations in one
// database stay apart).
//
//   - Every server, and every import into the store, holds it shared
//     (pg_try_advisory_lock_shared) on a dedicated connection from Open to
//     Close, before any schema migration. When that session is lost the
//     store reconnects and takes it again; Ping fails meanwhile
//     (ErrLockLost), and LockTaken is closed if a tool took the store in
//     between.
//   - Every transaction of such a store also takes it shared for the
//     transaction (pg_advisory_xact_lock_shared, sent with BEGIN): a write
//     never lands while a tool holds the store, even from a process whose
//     session lock was lost without it noticing yet; it waits until the
//     tool is done (or its context ends).
//   - A tool takes it exclusively (pg_try_advisory_lock) at Open, before
//     anything else, and holds it until Close; Open fails, saying how many
//     pkmanager processes hold it, when it cannot.
//
// For operators: pg_locks shows it as locktype advisory, classid = high 32
// bits, objid = low 32 bits of the key, objsubid 1; servers in mode
// ShareLock, a tool in ExclusiveLock.

// LockMode says how a store holds the store lock (Options.Lock).
type LockMode int

const (
	// LockNone: no store lock (backup, which reads one consistent
	// snapshot while servers run).
	LockNone LockMode = iota
	// LockShared: servers and imports.
	LockShared
	// LockExclusive: tools that need every server stopped.
	LockExclusive
)

// ErrLockLost is the error of Ping while a store opened with LockShared
// has lost its store lock session and not taken it again yet (the
// optional interface store.SessionLock's error).
var ErrLockLost = store.ErrLockLost

const (
	// lockPingInterval is how often the store lock session is checked, and
	// lockRetryDelay how long a lost one waits before it reconnects.
	lockPingInterval = 500 * time.Millisecond
	lockPingTimeout  = 2 * time.Second
	lockRetryDelay   = time.Second
)

// storeLock is the store lock of an open Store.
type storeLock struct {
	mode LockMode
	key  int64
	// begin is the BEGIN statement of transactions (LockShared: with the
	// transaction's shared lock).
	begin string

	lost      atomic.Pointer[error] // nil while held (LockShared)
	taken     chan struct{}         // closed: a tool took the store while lost
	takenOnce sync.Once
	stop      context.CancelFunc
	done      chan struct{}
}

// storeLockKey is the key of the store lock of schema.
func storeLockKey(schema string) int64 { return lockKey("pkmanager store", schema) }

// lockSchema reads the schema that namespaces the store lock on conn:
// current_schema(), "" when none exists yet.
func lockSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	var schema *string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return "", err
	}
	if schema == nil {
		return "", nil
	}
	return *schema, nil
}

// connectLock opens a dedicated connection for the store lock.
func (s *Store) connectLock(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, s.connCfg.Copy())
}

// closeLockConn ends the session. It first gives its locks up and waits for
// the answer: a closed socket alone frees them only once the server's backend
// has noticed it and exited, so a tool started right after a server stopped
// could still find the store locked (seen once in CI under load). A session
// that is gone (the statement fails within a second) freed its locks anyway.
func closeLockConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, "SELECT pg_advisory_unlock_all()")
	_ = conn.PgConn().Conn().Close()
	_ = conn.Close(ctx)
}

// takeLock takes the store lock in mode before anything else of Open; with
// LockShared it then keeps it until Close.
func (s *Store) takeLock(ctx context.Context, mode LockMode) error {
	s.lock = &storeLock{mode: mode, taken: make(chan struct{})}
	if mode == LockNone {
		return nil
	}
	conn, err := s.connectLock(ctx)
	if err != nil {
		return fmt.Errorf("store %s: connect for the store lock: %w", s.where, wrapCtx(ctx, err))
	}
	schema, err := lockSchema(ctx, conn)
	if err != nil {
		closeLockConn(conn)
		return fmt.Errorf("store %s: %w", s.where, wrapCtx(ctx, err))
	}
	l := s.lock
	l.key = storeLockKey(schema)
	q := `SELECT pg_try_advisory_lock_shared($1)`
	if mode == LockExclusive {
		q = `SELECT pg_try_advisory_lock($1)`
	}
	var ok bool
	if err := conn.QueryRow(ctx, q, l.key).Scan(&ok); err != nil {
		closeLockConn(conn)
		return fmt.Errorf("store %s: take the store lock: %w", s.where, wrapCtx(ctx, err))
	}
	if !ok {
		err := s.lockHolders(ctx, conn, l.key, mode)
		closeLockConn(conn)
		return err
	}
	lctx, stop := context.WithCancel(context.Background())
	l.stop, l.done = stop, make(chan struct{})
	if mode == LockShared {
		l.begin = fmt.Sprintf("BEGIN; SELECT pg_advisory_xact_lock_shared(%d)", l.key)
	}
	go func() {
		defer close(l.done)
		s.holdLock(lctx, conn)
	}()
	return nil
}

// lockHolders explains why the store lock could not be taken in mode.
func (s *Store) lockHolders(ctx context.Context, conn *pgx.Conn, key int64, mode LockMode) error {
	var shared, exclusive int
	err := conn.QueryRow(ctx, `SELECT count(DISTINCT pid) FILTER (WHERE mode = 'ShareLock'),
			count(DISTINCT pid) FILTER (WHERE mode = 'ExclusiveLock')
		FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid = $1 AND objid = $2`,
		uint32(uint64(key)>>32), uint32(uint64(key))).Scan(&shared, &exclusive)
	if err != nil {
		return fmt.Errorf("store %s is in use by pkmanager processes (the store lock is held; listing its holders failed: %v): %w", s.where, wrapCtx(ctx, err), store.ErrLocked)
	}
	switch {
	case exclusive > 0:
		return fmt.Errorf("store %s is in use by a pkmanager tool that needs it to itself (migrate-store or restore): wait until it has finished: %w", s.where, store.ErrLocked)
	case mode == LockExclusive && shared > 0:
		return fmt.Errorf("%d pkmanager servers are running on %s (or imports into it): stop them first: %w", shared, s.where, store.ErrLocked)
	default:
		// A server's transaction or session that ended meanwhile.
		return fmt.Errorf("store %s is in use by pkmanager processes (servers, or a tool): stop the servers first, or try again: %w", s.where, store.ErrLocked)
	}
}

// holdLock keeps the lock's session alive until ctx ends; with LockShared it
// reconnects and takes the lock again when the session is lost.
func (s *Store) holdLock(ctx context.Context, conn *pgx.Conn) {
	l := s.lock
	defer func() {
		if conn != nil {
			closeLockConn(conn)
		}
	}()
	t := time.NewTicker(lockPingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn != nil {
			pctx, cancel := context.WithTimeout(ctx, lockPingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				continue
			}
			closeLockConn(conn)
			conn = nil
			lost := fmt.Errorf("%w: %v", ErrLockLost, redact.Error(err))
			l.lost.Store(&lost)
			if l.mode != LockShared {
				// A tool's exclusive session is not taken again: a
				// server may have started meanwhile. Its transactions
				// fail from now on, and CheckLock reports it.
				s.log.Error("store lock session lost", slog.String("store", s.where), slog.Any("error", redact.Error(err)))
				return
			}
			s.log.Warn("store lock session lost; reconnecting", slog.String("store", s.where), slog.Any("error", redact.Error(err)))
		}
		if !sleepCtx(ctx, lockRetryDelay) {
			return
		}
		conn = s.retakeLock(ctx)
	}
}

// retakeLock connects and takes the shared lock again; nil when it could
// not (it is tried again later).
func (s *Store) retakeLock(ctx context.Context) *pgx.Conn {
	l := s.lock
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := s.connectLock(cctx)
	if err != nil {
		return nil
	}
	var ok bool
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock_shared($1)`, l.key).Scan(&ok); err != nil || !ok {
		closeLockConn(conn)
		if err == nil {
			l.takenOnce.Do(func() {
				s.log.Error("a pkmanager tool (migrate-store or restore) took the store while this process had lost its store lock",
					slog.String("store", s.where))
				close(l.taken)
			})
		}
		return nil
	}
	l.lost.Store(nil)
	s.log.Info("store lock taken again", slog.String("store", s.where))
	return conn
}

// CheckLock fails (ErrLockLost) when the store lock of this store is not
// held: a LockShared store that lost its session and has not taken the lock
// again, a LockExclusive one that lost it at any time since Open (a tool
// checks it when it is done: what it did may have raced a server).
func (s *Store) CheckLock() error { return s.lockErr() }

// lockErr is ErrLockLost (wrapped) while the store lock is lost, else nil.
func (s *Store) lockErr() error {
	if p := s.lock.lost.Load(); p != nil {
		return fmt.Errorf("store %s: %w", s.where, *p)
	}
	return nil
}

// LockTaken is closed when a pkmanager tool took the store exclusively
// while this process (LockShared) had lost its store lock: the tool
// believes no server runs, so a server must stop.
func (s *Store) LockTaken() <-chan struct{} { return s.lock.taken }

// closeLock gives the store lock up.
func (s *Store) closeLock() {
	if s.lock != nil && s.lock.stop != nil {
		s.lock.stop()
		<-s.lock.done
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
