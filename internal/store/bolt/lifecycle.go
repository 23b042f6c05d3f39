package bolt

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Validator readings (the chain bucket): version byte, flags (1: slashed),
// index, balance, activation epoch, exit epoch, epoch of the reading (each
// 8 bytes big-endian), the time it was read (microseconds), then the status
// as uvarint length + bytes.
const (
	chainV1       = 1
	chainFixedLen = 2 + 6*8
	chainSlashed  = 1 << 0
)

func encodeStatus(v *store.ValidatorStatus) []byte {
	b := make([]byte, chainFixedLen, chainFixedLen+binary.MaxVarintLen64+len(v.Status))
	b[0] = chainV1
	if v.Slashed {
		b[1] |= chainSlashed
	}
	for i, x := range [...]uint64{v.Index, v.Balance, v.ActivationEpoch, v.ExitEpoch, v.Epoch, uint64(micros(v.At))} {
		binary.BigEndian.PutUint64(b[2+8*i:], x)
	}
	b = binary.AppendUvarint(b, uint64(len(v.Status)))
	return append(b, v.Status...)
}

func decodeStatus(b []byte) (store.ValidatorStatus, error) {
	var v store.ValidatorStatus
	if len(b) < chainFixedLen || b[0] != chainV1 {
		return v, fmt.Errorf("%w: validator reading of %d bytes", errCorrupt, len(b))
	}
	v.Slashed = b[1]&chainSlashed != 0
	var f [6]uint64
	for i := range f {
		f[i] = binary.BigEndian.Uint64(b[2+8*i:])
	}
	v.Index, v.Balance, v.ActivationEpoch, v.ExitEpoch, v.Epoch = f[0], f[1], f[2], f[3], f[4]
	v.At = fromMicros(int64(f[5]))
	rest := b[chainFixedLen:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || n != uint64(len(rest)-w) {
		return v, fmt.Errorf("%w: validator reading status", errCorrupt)
	}
	v.Status = string(rest[w:])
	return v, nil
}

func (t *txn) getStatus(pk store.Pubkey) (*store.ValidatorStatus, error) {
	b := t.chain.Get(pk[:])
	if b == nil {
		return nil, nil
	}
	v, err := decodeStatus(b)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// recordValidators runs RecordValidators in t.
func (t *txn) recordValidators(readings []store.ValidatorReading, now int64, actor string) ([]store.ChainChange, error) {
	var out []store.ChainChange
	for i := range readings {
		rd := &readings[i]
		r, ok, err := t.getRecord(rd.Pubkey)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		prev, err := t.getStatus(rd.Pubkey)
		if err != nil {
			return nil, err
		}
		cur := rd.Status
		cur.At = fromMicros(micros(cur.At))
		if err := t.chain.Put(pkBytes(rd.Pubkey), encodeStatus(&cur)); err != nil {
			return nil, err
		}
		if err := t.reindexActive(rd.Pubkey, &r, prev, &cur); err != nil {
			return nil, err
		}
		d := store.ChainRule(r.state, prev, cur)
		if !d.Retire && !d.Alert {
			continue
		}
		out = append(out, store.ChainChange{Pubkey: rd.Pubkey, State: r.state, Pod: r.pod, Decision: d, Status: cur})
		if d.Retire {
			if err := t.retire(rd.Pubkey, d.Reason, now, actor); err != nil {
				return nil, err
			}
		}
	}
	slices.SortFunc(out, func(a, b store.ChainChange) int { return comparePK(a.Pubkey, b.Pubkey) })
	return out, nil
}

// exit runs Exit in t.
func (t *txn) exit(p *store.ExitParams, now int64, actor string) ([]store.Key, error) {
	byPod := map[string][]store.Pubkey{}
	uids := map[string]string{}
	var pods []string
	seen := map[store.Pubkey]bool{}
	for _, pk := range p.Pubkeys {
		if seen[pk] {
			continue
		}
		seen[pk] = true
		r, ok, err := t.getRecord(pk)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("exit key %s: %w", pk, store.ErrNotFound)
		}
		change, err := store.ExitRule(pk, r.state, r.pod, p.Force)
		if err != nil {
			return nil, err
		}
		if !change {
			continue
		}
		switch r.state {
		case store.StateAvailable:
			err = t.avail.Delete(availKey(pk, &r))
		case store.StateCoolingDown:
			err = t.cooling.Delete(coolingKey(pk, r.coolingUntil))
		case store.StateAssigned:
			err = t.dropFromPod(r.pod, pk)
		}
		if err != nil {
			return nil, err
		}
		if _, ok := byPod[r.pod]; !ok {
			pods = append(pods, r.pod)
			uids[r.pod] = r.podUID
		}
		byPod[r.pod] = append(byPod[r.pod], pk)
		from := r.state
		r.state, r.retiredReason, r.since = store.StateExiting, p.Reason, now
		r.pod, r.podUID, r.coolingUntil = "", "", noTime
		if err := t.putRecord(pk, &r); err != nil {
			return nil, err
		}
		if err := t.move(from, store.StateExiting); err != nil {
			return nil, err
		}
	}
	if err := t.flushCounts(); err != nil {
		return nil, err
	}
	slices.Sort(pods)
	for _, pod := range pods {
		pks := slices.SortedFunc(slices.Values(byPod[pod]), comparePK)
		if err := t.appendAudit(&store.AuditEvent{
			Time: fromMicros(now), Action: store.AuditExit, Pod: pod, PodUID: uids[pod], Pubkeys: pks, Reason: p.Reason, Actor: actor,
		}); err != nil {
			return nil, err
		}
	}
	out := make([]store.Key, len(p.Pubkeys))
	for i, pk := range p.Pubkeys {
		r, _, err := t.getRecord(pk)
		if err != nil {
			return nil, err
		}
		out[i] = r.key(pk)
	}
	return out, nil
}

// RecordValidators stores validator readings and acts on them; see
// store.Lifecycle.
func (s *Store) RecordValidators(ctx context.Context, readings []store.ValidatorReading, now time.Time) ([]store.ChainChange, error) {
	actor := store.ActorFrom(ctx)
	var out []store.ChainChange
	err := s.update(func(t *txn) (err error) {
		out, err = t.recordValidators(readings, micros(now), actor)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record validators: %w", s.wrap(err))
	}
	return out, nil
}

// Validators returns stored validator readings; see store.Lifecycle.
func (s *Store) Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error) {
	out := make(map[store.Pubkey]store.ValidatorStatus)
	err := s.view(func(t *txn) error {
		for _, pk := range pubkeys {
			v, err := t.getStatus(pk)
			if err != nil {
				return err
			}
			if v != nil {
				out[pk] = *v
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read validators: %w", s.wrap(err))
	}
	return out, nil
}

// Exit marks keys exiting; see store.Lifecycle.
func (s *Store) Exit(ctx context.Context, p store.ExitParams) ([]store.Key, error) {
	actor := store.ActorFrom(ctx)
	var out []store.Key
	err := s.update(func(t *txn) (err error) {
		out, err = t.exit(&p, micros(p.Now), actor)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("exit keys: %w", s.wrap(err))
	}
	return out, nil
}
