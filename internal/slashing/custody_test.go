package slashing

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// fakeStore holds keys and stored watermarks.
type fakeStore struct {
	keys  []store.Key
	prot  map[store.Pubkey]store.Protection
	err   error
	lists []store.ListOptions
}

func (f *fakeStore) ListKeys(_ context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	f.lists = append(f.lists, opts)
	if f.err != nil {
		return f.err
	}
	for _, k := range f.keys {
		if opts.Pod != "" && k.Pod != opts.Pod {
			continue
		}
		if len(opts.States) > 0 && !containsState(opts.States, k.State) {
			continue
		}
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

func containsState(states []store.State, s store.State) bool {
	for _, v := range states {
		if v == s {
			return true
		}
	}
	return false
}

func (f *fakeStore) Protections(_ context.Context, pks []store.Pubkey) (map[store.Pubkey]store.Protection, error) {
	if f.err != nil {
		return nil, f.err
	}
	out := map[store.Pubkey]store.Protection{}
	for _, pk := range pks {
		if p, ok := f.prot[pk]; ok {
			out[pk] = p
		}
	}
	return out, nil
}

var testChain = Chain{
	GenesisValidatorsRoot: eipRoot,
	GenesisTime:           time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	SecondsPerSlot:        12 * time.Second,
	SlotsPerEpoch:         32,
}

func knownChain() (Chain, error) { return testChain, nil }

func unknownChain() (Chain, error) {
	return Chain{}, fmt.Errorf("%w for network devnet-7: run on a known network", ErrChainUnknown)
}

func TestCustodyUpload(t *testing.T) {
	st := &fakeStore{keys: []store.Key{
		{Pubkey: pkA, State: store.StateAssigned, Pod: "validator-0"},
		{Pubkey: pkB, State: store.StateAssigned, Pod: "validator-1"},
		{Pubkey: pkC, State: store.StatePendingDeposit, Pod: "validator-0"},
	}}
	c := NewCustody(knownChain, st)
	ctx := context.Background()
	good := interchange("5", FormatRoot(eipRoot), entry(pkA, `{"slot":"100"}`, `{"source_epoch":"2","target_epoch":"3"}`))

	got, err := c.Upload(ctx, "validator-0", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if want := (map[store.Pubkey]Watermarks{pkA: {HasBlock: true, BlockSlot: 100, HasAttestation: true, SourceEpoch: 2, TargetEpoch: 3}}); !maps.Equal(got, want) {
		t.Fatalf("got %+v", got)
	}
	if o := st.lists[len(st.lists)-1]; o.Pod != "validator-0" || len(o.States) != 1 || o.States[0] != store.StateAssigned {
		t.Fatalf("listed %+v, want the pod's assigned keys", o)
	}
	if got, err := c.Upload(ctx, "validator-0", []byte(" \n")); got != nil || err != nil {
		t.Fatalf("empty upload: %v %v", got, err)
	}

	for _, tc := range []struct {
		name, pod, file, want string
	}{
		{"another pod's key", "validator-0", interchange("5", FormatRoot(eipRoot), entry(pkB, `{"slot":"1"}`, "")),
			"release pod validator-0: invalid slashing-protection interchange: data[0].pubkey: key " + pkB.String() + ": pod validator-0 does not hold this key (it holds 1)"},
		{"a pending key is not held", "validator-0", interchange("5", FormatRoot(eipRoot), entry(pkC, `{"slot":"1"}`, "")), "does not hold this key"},
		{"a pod holding nothing", "validator-9", good, "pod validator-9 does not hold this key: it holds no keys (released already?)"},
		{"wrong chain", "validator-0", interchange("5", zeroRoot, entry(pkA, `{"slot":"1"}`, "")), "is another chain's"},
		{"format 4", "validator-0", interchange("4", FormatRoot(eipRoot), entry(pkA, `{"slot":"1"}`, "")), `version "4" is not supported`},
		{"source after target", "validator-0", interchange("5", FormatRoot(eipRoot), entry(pkA, "", `{"source_epoch":"9","target_epoch":"3"}`)), "source epoch 9 is after target epoch 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Upload(ctx, tc.pod, []byte(tc.file))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}

	// Without chain parameters an upload cannot be checked: refused, and
	// the error says why.
	for _, c := range []*Custody{NewCustody(unknownChain, st), nil} {
		_, err := c.Upload(ctx, "validator-0", []byte(good))
		if !errors.Is(err, ErrChainUnknown) || !strings.Contains(err.Error(), "release pod validator-0 with a slashing-protection interchange") {
			t.Fatalf("unknown chain: %v", err)
		}
	}
	// A store failure is not the file's fault.
	st.err = errors.New("disk on fire")
	if _, err := c.Upload(ctx, "validator-0", []byte(good)); err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("store failure: %v", err)
	}
}

func TestCustodyForRequest(t *testing.T) {
	released := testChain.GenesisTime.Add(100*32*12*time.Second + 5*12*time.Second) // epoch 100, slot 3205
	st := &fakeStore{prot: map[store.Pubkey]store.Protection{
		// pkA's holder uploaded history ahead of the release time (its
		// clock ran fast): kept.
		pkA: {HasBlock: true, BlockSlot: 9000, HasAttestation: true, SourceEpoch: 150, TargetEpoch: 151},
		// pkB's upload is older than its release: the release time wins.
		pkB: {HasBlock: true, BlockSlot: 10, HasAttestation: true, SourceEpoch: 1, TargetEpoch: 2},
	}}
	c := NewCustody(knownChain, st)
	ctx := context.Background()
	fresh := mustPubkey("0x" + strings.Repeat("ab", 48))
	exp, err := c.ForRequest(ctx, []Handed{
		{Pubkey: pkA, ReleasedAt: released},
		{Pubkey: pkB, ReleasedAt: released},
		{Pubkey: pkC, ReleasedAt: released}, // released, never uploaded
		{Pubkey: fresh},                     // never had a holder
	})
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Known || exp.GenesisValidatorsRoot != eipRoot || exp.Keys != 3 {
		t.Fatalf("export %+v", exp)
	}
	got, err := Parse(exp.Interchange, eipRoot, nil)
	if err != nil {
		t.Fatalf("the export does not parse: %v\n%s", err, exp.Interchange)
	}
	atRelease := Watermarks{HasBlock: true, BlockSlot: 3205, HasAttestation: true, SourceEpoch: 100, TargetEpoch: 100}
	want := map[store.Pubkey]Watermarks{
		pkA: {HasBlock: true, BlockSlot: 9000, HasAttestation: true, SourceEpoch: 150, TargetEpoch: 151},
		pkB: atRelease,
		pkC: atRelease,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	// Keys that never had a holder: no interchange, but the chain is named.
	exp, err = c.ForRequest(ctx, []Handed{{Pubkey: fresh}})
	if err != nil || exp.Interchange != nil || exp.Keys != 0 || !exp.Known || exp.GenesisValidatorsRoot != eipRoot {
		t.Fatalf("fresh keys: %+v %v", exp, err)
	}
	// Stored history without a recorded release still counts (a restored
	// store, an import).
	st.prot[fresh] = Watermarks{HasBlock: true, BlockSlot: 1}
	if exp, err = c.ForRequest(ctx, []Handed{{Pubkey: fresh}}); err != nil || exp.Keys != 1 {
		t.Fatalf("stored history of a key never released: %+v %v", exp, err)
	}

	// Without chain parameters: nothing (no genesis validators root to
	// name, no clock for release-time watermarks).
	for _, c := range []*Custody{NewCustody(unknownChain, st), nil} {
		exp, err := c.ForRequest(ctx, []Handed{{Pubkey: pkA, ReleasedAt: released}})
		if err != nil || exp.Known || exp.Interchange != nil {
			t.Fatalf("unknown chain: %+v %v", exp, err)
		}
	}
	// A store failure fails the request: keys without their history
	// are not handed out.
	st.err = errors.New("disk on fire")
	if _, err := c.ForRequest(ctx, []Handed{{Pubkey: pkA, ReleasedAt: released}}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("store failure: %v", err)
	}
}
