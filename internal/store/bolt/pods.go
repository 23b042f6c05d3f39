package bolt

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// PodSizes returns each pod of the pods bucket with the number of keys
// its entry lists (assigned and pending); see store.Store. It reads the
// entries' lengths only: no key record, no pubkey is decoded.
func (s *Store) PodSizes(ctx context.Context) (map[string]int, error) {
	out := make(map[string]int)
	err := s.view(func(t *txn) error {
		n := 0
		return t.pods.ForEach(func(k, v []byte) error {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			size, err := podEntrySize(v)
			if err != nil {
				return fmt.Errorf("pod %s: %w", k, err)
			}
			if size > 0 {
				out[string(k)] = size
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list pod sizes: %w", s.wrap(err))
	}
	return out, nil
}

// podEntrySize is the number of keys a pod entry lists (podEntry.size),
// without decoding them.
func podEntrySize(b []byte) (int, error) {
	_, _, keys, err := splitPodEntry(b)
	return len(keys) / store.PubkeyLength, err
}

// splitPodEntry checks a pod entry (record.go) and splits it into the
// UID, the number of assigned keys and the pubkeys (assigned, then
// pending), which are not copied.
func splitPodEntry(b []byte) (uid []byte, assigned uint64, keys []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, 0, nil, fmt.Errorf("%w: pod entry of %d bytes", errCorrupt, len(b))
	}
	uid, rest := b[w:w+int(n)], b[w+int(n):]
	na, w := binary.Uvarint(rest)
	if w <= 0 || len(rest[w:])%store.PubkeyLength != 0 || na > uint64(len(rest[w:])/store.PubkeyLength) {
		return nil, 0, nil, fmt.Errorf("%w: pod entry of %d bytes", errCorrupt, len(b))
	}
	return uid, na, rest[w:], nil
}
