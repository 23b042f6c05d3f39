// Package bolt is the embedded store backend: one bbolt file on local disk.
//
// Every method that changes state is one bbolt read-write transaction.
// Claim, AddAssigned, AddPending, SetDepositTx, ConfirmDeposit and Release
// go through the store's group commit (groupcommit.go): concurrent requests
// share one commit, a lone request commits at once. Dump is one read-only transaction, Load one read-write
// transaction.
//
// Buckets (all keys and values binary, see record.go):
//
//	meta      "schema" -> uint32 schema version; "counts" -> one uint64 per
//	          state (store.States order); "next-index" -> uint64 next free
//	          derivation index
//	keys      pubkey -> key record
//	secrets   pubkey -> sealed secret, exactly as given
//	deposits  pubkey -> deposit data (only keys that have one)
//	txs       pubkey -> deposit transaction (only keys that have one)
//	pods      pod name -> pod UID + its assigned pubkeys + the pending-deposit
//	          pubkeys intended for it, each in order
//	avail     (released?, ReleasedAt, CreatedAt, pubkey) -> empty: available keys
//	          in the order Claim takes them
//	cooling   (CoolingUntil, pubkey) -> empty: cooling-down keys
//	bindings  name -> value (Store.Bind)
//	audit     big-endian Seq -> audit event
//	reserve   pod name -> the pod's mint reservation (token, count, expiry);
//	          a pod with a reservation keeps its pods entry (its UID) also
//	          while it holds no keys
//	depidx    (IndexKey, block) -> empty: the deposit index's entries; its
//	          cursor is meta "depidx-cursor" (see depositindex.go)
//	protect   pubkey -> slashing-protection watermarks (only keys that have some)
//	chain     pubkey -> the key's last validator reading from the beacon node
//	          (only keys that have one; see lifecycle.go)
//	active    (class, pool bucket, avail or cooling entry) -> empty: the pool
//	          keys ready for duties or activating, by their readings, for
//	          claims under RequireActive (see active.go)
//
// Schema history. 1: the first layout. 2: adds the deposit-failed state
// (code 6, so a sixth counter), the txs and audit buckets, and pending keys
// in pod entries (a new pod entry encoding). 3: adds the reserve bucket;
// everything else is unchanged. 4: adds the depidx bucket (the deposit
// index). 5: adds the still-signing state (code 7, so a seventh counter)
// and the protect bucket. 6: adds the exiting state (code 8, an eighth
// counter) and the chain bucket. 7: adds the active bucket (built from the
// pool buckets and the readings). Open migrates a schema 1 to 6 file to
// schema 7 in place, in one transaction.
//
// The methods hold only their transactions: the checks of every call (a
// done ctx, invalid arguments) are store.Front's, which storeurl.Open puts
// in front of the store.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/pkmanager/pkmanager/internal/store"
)

// SchemaVersion is the layout version this package writes. It also reads
// (and migrates) versions 1 to 6.
const SchemaVersion = 7

// DefaultLockTimeout is how long Open waits for the file lock by default.
const DefaultLockTimeout = 2 * time.Second

var (
	bucketMeta     = []byte("meta")
	bucketKeys     = []byte("keys")
	bucketSecrets  = []byte("secrets")
	bucketDeposits = []byte("deposits")
	bucketPods     = []byte("pods")
	bucketAvail    = []byte("avail")
	bucketCooling  = []byte("cooling")
	bucketBindings = []byte("bindings")
	bucketTxs      = []byte("txs")
	bucketAudit    = []byte("audit")
	bucketReserve  = []byte("reserve")
	bucketDepIdx   = []byte("depidx")
	bucketProtect  = []byte("protect")
	bucketChain    = []byte("chain")
	bucketActive   = []byte("active")

	// bucketsV1 is the layout of schema 1; schema 2 adds txs and audit,
	// schema 3 reserve, schema 4 depidx, schema 5 protect, schema 6
	// chain, schema 7 active.
	bucketsV1  = [][]byte{bucketMeta, bucketKeys, bucketSecrets, bucketDeposits, bucketPods, bucketAvail, bucketCooling, bucketBindings}
	bucketsV2  = append(bucketsV1[:len(bucketsV1):len(bucketsV1)], bucketTxs, bucketAudit)
	bucketsV3  = append(bucketsV2[:len(bucketsV2):len(bucketsV2)], bucketReserve)
	bucketsV4  = append(bucketsV3[:len(bucketsV3):len(bucketsV3)], bucketDepIdx)
	bucketsV5  = append(bucketsV4[:len(bucketsV4):len(bucketsV4)], bucketProtect)
	bucketsV6  = append(bucketsV5[:len(bucketsV5):len(bucketsV5)], bucketChain)
	allBuckets = append(bucketsV6[:len(bucketsV6):len(bucketsV6)], bucketActive)

	metaSchema    = []byte("schema")
	metaCounts    = []byte("counts")
	metaNextIndex = []byte("next-index")
)

