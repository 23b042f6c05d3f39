package store

import (
	"errors"

	"github.com/pkmanager/pkmanager/internal/ownership"
)

// Optional interfaces: features only some backends have, found by a type
// assertion on a Store (as database/sql/driver's Pinger is), so that no
// caller names a backend's type. Clock (store.go) is one of them.

// Owners is implemented by a store that several processes share and that
// elects, per role, the one of them that runs single-owner work
// (PostgreSQL: an advisory lock per role). A store without it admits one
// process, which owns every role.
type Owners interface {
	Ownership() ownership.Runner
}

// SessionLock is implemented by a store whose lock against other processes
// lives in a session that can be lost and taken again (PostgreSQL's store
// lock; bbolt's file lock cannot be lost while the file is open).
type SessionLock interface {
	// CheckLock fails, wrapping ErrLockLost, when the store lock is not
	// held as it was opened: a tool's result is then not to be trusted.
	CheckLock() error
	// LockTaken is closed when a tool took the store to itself while this
	// process had lost its store lock (a server then stops).
	LockTaken() <-chan struct{}
}

// ErrLockLost is the error of Ping and CheckLock while a SessionLock's
// store lock is lost.
var ErrLockLost = errors.New("the store lock session of this process is lost (reconnecting)")
