// Command genv1 writes testdata/store-v1.db, a store of schema version 1
// written by the bbolt backend as it was before schema 2 (commit 5585233,
// "cmd: one helper for client connections ..."). It is kept for the record
// and does not build against the current store package: to regenerate the
// fixture, extract that commit (git archive 5585233 | tar -x -C /tmp/v1),
// copy this file to /tmp/v1/cmd/genv1/main.go and run
//
//	go run ./cmd/genv1 /path/to/store-v1.db
//
// TestOpenSchemaV1 checks every record written here.
package main

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

func pk(i int) store.Pubkey {
	var p store.Pubkey
	p[0] = 0xa1
	p[1] = byte(i)
	for j := 2; j < len(p); j++ {
		p[j] = byte(i*11 + j)
	}
	return p
}

func nk(i int) store.NewKey {
	return store.NewKey{
		Pubkey: pk(i), SealedSecret: []byte{0xee, byte(i), 0x00, 0xff},
		Origin:  store.OriginRandom,
		Deposit: &store.DepositData{AmountGwei: 32_000_000_000 + uint64(i), NetworkName: "hoodi", ForkVersion: [4]byte{0x10, 0, 0, byte(i)}},
	}
}

func main() {
	ctx := context.Background()
	t0 := time.Date(2030, 3, 4, 5, 6, 7, 123456000, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	check := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	os.Remove(os.Args[1])
	s, err := bolt.Open(os.Args[1], bolt.Options{})
	check(err)
	defer s.Close()

	pending := nk(1)
	pending.Origin, pending.DerivationIndex, pending.HasDerivationIndex = store.OriginDerived, 5, true
	check(s.AddKeys(ctx, []store.NewKey{pending}, store.StatePendingDeposit, at(0)))
	imported := nk(9)
	imported.Origin, imported.Deposit = store.OriginImported, nil
	check(s.AddKeys(ctx, []store.NewKey{nk(2), nk(3), nk(7), nk(8), imported}, store.StateAvailable, at(1)))
	// pod-r takes k2 and k3 and releases them; the sweep makes them
	// available again with ReleasedAt = at(3).
	_, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-r", Want: 2, Now: at(2)})
	check(err)
	_, err = s.Release(ctx, "pod-r", "", at(3), at(3))
	check(err)
	_, err = s.Sweep(ctx, at(3))
	check(err)
	// pod-a (uid-a) gets k4 and k5 minted for it; pod-b (no UID) k6.
	_, err = s.AddAssigned(ctx, store.AddParams{Pod: "pod-a", PodUID: "uid-a", Want: 2, Keys: []store.NewKey{nk(4), nk(5)}, Now: at(4)})
	check(err)
	_, err = s.AddAssigned(ctx, store.AddParams{Pod: "pod-b", Want: 1, Keys: []store.NewKey{nk(6)}, Now: at(5)})
	check(err)
	// pod-c takes k2 (released at 3; before k3 by pubkey) and releases it
	// until at(3600): cooling-down. k3 stays available (released), k7 and
	// k9 available (never released), k8 retired.
	_, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-c", PodUID: "uid-c", Want: 1, Now: at(6)})
	check(err)
	_, err = s.Release(ctx, "pod-c", "uid-c", at(3600), at(7))
	check(err)
	check(s.Retire(ctx, pk(8), "compromised", at(8)))
	_, err = s.ReserveIndices(ctx, 10)
	check(err)
	check(s.Bind(ctx, "kek", "fingerprint-v1"))
}