// Options configure Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the
	// file before failing with store.ErrLocked. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives notices such as an insecure file mode. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Store is a store.Store kept in one bbolt file.
type Store struct {
	db   *bbolt.DB
	path string
	gc   groupCommit
}

var _ store.Store = (*Store)(nil)

// Open opens the store file at path, creating it (mode 0600, and its
// directory with mode 0700) if it does not exist. It fails with an error
// wrapping store.ErrLocked when another process (or another Open in this
// one) holds the file for longer than opts.LockTimeout, and with
// store.ErrUnsupportedSchema when the file has another schema version.
func Open(path string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	st, statErr := os.Stat(path)
	existed := statErr == nil
	if existed {
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("store %s is not a regular file", path)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			log.Warn("store file is accessible to other users; it should have mode 0600",
				slog.String("path", path), slog.String("mode", fmt.Sprintf("%04o", perm)))
		}
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:        timeout,
		FreelistType:   bbolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err != nil {
		var pathErr *fs.PathError
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("store %s is in use by another pkmanager process (no lock after %s): %w", path, timeout, store.ErrLocked)
		case existed && st.Size() > 0 && !errors.As(err, &pathErr):
			// bbolt reports foreign or damaged files as ErrInvalid,
			// ErrVersionMismatch, ErrChecksum or a size complaint.
			return nil, fmt.Errorf("store %s is not a pkmanager store (not a bbolt database, or damaged): %w", path, err)
		default:
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	s := &Store{db: db, path: path}
	created, migrated, err := s.init()
	if err != nil {
		db.Close()
		return nil, err
	}
	if created {
		log.Info("created store", slog.String("path", path), slog.Int("schema", SchemaVersion))
	}
	if migrated != 0 {
		log.Info("migrated store", slog.String("path", path), slog.Int("from_schema", int(migrated)), slog.Int("schema", SchemaVersion))
	}
	return s, nil
}

func ensureDir(dir string) error {
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("store directory %s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create store directory: %w", err)
	}
	return nil
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close writes bbolt's free-page list into the file (freelist.go), so
// that the next Open need not walk every page, and releases the file.
func (s *Store) Close() error {
	syncErr := s.syncFreelist()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return syncErr
}

// Ping checks that the file is open and readable.
func (s *Store) Ping(ctx context.Context) error {
	err := s.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("meta bucket missing: %w", errCorrupt)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ping store %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read-only transaction that is rolled back even when fn
// panics (ListKeys runs caller code inside it).
func (s *Store) view(fn func(*txn) error) error {
	tx, err := s.db.Begin(false)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	t, err := newTxn(tx)
	if err != nil {
		return err
	}
	return fn(t)
}

// update runs fn in its own read-write transaction.
func (s *Store) update(fn func(*txn) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		t, err := newTxn(tx)
		if err != nil {
			return err
		}
		return fn(t)
	})
}

// batch runs fn in a read-write transaction shared with concurrent callers
// (group commit). It may run fn more than once, and alone when it fails,
// so fn must set all its results afresh on every run and fail only on what
// it reads in the transaction.
func (s *Store) batch(fn func(*txn) error) error {
	return s.gc.run(s.db, func(tx *bbolt.Tx) error {
		t, err := newTxn(tx)
		if err != nil {
			return err
		}
		return fn(t)
	})
}

// wrap names the file in errors that say the store is damaged.
func (s *Store) wrap(err error) error {
	if errors.Is(err, errCorrupt) {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	return err
}
