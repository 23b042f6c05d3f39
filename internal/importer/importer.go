// Package importer adds validator keys whose deposits were made elsewhere
// (genesis validators, keys deposited by an operator) to the store as
// available keys, without any deposit. Keys already stored are left exactly
// as they are and reported.
package importer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Key is a key to import.
type Key struct {
	Secret []byte // 32-byte big-endian BLS secret key
	// DerivationIndex is i of m/12381/3600/i/0/0 when known.
	DerivationIndex    uint32
	HasDerivationIndex bool
}

// Store is what importing needs from the store.
type Store interface {
	GetKey(ctx context.Context, pubkey store.Pubkey) (store.Key, error)
	AddKeys(ctx context.Context, keys []store.NewKey, state store.State, now time.Time) error
	ReserveIndices(ctx context.Context, count int) (uint32, error)
	Dump(ctx context.Context, fn func(store.Key) error) (store.Snapshot, error)
	AppendAudit(ctx context.Context, e store.AuditEvent) error
}

// Sealer encrypts a secret for a key record (a *seal.KEK).
type Sealer interface {
	Seal(secret, pubkey []byte) ([]byte, error)
}

// Result says what an import did.
type Result struct {
	Imported []store.Pubkey // added as available
	Existing []store.Pubkey // already stored (in any state): left unchanged
	// ReservedThrough is set when derivation indices up to and including it
	// were reserved, so the server never derives these keys again.
	ReservedThrough *uint32
}

// Import adds keys as available. A key given twice counts once. fingerprint,
// when the keys are derived from a mnemonic, is that mnemonic's fingerprint
// (keys.Deriver.Fingerprint); when the store derives new keys from the same
// mnemonic, or from none yet, the store's derivation indices are reserved
// past the highest imported index, so the server never mints them again.
func Import(ctx context.Context, st Store, sealer Sealer, in []Key, fingerprint []byte, now time.Time) (Result, error) {
	var res Result
	type prepared struct {
		pub store.Pubkey
		key Key
	}
	var list []prepared
	seen := make(map[store.Pubkey]bool, len(in))
	var maxIndex uint32
	haveIndex := false
	for i, k := range in {
		sk, err := keys.SecretKeyFromBytes(k.Secret)
		if err != nil {
			return res, fmt.Errorf("key %d: %w: %w", i+1, store.ErrInvalidArgument, err)
		}
		pub := store.Pubkey(sk.PublicKey())
		sk.Zero()
		if seen[pub] {
			continue
		}
		seen[pub] = true
		list = append(list, prepared{pub, k})
		if k.HasDerivationIndex && (!haveIndex || k.DerivationIndex > maxIndex) {
			maxIndex, haveIndex = k.DerivationIndex, true
		}
	}
	if haveIndex && len(fingerprint) > 0 {
		reserve, err := shouldReserve(ctx, st, hex.EncodeToString(fingerprint))
		if err != nil {
			return res, err
		}
		if reserve {
			if err := reserveThrough(ctx, st, maxIndex); err != nil {
				return res, err
			}
			res.ReservedThrough = &maxIndex
		}
	}
	for attempt := 0; ; attempt++ {
		res.Imported, res.Existing = nil, nil
		var add []store.NewKey
		for _, p := range list {
			_, err := st.GetKey(ctx, p.pub)
			if err == nil {
				res.Existing = append(res.Existing, p.pub)
				continue
			}
			if !errors.Is(err, store.ErrNotFound) {
				return res, fmt.Errorf("look up key %s: %w", p.pub, err)
			}
			sealed, err := sealer.Seal(p.key.Secret, p.pub[:])
			if err != nil {
				return res, fmt.Errorf("seal key %s: %w", p.pub, err)
			}
			add = append(add, store.NewKey{
				Pubkey: p.pub, SealedSecret: sealed, Origin: store.OriginImported,
				DerivationIndex: p.key.DerivationIndex, HasDerivationIndex: p.key.HasDerivationIndex,
			})
			res.Imported = append(res.Imported, p.pub)
		}
		if len(add) == 0 {
			return res, nil
		}
		err := st.AddKeys(ctx, add, store.StateAvailable, now)
		if err == nil {
			store.RecordAudit(ctx, st, nil, store.AuditEvent{
				Time: now, Action: store.AuditImport, Pubkeys: res.Imported,
				Reason: "imported as available (deposits made elsewhere)",
			})
			return res, nil
		}
		// A key was added meanwhile (e.g. minted): look again.
		if !errors.Is(err, store.ErrKeyExists) || attempt == 2 {
			return res, fmt.Errorf("add %d keys: %w", len(add), err)
		}
	}
}

// shouldReserve: the store derives from this mnemonic, or is bound to none.
func shouldReserve(ctx context.Context, st Store, fingerprint string) (bool, error) {
	snap, err := st.Dump(ctx, func(store.Key) error { return nil })
	if err != nil {
		return false, fmt.Errorf("read the store's mnemonic binding: %w", err)
	}
	bound, ok := snap.Bindings[store.BindMnemonic]
	return !ok || bound == fingerprint, nil
}

// reserveThrough makes sure index idx is never handed out by ReserveIndices.
func reserveThrough(ctx context.Context, st Store, idx uint32) error {
	first, err := st.ReserveIndices(ctx, 1)
	if err != nil {
		return fmt.Errorf("reserve derivation indices: %w", err)
	}
	if first >= idx {
		return nil
	}
	if _, err := st.ReserveIndices(ctx, int(idx-first)); err != nil {
		return fmt.Errorf("reserve derivation indices through %d: %w", idx, err)
	}
	return nil
}
