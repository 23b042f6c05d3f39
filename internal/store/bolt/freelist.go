package bolt

import (
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// The free-page list. Open sets bbolt's NoFreelistSync: a commit does not
// write the list of free pages into the file (it would write 8 bytes per
// free page, on every commit), and bbolt.Open rebuilds the list by walking
// every page of every bucket instead. That walk reads the whole store into
// memory (its pages stay in the process's resident set, as mapped file
// pages, until the kernel reclaims them) and takes time proportional to the
// store at every start.
//
// Close therefore writes the list once, in a last commit of its own (with
// its fsyncs, like every commit): the next Open reads the list instead of
// walking the pages. That Open's first commit frees the list again and
// marks the file as having none (bbolt does this whenever NoFreelistSync is
// set), so a file left by a crash or a kill, which never got to Close, is
// walked as before. Neither is a change of the store's layout: bbolt reads
// both kinds of file whatever NoFreelistSync is, and older pkmanager
// versions open either.

// syncFreelist writes bbolt's free-page list into the file, in a commit
// that changes nothing else. It is the last thing Close does before closing
// the file; s must not be used afterwards.
func (s *Store) syncFreelist() error {
	err := s.db.Update(func(*bbolt.Tx) error {
		// Read by this transaction's Commit, under the writer lock that
		// every other commit also takes.
		s.db.NoFreelistSync = false
		return nil
	})
	switch {
	case errors.Is(err, bolterrors.ErrDatabaseNotOpen):
		return nil // closed before: nothing to write
	case err != nil:
		return fmt.Errorf("store %s: write the free-page list: %w", s.path, err)
	}
	return nil
}
