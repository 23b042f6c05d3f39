package backup

import (
	"fmt"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// RestoreReport says what Restored changed.
type RestoreReport struct {
	// Cooled counts the available and cooling-down keys that now cool down
	// until Until.
	Cooled int
	Until  time.Time
}

// Restored applies the restore rule to a snapshot before it fills a store
// (restore, migrate-store): a snapshot may be older than the live state it
// replaces, whose pods may still sign with keys the snapshot calls free, so
// a restore never puts a key into circulation sooner than the live system
// would have. Every available key becomes cooling-down until now+delay
// (Since = now; ReleasedAt and LastPod kept), every cooling-down key cools
// down until at least then, and the snapshot records the restore
// (store.BindRestoredAt = now, store.BindRestoreReconciled dropped), so the server
// warns until the pod watcher has reconciled every assigned key. Other
// states are left as they are: assigned keys stay with their pods for the
// watcher to judge, pending-deposit keys are checked against the chain
// before any deposit is sent.
func Restored(snap *store.Snapshot, keys []store.Key, now time.Time, delay time.Duration) (RestoreReport, error) {
	if delay < 0 {
		return RestoreReport{}, fmt.Errorf("negative reuse delay %s", delay)
	}
	now = now.Truncate(time.Microsecond)
	until := now.Add(delay)
	rep := RestoreReport{Until: until}
	for i := range keys {
		k := &keys[i]
		switch k.State {
		case store.StateAvailable:
			k.State, k.CoolingUntil, k.Since = store.StateCoolingDown, until, now
			rep.Cooled++
		case store.StateCoolingDown:
			if k.CoolingUntil.Before(until) {
				k.CoolingUntil = until
			}
			rep.Cooled++
		}
	}
	if snap.Bindings == nil {
		snap.Bindings = map[string]string{}
	}
	snap.Bindings[store.BindRestoredAt] = now.UTC().Format(time.RFC3339Nano)
	delete(snap.Bindings, store.BindRestoreReconciled)
	return rep, nil
}

// Digest returns the summary of keys and snap (as Summarize reads it back
// from a store), for comparing a filled store with what was loaded.
func Digest(keys []store.Key, snap store.Snapshot) (Summary, error) {
	d := NewDigester()
	for i := range keys {
		if err := d.Add(&keys[i]); err != nil {
			return Summary{}, err
		}
	}
	return d.Finish(snap), nil
}
