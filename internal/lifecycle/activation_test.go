package lifecycle_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/store"
)

func activationHistogram(t *testing.T, reg *prometheus.Registry) (count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pkmanager_validator_activation_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no pkmanager_validator_activation_seconds")
	return 0, 0
}

// TestActivationTime: the time from the deposit this server sent to the
// activation epoch's start is observed once, when the beacon node first
// shows the validator active; a key deposited elsewhere (no transaction of
// this store) and later refreshes add nothing.
func TestActivationTime(t *testing.T) {
	e := newEnv(t, 1, false) // k0: available, deposited elsewhere
	ctx := t.Context()
	sk, err := keys.GenerateRandom()
	if err != nil {
		t.Fatal(err)
	}
	pk := sk.PublicKey()
	sent := e.chain.EpochStart(990)
	if err := e.st.AddPending(ctx, store.AddParams{Keys: []store.NewKey{{Pubkey: pk, SealedSecret: sk.Bytes(), Origin: store.OriginRandom}}, Now: sent}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetDepositTx(ctx, pk, store.DepositTx{Nonce: 0, Hash: [32]byte{1}, Raw: []byte{1}}, sent); err != nil {
		t.Fatal(err)
	}
	e.fake.AddValidator(e.pk(0), 10)
	e.fake.AddValidator(pk, 11)
	e.fake.SetEpochs(10, beacon.FarFutureEpoch, beacon.FarFutureEpoch)
	e.fake.SetEpochs(11, beacon.FarFutureEpoch, beacon.FarFutureEpoch)
	if _, err := e.w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := activationHistogram(t, e.reg); n != 0 {
		t.Fatalf("%d activations observed before any validator is active", n)
	}
	e.fake.SetEpochs(10, 998, beacon.FarFutureEpoch)
	e.fake.SetEpochs(11, 998, beacon.FarFutureEpoch)
	for range 3 {
		if _, err := e.w.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n, sum := activationHistogram(t, e.reg)
	if want := (8 * 32 * 12 * time.Second).Seconds(); n != 1 || sum != want {
		t.Fatalf("activations observed %d (sum %v s), want 1 of %v s", n, sum, want)
	}
}
