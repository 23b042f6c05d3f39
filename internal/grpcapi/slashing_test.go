package grpcapi

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// protLister is a fakeLister that also holds stored watermarks.
type protLister struct {
	*fakeLister
	prot map[store.Pubkey]store.Protection
}

func (p protLister) Protections(_ context.Context, pks []store.Pubkey) (map[store.Pubkey]store.Protection, error) {
	out := map[store.Pubkey]store.Protection{}
	for _, pk := range pks {
		if w, ok := p.prot[pk]; ok {
			out[pk] = w
		}
	}
	return out, nil
}

var spChain = slashing.Chain{
	GenesisValidatorsRoot: [32]byte{0x21, 0x2f, 0x13},
	GenesisTime:           time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	SecondsPerSlot:        12 * time.Second,
	SlotsPerEpoch:         32,
}

func spCustody(keys protLister) *slashing.Custody {
	return slashing.NewCustody(func() (slashing.Chain, error) { return spChain, nil }, keys)
}

// spFile is an interchange for the given chain root with one entry per key.
func spFile(version string, root [32]byte, entries ...string) []byte {
	return fmt.Appendf(nil, `{"metadata":{"interchange_format_version":%q,"genesis_validators_root":%q},"data":[%s]}`,
		version, slashing.FormatRoot(root), strings.Join(entries, ","))
}

func spEntry(pk store.Pubkey, slot, source, target int) string {
	return fmt.Sprintf(`{"pubkey":%q,"signed_blocks":[{"slot":"%d"}],"signed_attestations":[{"source_epoch":"%d","target_epoch":"%d"}]}`,
		pk.String(), slot, source, target)
}

func TestReleaseKeysWithSlashingProtection(t *testing.T) {
	held, other := testKey(1).Pubkey, testKey(2).Pubkey
	lister := protLister{fakeLister: &fakeLister{keys: []store.Key{
		{Pubkey: held, State: store.StateAssigned, Pod: "validator-0"},
		{Pubkey: other, State: store.StateAssigned, Pod: "validator-1"},
	}}}
	fa := &fakeAllocator{release: func(ctx context.Context, pod, uid string) (allocator.ReleaseResult, error) {
		return allocator.ReleaseResult{Released: 1, CoolingUntil: time.Now().Add(time.Hour)}, nil
	}}
	client := pkmanagerv1.NewKeyServiceClient(serve(t, Config{Allocator: fa, Keys: lister, Slashing: spCustody(lister)}))
	ctx := testCtx(t)

	resp, err := client.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-0",
		SlashingProtection: spFile("5", spChain.GenesisValidatorsRoot, spEntry(held, 900, 20, 21))})
	if err != nil {
		t.Fatal(err)
	}
	want := store.Protection{HasBlock: true, BlockSlot: 900, HasAttestation: true, SourceEpoch: 20, TargetEpoch: 21}
	if len(fa.prot) != 1 || fa.prot[held] != want {
		t.Fatalf("allocator got watermarks %+v, want %s: %+v", fa.prot, held, want)
	}
	if !strings.Contains(resp.GetMessage(), "slashing-protection history of 1 key recorded") {
		t.Errorf("message %q", resp.GetMessage())
	}

	// Bad files are refused before anything is released, with the reason.
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"another pod's key", spFile("5", spChain.GenesisValidatorsRoot, spEntry(other, 1, 1, 1)), "pod validator-0 does not hold this key"},
		{"wrong chain", spFile("5", [32]byte{9}, spEntry(held, 1, 1, 1)), "is another chain's"},
		{"format 4", spFile("4", spChain.GenesisValidatorsRoot, spEntry(held, 1, 1, 1)), `version "4" is not supported`},
		{"source after target", spFile("5", spChain.GenesisValidatorsRoot, spEntry(held, 1, 5, 4)), "source epoch 5 is after target epoch 4"},
		{"not JSON", []byte("slashing_protection.json"), "want a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fa.Calls())
			_, err := client.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-0", SlashingProtection: tc.file})
			st := wantCode(t, err, codes.InvalidArgument)
			if !strings.Contains(st.Message(), tc.want) || !strings.Contains(st.Message(), "invalid slashing-protection interchange") {
				t.Errorf("message %q does not say %q", st.Message(), tc.want)
			}
			if calls := fa.Calls(); len(calls) != before {
				t.Errorf("the allocator was called: %v", calls[before:])
			}
		})
	}
	// A bad pod name is reported as such, not as a file problem.
	_, err = client.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "Bad_Pod", SlashingProtection: spFile("5", spChain.GenesisValidatorsRoot)})
	if st := wantCode(t, err, codes.InvalidArgument); !strings.Contains(st.Message(), "not a valid Kubernetes name") {
		t.Errorf("bad pod: %q", st.Message())
	}

	// A server without chain parameters refuses uploads and says why; a
	// release without one still works.
	fa2 := &fakeAllocator{release: fa.release}
	client2 := pkmanagerv1.NewKeyServiceClient(serve(t, Config{Allocator: fa2, Keys: lister}))
	_, err = client2.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-0",
		SlashingProtection: spFile("5", spChain.GenesisValidatorsRoot, spEntry(held, 1, 1, 1))})
	if st := wantCode(t, err, codes.FailedPrecondition); !strings.Contains(st.Message(), "chain parameters unknown") {
		t.Errorf("unknown chain: %q", st.Message())
	}
	if len(fa2.Calls()) != 0 {
		t.Errorf("released despite the refused upload: %v", fa2.Calls())
	}
	if _, err := client2.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-0"}); err != nil || fa2.prot != nil {
		t.Fatalf("plain release: %v %v", err, fa2.prot)
	}
}

