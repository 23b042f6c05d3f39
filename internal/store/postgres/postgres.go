// Package postgres is the store backend for several server replicas: one
// PostgreSQL database shared by all of them.
//
// Safety does not depend on there being one process: the database itself
// makes a double assignment impossible.
//
//   - A key is one row of pkm_keys, so it has at most one holder (its pod
//     column). The pair (pod, pod_uid) is a foreign key into pkm_pods, so
//     every key of a pod carries the pod's one UID.
//   - Every transaction that changes a pod's set first locks the pod's row in
//     pkm_pods (SELECT ... FOR UPDATE), so changes to one pod are serialized
//     across replicas, and later statements of the transaction (READ
//     COMMITTED) see everything committed before the lock was granted.
//   - Pool keys are taken with SELECT ... FOR UPDATE SKIP LOCKED and updated
//     only while they are still in the pool state the statement selected, so
//     two transactions never take the same key; claims for different pods do
//     not wait for each other's pod. Claimable keys another transaction
//     holds locked are never counted out: the claim waits for them (briefly
//     in the database, then by claiming again until its ctx ends), so it
//     reports a shortfall, or reserves keys to mint, only when the pool
//     really lacks them.
//   - A pod's mint reservation (see store.Store.Claim) is part of its row in
//     pkm_pods, changed only under the row's lock: duplicate requests of
//     one pod on different replicas mint its shortfall once, and no lock is
//     held across a request.
//   - Transactions that fail with a serialization failure or a deadlock, or
//     whose connection broke before anything was sent, are retried.
//
// The times of calls (Claim's Now, Release's Until, ...) are the callers',
// and replicas' wall clocks may disagree: Now (store.Clock) is the
// database's clock instead, read at Open and every 30 s and advanced by the
// local monotonic clock in between. Replicas that pass it judge
// cooling-down and reservation expiry alike.
//
// Connection loss mid-transaction leaves nothing behind: PostgreSQL rolls
// the transaction back. The pool reconnects by itself once the database is
// back; Ping (readiness) fails meanwhile.
//
// Secrets arrive sealed (encrypted with the KEK by the server) and are
// stored as given: the database never sees a plaintext key.
//
// The schema is created and upgraded by the versioned migrations embedded in
// the binary (migrations/*.sql); Open refuses a database whose schema is
// newer than this build knows.
//
// The methods hold only their transactions: the checks of every call (a
// done ctx, invalid arguments) are store.Front's, which storeurl.Open puts
// in front of the store.
package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pkmanager/pkmanager/internal/ownership"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Defaults for connections (each can be overridden in the URL: pool_max_conns,
// connect_timeout, ...).
const (
	defaultMaxConns      = 10
	defaultConnectTimout = 5 * time.Second
	// maxAttempts bounds retries of a transaction that failed with a
	// serialization failure, a deadlock or a broken idle connection.
	maxAttempts = 5
)

// Options configure Open.
type Options struct {
	// Logger receives notices (schema migrations). Nil means slog.Default().
	Logger *slog.Logger
	// MaxConns bounds the connections for store transactions; 0 means the
	// URL's pool_max_conns, else 10.
	MaxConns int32
	// Ownership tunes the ownership runner (see Ownership), which keeps one
	// dedicated connection per role a replica competes for. Zero values
	// mean the defaults of package ownership.
	Ownership ownership.PostgresOptions
	// NoMigrate makes Open fail when the schema is not this build's,
	// instead of creating or upgrading it (for tools that must not change
	// a database that running servers use, such as backup).
	NoMigrate bool
	// ApplicationName names the connections in pg_stat_activity; ""
	// means "pkmanager" (servers), or the URL's application_name. It is
	// for operators only: whether servers run is told by the store lock
	// (Lock).
	ApplicationName string
	// Lock is how the store holds the store lock (storelock.go): servers
	// and imports LockShared, tools that need the servers stopped
	// LockExclusive. The zero value is LockNone.
	Lock LockMode
}

// ServerApplicationName is the application_name of a server's connections.
const ServerApplicationName = "pkmanager"

