package ownership

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults of PostgresOptions.
const (
	DefaultAcquireInterval = 500 * time.Millisecond
	DefaultPingInterval    = 500 * time.Millisecond
	DefaultLease           = 2 * time.Second
	DefaultTakeoverDelay   = 4 * time.Second
)

// PostgresOptions tune a Postgres runner. Zero values mean the defaults.
type PostgresOptions struct {
	Logger *slog.Logger
	// AcquireInterval is how often a replica that does not own a role
	// tries to take it (pg_try_advisory_lock).
	AcquireInterval time.Duration
	// PingInterval is how often the owner checks its session.
	PingInterval time.Duration
	// Lease: the owner cancels fn when no check of its session has
	// succeeded within Lease of being sent.
	Lease time.Duration
	// TakeoverDelay is how long a new owner waits after taking the lock
	// before it starts fn. It must exceed Lease plus the time fn needs to
	// stop once canceled: then a previous owner that lost its session
	// without noticing has stopped before the new one starts.
	TakeoverDelay time.Duration
	RetryDelay    time.Duration
	// OnChange, when set, is called when this process gains (true) or
	// loses (false) a role, e.g. for metrics.
	OnChange func(role string, owner bool)
}

// Postgres is a Runner for replicas that share a PostgreSQL database. Each
// role is a session advisory lock (pg_try_advisory_lock on 64 bits of
// SHA-256 of the namespace and role name) held on a dedicated connection:
//
//   - a replica owns the role while its session holds the lock; PostgreSQL
//     frees the lock when the session ends (process killed, connection
//     closed, backend terminated), and the server's TCP keepalives end the
//     session of a replica that vanished from the network;
//   - the owner checks its session every PingInterval and cancels fn as
//     soon as a check fails, or when none has succeeded for Lease: so fn
//     stops within Lease of the session's last sign of life;
//   - a new owner waits TakeoverDelay (> Lease + fn's stop time) after
//     taking the lock before it starts fn, so the previous owner has
//     stopped even if its session ended without it noticing at once;
//   - the owner waits for fn to return before it unlocks: while fn runs, the
//     lock is held or being given up under the rule above.
type Postgres struct {
	connect func(context.Context) (*pgx.Conn, error)
	ns      string
	o       PostgresOptions
}

// NewPostgres returns a runner whose locks live in the database that connect
// reaches; namespace separates installations (e.g. schemas) sharing one
// database.
func NewPostgres(connect func(context.Context) (*pgx.Conn, error), namespace string, o PostgresOptions) *Postgres {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.AcquireInterval, DefaultAcquireInterval)
	def(&o.PingInterval, DefaultPingInterval)
	def(&o.Lease, DefaultLease)
	def(&o.TakeoverDelay, DefaultTakeoverDelay)
	def(&o.RetryDelay, DefaultRetryDelay)
	if o.TakeoverDelay <= o.Lease {
		o.TakeoverDelay = o.Lease + o.Lease/2
	}
	return &Postgres{connect: connect, ns: namespace, o: o}
}

// LockKey is the advisory lock key of a role (for operators: pg_locks shows
// it as classid = high 32 bits, objid = low 32 bits, objsubid = 1).
func (p *Postgres) LockKey(role string) int64 {
	h := sha256.Sum256([]byte("pkmanager role\x00" + p.ns + "\x00" + role))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

var errLost = errors.New("ownership lost")

// Run runs fn while this process owns the role; see Runner.
func (p *Postgres) Run(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	log := p.o.Logger.With(slog.String("role", name))
	for ctx.Err() == nil {
		err := p.session(ctx, log, name, fn)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("ownership: will try again", slog.Any("error", err), slog.Duration("after", p.o.RetryDelay))
		}
		if !sleep(ctx, p.o.RetryDelay) {
			return nil
		}
	}
	return nil
}

// session competes for the role on one connection and, once owner, runs fn
// until it returns, ownership is lost or ctx ends.
func (p *Postgres) session(ctx context.Context, log *slog.Logger, name string, fn func(context.Context) error) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		// Ends the session, which frees the lock if still held. The socket
		// is closed at once: a graceful close of a broken session could
		// keep it (and the lock) for a long time.
		_ = conn.PgConn().Conn().Close()
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	key := p.LockKey(name)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("try lock: %w", err)
		}
		if ok {
			break
		}
		if !sleep(ctx, p.o.AcquireInterval) {
			return nil
		}
	}
	log.Info("ownership: lock taken; waiting before starting", slog.Duration("takeover_delay", p.o.TakeoverDelay))
	deadline := time.Now().Add(p.o.TakeoverDelay)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if !sleep(ctx, min(left, p.o.PingInterval)) {
			return nil
		}
		if err := p.ping(conn); err != nil {
			return fmt.Errorf("session lost before starting: %w", err)
		}
	}

	log.Info("ownership: this replica owns the role")
	if p.o.OnChange != nil {
		p.o.OnChange(name, true)
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- fn(fnCtx) }()
	err = p.hold(ctx, conn, cancel, done)
	if p.o.OnChange != nil {
		p.o.OnChange(name, false)
	}
	if !errors.Is(err, errLost) {
		// Give the role up cleanly; closing the connection would too.
		uctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key)
		c()
	}
	log.Info("ownership: role given up", slog.Any("reason", err))
	return err
}

// ping checks the session within the lease.
func (p *Postgres) ping(conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.o.Lease)
	defer cancel()
	return conn.Ping(ctx)
}

// hold keeps checking the session while fn runs. It returns once fn has
// returned: nil when ctx ended, fn's error (or a note that it returned)
// when fn stopped on its own, errLost when the session failed or went
// unconfirmed for a lease (fn's context is canceled first).
func (p *Postgres) hold(ctx context.Context, conn *pgx.Conn, cancel context.CancelCauseFunc, done <-chan error) error {
	lastOK := time.Now()
	tick := time.NewTicker(p.o.PingInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("owned work returned")
			}
			return err
		case <-ctx.Done():
			cancel(ctx.Err())
			<-done
			return nil
		case <-tick.C:
		}
		sent := time.Now()
		pctx, pcancel := context.WithDeadline(context.Background(), lastOK.Add(p.o.Lease+time.Second))
		res := make(chan error, 1)
		go func() { res <- conn.Ping(pctx) }()
		lease := time.NewTimer(time.Until(lastOK.Add(p.o.Lease)))
		var lost error
		pending := true // the check is still running on conn
		select {
		case err := <-res:
			pending = false
			if err != nil {
				lost = fmt.Errorf("%w: session check failed: %v", errLost, err)
			} else {
				lastOK = sent
			}
		case <-lease.C:
			lost = fmt.Errorf("%w: no session check succeeded for %s", errLost, p.o.Lease)
		}
		lease.Stop()
		if lost != nil {
			cancel(lost) // fn stops first ...
			<-done
			pcancel() // ... then the connection may go
			if pending {
				<-res
			}
			return lost
		}
		pcancel()
	}
}
