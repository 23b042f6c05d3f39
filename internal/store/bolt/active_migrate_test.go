package bolt

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

// TestOpenSchemaV6 opens a store written by the schema 6 backend
// (testdata/store-v6.db, see testdata/genv6: the records of genv2 and
// readings: k1 assigned and k3 cooling down until 3600 s active, k4
// available pending_queued): Open migrates it in place to schema 7, every
// key reads back as in the migrated schema 2 fixture, and the active index
// built from the pool and the readings is what claims under RequireActive
// use: k4 counts as activating, k3 goes once due, k4 once read active.
func TestOpenSchemaV6(t *testing.T) {
	s, path, logs := openFixture(t, "store-v6.db", 6)
	if !strings.Contains(logs.String(), "migrated store") || !strings.Contains(logs.String(), "from_schema=6") {
		t.Errorf("no migration notice in the log:\n%s", logs.String())
	}
	v2, _, _ := openFixture(t, "store-v2.db", 2)
	if got, want := snapshotOf(t, s), snapshotOf(t, v2); !slices.EqualFunc(got, want, keysEqual) || len(got) != 8 {
		t.Errorf("keys of the schema 6 fixture after migration differ from the schema 2 fixture's (%d keys, want %d)", len(got), len(want))
	}
	checkActiveIndex(t, s)
	ctx := t.Context()
	if b, err := s.Bindings(ctx); err != nil || !maps.Equal(b, map[string]string{"kek": "fingerprint-v6"}) {
		t.Errorf("Bindings = %v, %v", b, err)
	}
	t0 := time.Date(2030, 6, 7, 8, 9, 10, 654321000, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	claim := func(pod string, want int, now time.Time) store.Claim {
		t.Helper()
		c, err := s.Claim(ctx, store.ClaimParams{Pod: pod, PodUID: "u-" + pod, Want: want, Now: now, RequireActive: true,
			ReserveToken: "t-" + pod, ReserveUntil: now.Add(time.Minute)})
		if err != nil {
			t.Fatalf("Claim(%s): %v", pod, err)
		}
		return c
	}
	taken := func(c store.Claim) []store.Pubkey {
		var out []store.Pubkey
		for _, k := range c.Keys {
			out = append(out, k.Pubkey)
		}
		return out
	}
	// k3 is not due yet: nothing is ready; k4 is activating.
	if c := claim("pod-n", 2, at(100)); len(c.Keys) != 0 || c.Activating != 1 || c.Reservation == nil || c.Reservation.Count != 1 {
		t.Errorf("claim before k3 is due: keys %v, activating %d, reservation %+v; want none, 1, 1", taken(c), c.Activating, c.Reservation)
	}
	if c := claim("pod-m", 1, at(3700)); !slices.Equal(taken(c), []store.Pubkey{v2PK(3)}) || c.Activating != 0 {
		t.Errorf("claim once k3 is due: keys %v, activating %d; want k3, 0", taken(c), c.Activating)
	}
	rd := store.ValidatorReading{Pubkey: v2PK(4), Status: store.ValidatorStatus{Index: 4, Status: store.StatusActiveOngoing,
		Balance: 32e9, ActivationEpoch: 2, ExitEpoch: ^uint64(0), Epoch: 4, At: at(3800)}}
	if _, err := s.RecordValidators(ctx, []store.ValidatorReading{rd}, at(3800)); err != nil {
		t.Fatal(err)
	}
	if c := claim("pod-n", 2, at(3900)); !slices.Equal(taken(c), []store.Pubkey{v2PK(4)}) || c.Activating != 0 {
		t.Errorf("claim once k4 is active: keys %v, activating %d; want k4, 0", taken(c), c.Activating)
	}
	checkActiveIndex(t, s)
	storetest.CheckInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := schemaOf(t, path); v != SchemaVersion {
		t.Errorf("schema after migration = %d, want %d", v, SchemaVersion)
	}
}