// Store is a store.Store kept in a PostgreSQL database.
type Store struct {
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig
	schema  string // current_schema() of the connections: namespaces advisory locks
	where   string // the database, for messages (never the password)
	log     *slog.Logger
	opts    Options
	lock    *storeLock // the store lock (storelock.go)

	// The database's clock (see Now): the last reading, and whether it
	// was logged as far off the local clock.
	localNow  func() time.Time
	clock     atomic.Pointer[clockSync]
	clockOff  atomic.Bool
	stopClock context.CancelFunc
	clockDone chan struct{}
}

var _ store.Store = (*Store)(nil)

// IsURL reports whether raw names a PostgreSQL database (postgres:// or
// postgresql://).
func IsURL(raw string) bool {
	return strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://")
}

// Open connects to the database at rawURL (postgres://user@host:port/db?...),
// creates or upgrades the schema, and returns the store. The password may be
// in the URL, in PGPASSWORD or in a .pgpass file; errors never contain it.
// It fails with store.ErrUnsupportedSchema when the database's schema is
// newer than this build knows. The store follows the database's clock (see
// Now) until Close.
func Open(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	return open(ctx, rawURL, opts, time.Now)
}

// open is Open with the local clock localNow (tests play a replica whose
// wall clock is off).
func open(ctx context.Context, rawURL string, opts Options, localNow func() time.Time) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Every password and key of the URL, and the password pgx found for
	// it (in the URL, PGPASSWORD or a passfile), is kept out of every
	// message (package redact).
	redact.Remember(rawURL)
	where := redact.URL(rawURL)
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		// The parse error may quote the URL; say what is wrong without it.
		return nil, fmt.Errorf("store %s: not a valid PostgreSQL connection URL", where)
	}
	redact.Secret(cfg.ConnConfig.Password)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimout
	}
	rp := cfg.ConnConfig.RuntimeParams
	// Servers name their sessions "pkmanager" (with the search_path when
	// the URL sets one, so installations in one database stay apart).
	serverApp := ServerApplicationName
	if sp := rp["search_path"]; sp != "" {
		serverApp += " " + sp
	}
	if opts.ApplicationName != "" {
		rp["application_name"] = opts.ApplicationName
	} else if _, ok := rp["application_name"]; !ok {
		rp["application_name"] = serverApp
	}
	// The server notices a vanished client within about 25 s, so the
	// ownership locks of a dead replica are freed.
	for k, v := range map[string]string{"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"} {
		if _, ok := rp[k]; !ok {
			rp[k] = v
		}
	}
	cfg.ConnConfig.DialFunc = (&net.Dialer{KeepAlive: 10 * time.Second, Timeout: cfg.ConnConfig.ConnectTimeout}).DialContext
	if !strings.Contains(rawURL, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.HealthCheckPeriod = 10 * time.Second

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", where, redact.Error(err))
	}
	s := &Store{pool: pool, connCfg: cfg.ConnConfig.Copy(), where: where, log: opts.Logger, opts: opts, localNow: localNow}
	// The store lock comes first: no schema change while a tool holds the
	// store, no tool while a server may change it.
	if err := s.takeLock(ctx, opts.Lock); err != nil {
		pool.Close()
		return nil, err
	}
	fail := func(err error) (*Store, error) {
		pool.Close()
		s.closeLock()
		return nil, err
	}
	migrate := s.migrate
	if opts.NoMigrate {
		migrate = s.checkSchema
	}
	if err := migrate(ctx); err != nil {
		return fail(err)
	}
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&s.schema); err != nil {
		return fail(fmt.Errorf("store %s: %w", where, wrapCtx(ctx, err)))
	}
	if err := s.syncClock(ctx); err != nil {
		return fail(fmt.Errorf("store %s: %w", where, err))
	}
	clockCtx, stop := context.WithCancel(context.Background())
	s.stopClock, s.clockDone = stop, make(chan struct{})
	go func() {
		defer close(s.clockDone)
		s.followClock(clockCtx)
	}()
	return s, nil
}