func TestRequestKeysCarriesSlashingProtection(t *testing.T) {
	released := spChain.GenesisTime.Add(50*32*12*time.Second + 3*12*time.Second) // epoch 50, slot 1603
	uploaded, recycled, fresh := testKey(0), testKey(1), testKey(2)
	uploaded.ReleasedAt, recycled.ReleasedAt = released, released
	lister := protLister{fakeLister: &fakeLister{}, prot: map[store.Pubkey]store.Protection{
		uploaded.Pubkey: {HasBlock: true, BlockSlot: 5000, HasAttestation: true, SourceEpoch: 150, TargetEpoch: 156},
	}}
	fa := &fakeAllocator{request: func(context.Context, string, string, int) (allocator.Result, error) {
		return allocator.Result{Keys: []allocator.Key{uploaded, recycled, fresh}}, nil
	}}
	client := pkmanagerv1.NewKeyServiceClient(serve(t, Config{Allocator: fa, Keys: lister, Slashing: spCustody(lister)}))
	ctx := testCtx(t)
	resp, err := client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-9", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.GetGenesisValidatorsRoot(), spChain.GenesisValidatorsRoot[:]) {
		t.Fatalf("genesis validators root %x", resp.GetGenesisValidatorsRoot())
	}
	got, err := slashing.Parse(resp.GetSlashingProtection(), spChain.GenesisValidatorsRoot, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, resp.GetSlashingProtection())
	}
	want := map[store.Pubkey]store.Protection{
		uploaded.Pubkey: {HasBlock: true, BlockSlot: 5000, HasAttestation: true, SourceEpoch: 150, TargetEpoch: 156},
		recycled.Pubkey: {HasBlock: true, BlockSlot: 1603, HasAttestation: true, SourceEpoch: 50, TargetEpoch: 50},
	}
	if len(got) != len(want) || got[uploaded.Pubkey] != want[uploaded.Pubkey] || got[recycled.Pubkey] != want[recycled.Pubkey] {
		t.Fatalf("interchange %+v, want %+v (no entry for the key that never had a holder)", got, want)
	}

	// Fresh keys only: no interchange, the chain is still named.
	fa.request = func(context.Context, string, string, int) (allocator.Result, error) {
		return allocator.Result{Keys: []allocator.Key{fresh}}, nil
	}
	resp, err = client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-8"})
	if err != nil || len(resp.GetSlashingProtection()) != 0 || len(resp.GetGenesisValidatorsRoot()) != 32 {
		t.Fatalf("fresh keys: %v, %d bytes, root %x", err, len(resp.GetSlashingProtection()), resp.GetGenesisValidatorsRoot())
	}

	// Without chain parameters: neither.
	fa.request = func(context.Context, string, string, int) (allocator.Result, error) {
		return allocator.Result{Keys: []allocator.Key{uploaded}}, nil
	}
	client2 := pkmanagerv1.NewKeyServiceClient(serve(t, Config{Allocator: fa, Keys: lister}))
	resp, err = client2.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-7"})
	if err != nil || len(resp.GetSlashingProtection()) != 0 || len(resp.GetGenesisValidatorsRoot()) != 0 || len(resp.GetKeys()) != 1 {
		t.Fatalf("unknown chain: %v %v", err, resp)
	}
}
