package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/reusegate"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/test/testbin"
)

// A server without --beacon-url warns at start when keys wait for a reuse
// gate (a cooling-down end of reusegate.HoldUntil, or still-signing), and
// only then: not for keys that merely cool down, nor for a store without
// any cooling-down key (where it reads only the counters).
func TestWarnHeldWithoutGate(t *testing.T) {
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 11))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name  string
		until time.Time // the release's cooling-down end; zero: no release
		warn  bool
	}{
		{"no cooling-down key", time.Time{}, false},
		{"cooling down", now.Add(time.Hour), false},
		{"held for the gate", reusegate.HoldUntil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st, err := bolt.Open(path, bolt.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			keys := make([]store.NewKey, 3)
			for i := range keys {
				var pk store.Pubkey
				pk[0], pk[1] = 0xa0, byte(i)
				sealed, err := kek.Seal(bytes.Repeat([]byte{byte(i + 1)}, 32), pk[:])
				if err != nil {
					t.Fatal(err)
				}
				keys[i] = store.NewKey{Pubkey: pk, SealedSecret: sealed, Origin: store.OriginImported}
			}
			ctx := context.Background()
			if err := st.AddKeys(ctx, keys, store.StateAvailable, now); err != nil {
				t.Fatal(err)
			}
			if !tc.until.IsZero() {
				if _, err := st.Claim(ctx, store.ClaimParams{Pod: "p", PodUID: "u", Want: 2, Now: now}); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Release(ctx, store.ReleaseParams{Pod: "p", PodUID: "u", Until: tc.until, Now: now, Reason: "test"}); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			var logs testbin.Buffer
			srv, err := New(ctx, Options{
				StoreURL: "bolt://" + path, KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
				Deposits: DepositOptions{Mode: DepositsOff}, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			srv.close()
			warned := strings.Contains(logs.String(), "they stay out of circulation")
			if warned != tc.warn || (tc.warn && !strings.Contains(logs.String(), "keys=2")) {
				t.Fatalf("warned %t, want %t (with keys=2); log:\n%s", warned, tc.warn, logs.String())
			}
		})
	}
}