// Where returns the database the store was opened on, without password.
func (s *Store) Where() string { return s.where }

// Close stops following the database's clock, closes every connection and
// gives the store lock up.
func (s *Store) Close() error {
	s.stopClock()
	<-s.clockDone
	s.pool.Close()
	s.closeLock()
	return nil
}

// Ownership returns the runner of work that must have one owner among the
// replicas: a PostgreSQL session advisory lock per role on a dedicated
// connection (see package ownership).
func (s *Store) Ownership() ownership.Runner {
	o := s.opts.Ownership
	if o.Logger == nil {
		o.Logger = s.log
	}
	cfg := s.connCfg.Copy()
	return ownership.NewPostgres(func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.ConnectConfig(ctx, cfg.Copy())
	}, "pkmanager ownership\x00"+s.schema, o)
}

// Ping checks that the database answers, that its schema is one this
// build knows (a replica of an older build reports not-ready once a newer
// one has upgraded the schema), and that the store lock is held
// (ErrLockLost while a lost session is being taken again).
func (s *Store) Ping(ctx context.Context) error {
	var v int
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pkm_schema_migrations").Scan(&v); err != nil {
		return fmt.Errorf("ping store %s: %w", s.where, wrapCtx(ctx, err))
	}
	if v > latestVersion() {
		return fmt.Errorf("store %s has schema version %d, this pkmanager knows up to %d: %w", s.where, v, latestVersion(), store.ErrUnsupportedSchema)
	}
	// The database answers, but this process may have lost its store lock
	// (storelock.go).
	return s.lockErr()
}

// retryable reports whether a failed transaction attempt may be repeated.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		case "23505":
			// Two transactions created the same pod row at once: the
			// upsert's arbiter is the primary key, so the (name, uid)
			// index may report the race. The retry finds the row.
			return pgErr.ConstraintName == "pkm_pods_name_uid_key"
		}
		return false
	}
	return pgconn.SafeToRetry(err)
}

// tx runs fn in a READ COMMITTED transaction and commits it, retrying on a
// serialization failure, a deadlock, or a connection that broke before the
// transaction sent anything. fn returns commit = false to roll back instead
// (a call that changed nothing). fn must set its results afresh on every
// attempt.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) (commit bool, err error)) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = s.txOnce(ctx, fn)
		if err == nil || !retryable(err) || attempt == maxAttempts || ctx.Err() != nil {
			return err
		}
		s.log.Debug("store transaction retried", slog.Int("attempt", attempt), slog.Any("error", redact.Error(err)))
		time.Sleep(time.Duration(attempt) * 2 * time.Millisecond)
	}
}

func (s *Store) txOnce(ctx context.Context, fn func(pgx.Tx) (bool, error)) error {
	if s.lock.mode == LockExclusive {
		// A tool whose exclusive session was lost no longer has the
		// store to itself.
		if err := s.lockErr(); err != nil {
			return err
		}
	}
	// BEGIN takes the store lock shared for the transaction (LockShared):
	// it waits while a tool holds the store.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: s.lock.begin})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	commit, err := fn(tx)
	if err != nil {
		return err
	}
	if !commit {
		return tx.Rollback(ctx)
	}
	return tx.Commit(ctx)
}

// isDataError reports whether err is PostgreSQL refusing data: a broken
// constraint (class 23) or a value out of range (class 22).
func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "23") || strings.HasPrefix(pgErr.Code, "22"))
}

// wrapCtx makes sure an error caused by ctx wraps ctx.Err(), and that its
// message holds no secret of the connection (pgx's errors may quote the
// connection settings): every error of a database call leaves the store
// through it.
func wrapCtx(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	err = redact.Error(err)
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// lockKey turns a name into an advisory lock key (64 bits of SHA-256).
func lockKey(parts ...string) int64 {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int64(binary.BigEndian.Uint64(h.Sum(nil)[:8]))
}

// micros truncates t to the precision the store keeps, in UTC.
func micros(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// optTime maps the zero Time to NULL.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	m := micros(t)
	return &m
}
