// Command genv6 writes testdata/store-v6.db, a store of schema version 6
// written by the bbolt backend as it was before schema 7 (commit eb24841),
// with the records of genv2 but the binding value, and validator readings
// of k1 (assigned), k3 (cooling down) and k4 (available). It is kept for
// the record: built against the current store package it writes the
// current schema, so to regenerate the fixture, extract that commit
// (git archive eb24841 | tar -x -C /tmp/v6), copy this file to
// /tmp/v6/cmd/genv6/main.go and run
//
//	go run ./cmd/genv6 /path/to/store-v6.db
//
// TestOpenSchemaV6 checks the records written here.
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
	p[0] = 0xb2
	p[1] = byte(i)
	for j := 2; j < len(p); j++ {
		p[j] = byte(i*13 + j)
	}
	return p
}

func nk(i int) store.NewKey {
	return store.NewKey{
		Pubkey: pk(i), SealedSecret: []byte{0xdd, byte(i), 0x00, 0xff},
		Origin:  store.OriginRandom,
		Deposit: &store.DepositData{AmountGwei: 32_000_000_000 + uint64(i), NetworkName: "hoodi", ForkVersion: [4]byte{0x10, 0, 0, byte(i)}},
	}
}

func main() {
	ctx := context.Background()
	t0 := time.Date(2030, 6, 7, 8, 9, 10, 654321000, time.UTC)
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

	// k1..k4 available (k4 imported without deposit data).
	imported := nk(4)
	imported.Origin, imported.Deposit = store.OriginImported, nil
	check(s.AddKeys(ctx, []store.NewKey{nk(1), nk(2), nk(3), imported}, store.StateAvailable, at(0)))
	// pod-a (uid-a) takes k1 and k2.
	_, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "uid-a", Want: 2, Now: at(1)})
	check(err)
	// pod-p (uid-p) gets k10 and k11 pending for it, k12 a pending spare.
	derived := nk(11)
	derived.Origin, derived.DerivationIndex, derived.HasDerivationIndex = store.OriginDerived, 7, true
	check(s.AddPending(ctx, store.AddParams{Pod: "pod-p", PodUID: "uid-p", Want: 2, Keys: []store.NewKey{nk(10), derived, nk(12)}, Now: at(2)}))
	// k10's deposit transaction is recorded and confirmed in block 42: it
	// joins pod-p. k11 stays pending with a recorded transaction.
	check(s.SetDepositTx(ctx, pk(10), store.DepositTx{Nonce: 3, Hash: [32]byte{1, 2, 3}, Raw: []byte{0x02, 0xf8, 10}}, at(3)))
	_, err = s.ConfirmDeposit(ctx, pk(10), 42, at(4))
	check(err)
	check(s.SetDepositTx(ctx, pk(11), store.DepositTx{Nonce: 4, Hash: [32]byte{4, 5, 6}, Raw: []byte{0x02, 0xf8, 11}}, at(5)))
	// k13 is minted and its deposit fails.
	check(s.AddPending(ctx, store.AddParams{Keys: []store.NewKey{nk(13)}, Now: at(6)}))
	check(s.FailDeposit(store.WithActor(ctx, "depositor"), pk(13), "reverted", at(7)))
	// pod-c takes k3 and releases it until at(3600): cooling-down.
	_, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-c", PodUID: "uid-c", Want: 1, Now: at(8)})
	check(err)
	_, err = s.Release(store.WithActor(ctx, "pod-watcher"), store.ReleaseParams{Pod: "pod-c", PodUID: "uid-c", Until: at(3600), Now: at(9), Reason: "pod deleted"})
	check(err)
	_, err = s.ReserveIndices(ctx, 8)
	check(err)
	check(s.Bind(ctx, "kek", "fingerprint-v6"))
	// k1 and k3 are active, k4 waits for activation.
	reading := func(i int, status string) store.ValidatorReading {
		return store.ValidatorReading{Pubkey: pk(i), Status: store.ValidatorStatus{Index: uint64(i), Status: status,
			Balance: 32e9, ActivationEpoch: 2, ExitEpoch: ^uint64(0), Epoch: 3, At: at(10)}}
	}
	_, err = s.RecordValidators(ctx, []store.ValidatorReading{
		reading(1, store.StatusActiveOngoing), reading(3, store.StatusActiveOngoing), reading(4, store.StatusPendingQueued),
	}, at(10))
	check(err)
}
