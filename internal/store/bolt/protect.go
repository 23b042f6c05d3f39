package bolt

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// mergeProtection merges p into a key's stored watermarks.
func (t *txn) mergeProtection(pk store.Pubkey, p store.Protection) error {
	cur, err := t.getProtection(pk)
	if err != nil {
		return err
	}
	if cur != nil {
		p = cur.Merge(p)
	}
	if p.Empty() {
		return nil
	}
	return t.protect.Put(pkBytes(pk), encodeProtection(p))
}

// Quarantine takes keys seen signing out of circulation; see store.Store.
func (s *Store) Quarantine(ctx context.Context, pubkeys []store.Pubkey, reason string, now time.Time) (int, error) {
	actor := store.ActorFrom(ctx)
	var n int
	err := s.update(func(t *txn) (err error) {
		n, err = t.quarantine(pubkeys, reason, micros(now), actor)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine keys: %w", s.wrap(err))
	}
	return n, nil
}

// quarantine runs Quarantine in t.
func (t *txn) quarantine(pks []store.Pubkey, reason string, now int64, actor string) (int, error) {
	byPod := map[string][]store.Pubkey{}
	uids := map[string]string{}
	var pods []string
	for _, pk := range slices.Compact(slices.SortedFunc(slices.Values(pks), comparePK)) {
		r, ok, err := t.getRecord(pk)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		from := r.state
		switch from {
		case store.StateAvailable:
			if err := t.avail.Delete(availKey(pk, &r)); err != nil {
				return 0, err
			}
		case store.StateCoolingDown:
			if err := t.cooling.Delete(coolingKey(pk, r.coolingUntil)); err != nil {
				return 0, err
			}
		case store.StateAssigned:
			if err := t.dropFromPod(r.pod, pk); err != nil {
				return 0, err
			}
		default:
			continue
		}
		if _, seen := byPod[r.pod]; !seen {
			pods = append(pods, r.pod)
			uids[r.pod] = r.podUID
		}
		byPod[r.pod] = append(byPod[r.pod], pk)
		r.state, r.retiredReason, r.since = store.StateStillSigning, reason, now
		r.pod, r.podUID, r.coolingUntil = "", "", noTime
		if err := t.putRecord(pk, &r); err != nil {
			return 0, err
		}
		if err := t.move(from, store.StateStillSigning); err != nil {
			return 0, err
		}
	}
	if err := t.flushCounts(); err != nil {
		return 0, err
	}
	n := 0
	slices.Sort(pods)
	for _, pod := range pods {
		n += len(byPod[pod])
		if err := t.appendAudit(&store.AuditEvent{
			Time: fromMicros(now), Action: store.AuditStillSigning, Pod: pod, PodUID: uids[pod], Pubkeys: byPod[pod], Reason: reason, Actor: actor,
		}); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// CoolDown sets the cooling-down end of keys; see store.Store.
func (s *Store) CoolDown(ctx context.Context, pubkeys []store.Pubkey, until, now time.Time) (int, error) {
	actor := store.ActorFrom(ctx)
	var n int
	err := s.update(func(t *txn) (err error) {
		n, err = t.coolDown(pubkeys, micros(until), micros(now), actor)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cool down keys: %w", s.wrap(err))
	}
	return n, nil
}

// coolDown runs CoolDown in t.
func (t *txn) coolDown(pks []store.Pubkey, until, now int64, actor string) (int, error) {
	n := 0
	var quiet []store.Pubkey
	for _, pk := range slices.Compact(slices.SortedFunc(slices.Values(pks), comparePK)) {
		r, ok, err := t.getRecord(pk)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		switch r.state {
		case store.StateCoolingDown:
			if err := t.cooling.Delete(coolingKey(pk, r.coolingUntil)); err != nil {
				return 0, err
			}
		case store.StateStillSigning:
			if err := t.move(store.StateStillSigning, store.StateCoolingDown); err != nil {
				return 0, err
			}
			r.state, r.retiredReason, r.since = store.StateCoolingDown, "", now
			quiet = append(quiet, pk)
		default:
			continue
		}
		r.coolingUntil = until
		if err := t.putRecord(pk, &r); err != nil {
			return 0, err
		}
		if err := t.cooling.Put(coolingKey(pk, until), nil); err != nil {
			return 0, err
		}
		n++
	}
	if err := t.flushCounts(); err != nil {
		return 0, err
	}
	if len(quiet) > 0 {
		if err := t.appendAudit(&store.AuditEvent{
			Time: fromMicros(now), Action: store.AuditQuiet, Pubkeys: quiet, Actor: actor,
			Reason: fmt.Sprintf("quiet long enough: cooling down until %s", fromMicros(until).UTC().Format(time.RFC3339)),
		}); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Protections returns stored slashing-protection watermarks; see
// store.Store.
func (s *Store) Protections(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.Protection, error) {
	out := make(map[store.Pubkey]store.Protection)
	err := s.view(func(t *txn) error {
		for _, pk := range pubkeys {
			p, err := t.getProtection(pk)
			if err != nil {
				return err
			}
			if p != nil {
				out[pk] = *p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read slashing protection: %w", s.wrap(err))
	}
	return out, nil
}
