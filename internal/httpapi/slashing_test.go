package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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
	GenesisValidatorsRoot: [32]byte{0x4b, 0x36, 0x3d},
	GenesisTime:           time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	SecondsPerSlot:        12 * time.Second,
	SlotsPerEpoch:         32,
}

func spHandler(t *testing.T, alloc *fakeAllocator, keys protLister, known bool) http.Handler {
	t.Helper()
	cfg := Config{Allocator: alloc, Keys: keys, Logger: quietLogger(t)}
	if known {
		cfg.Slashing = slashing.NewCustody(func() (slashing.Chain, error) { return spChain, nil }, keys)
	}
	return NewHandler(cfg)
}

// spInterchange is an interchange object with one entry per key.
func spInterchange(version string, root [32]byte, entries ...string) string {
	return fmt.Sprintf(`{"metadata":{"interchange_format_version":%q,"genesis_validators_root":%q},"data":[%s]}`,
		version, slashing.FormatRoot(root), strings.Join(entries, ","))
}

func spEntry(pub store.Pubkey, slot, source, target int) string {
	return fmt.Sprintf(`{"pubkey":%q,"signed_blocks":[{"slot":"%d"}],"signed_attestations":[{"source_epoch":"%d","target_epoch":"%d"}]}`,
		pub.String(), slot, source, target)
}

func TestReleaseWithSlashingProtection(t *testing.T) {
	held, other := pk(0xc1, 1), pk(0xc1, 2)
	keys := protLister{fakeLister: &fakeLister{keys: []store.Key{
		{Pubkey: held, State: store.StateAssigned, Pod: "validator-0"},
		{Pubkey: other, State: store.StateAssigned, Pod: "validator-1"},
	}}}
	alloc := &fakeAllocator{release: allocator.ReleaseResult{Released: 1, CoolingUntil: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}}
	h := spHandler(t, alloc, keys, true)

	body := `{"pod_name":"validator-0","slashing_protection":` + spInterchange("5", spChain.GenesisValidatorsRoot, spEntry(held, 700, 10, 11)) + `}`
	rec := do(t, h, "POST", "/api/v1/keys/release", body)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got releaseResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := store.Protection{HasBlock: true, BlockSlot: 700, HasAttestation: true, SourceEpoch: 10, TargetEpoch: 11}
	if got.SlashingProtectionKeys != 1 || len(alloc.prot) != 1 || alloc.prot[held] != want {
		t.Fatalf("answer %+v, allocator got %+v", got, alloc.prot)
	}
	// No upload, or null: a plain release.
	for _, b := range []string{`{"pod_name":"validator-0"}`, `{"pod_name":"validator-0","slashing_protection":null}`} {
		if rec := do(t, h, "POST", "/api/v1/keys/release", b); rec.Code != 200 || alloc.prot != nil || strings.Contains(rec.Body.String(), "slashing_protection_keys") {
			t.Fatalf("%s: %d %s, allocator got %v", b, rec.Code, rec.Body, alloc.prot)
		}
	}

	for _, tc := range []struct {
		name, sp, want string
	}{
		{"another pod's key", spInterchange("5", spChain.GenesisValidatorsRoot, spEntry(other, 1, 1, 1)), "pod validator-0 does not hold this key"},
		{"wrong chain", spInterchange("5", [32]byte{1}, spEntry(held, 1, 1, 1)), "is another chain's"},
		{"format 4", spInterchange("4", spChain.GenesisValidatorsRoot, spEntry(held, 1, 1, 1)), `version \"4\" is not supported`},
		{"source after target", spInterchange("5", spChain.GenesisValidatorsRoot, spEntry(held, 1, 3, 2)), "source epoch 3 is after target epoch 2"},
		{"a string, not the object", `"slashing_protection.json"`, "want a JSON object, got a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := alloc.callCount()
			rec := do(t, h, "POST", "/api/v1/keys/release", `{"pod_name":"validator-0","slashing_protection":`+tc.sp+`}`)
			if rec.Code != 400 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			e := decodeError(t, rec)
			if e.Error.Code != "invalid_argument" || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("error %s does not say %q", rec.Body, tc.want)
			}
			if alloc.callCount() != before {
				t.Error("the allocator was called")
			}
		})
	}

	// An interchange larger than the general 1 MiB body limit is fine.
	var entries []string
	for i := range 5000 {
		entries = append(entries, fmt.Sprintf(`{"slot":"%d","signing_root":"0x%064x"}`, i, i))
	}
	big := spInterchange("5", spChain.GenesisValidatorsRoot,
		fmt.Sprintf(`{"pubkey":%q,"signed_blocks":[%s],"signed_attestations":[]}`, held.String(), strings.Join(entries, ",")))
	big = strings.Replace(big, `"data"`, `"padding":"`+strings.Repeat("x", MaxBodyBytes)+`","data"`, 1)
	if rec := do(t, h, "POST", "/api/v1/keys/release", `{"pod_name":"validator-0","slashing_protection":`+big+`}`); rec.Code != 200 || alloc.prot[held].BlockSlot != 4999 {
		t.Fatalf("large interchange: %d %s", rec.Code, rec.Body)
	}

	// Without chain parameters an upload is refused (409), a plain
	// release is not.
	alloc2 := &fakeAllocator{release: alloc.release}
	h2 := spHandler(t, alloc2, keys, false)
	rec = do(t, h2, "POST", "/api/v1/keys/release", body)
	if e := decodeError(t, rec); rec.Code != 409 || e.Error.Code != "slashing_chain_unknown" || !strings.Contains(e.Error.Message, "chain parameters unknown") {
		t.Fatalf("unknown chain: %d %s", rec.Code, rec.Body)
	}
	if alloc2.callCount() != 0 {
		t.Fatal("released despite the refused upload")
	}
	if rec := do(t, h2, "POST", "/api/v1/keys/release", `{"pod_name":"validator-0"}`); rec.Code != 200 {
		t.Fatalf("plain release: %d %s", rec.Code, rec.Body)
	}
}

func TestRequestKeysCarriesSlashingProtection(t *testing.T) {
	released := spChain.GenesisTime.Add(7*32*12*time.Second + 12*time.Second) // epoch 7, slot 225
	keysOut := []allocator.Key{
		{Pubkey: pk(0xd1, 1), Secret: markerSecret, Origin: store.OriginRandom, ReleasedAt: released},
		{Pubkey: pk(0xd1, 2), Secret: markerSecret, Origin: store.OriginRandom},
	}
	keys := protLister{fakeLister: &fakeLister{}, prot: map[store.Pubkey]store.Protection{
		pk(0xd1, 1): {HasBlock: true, BlockSlot: 100, HasAttestation: true, SourceEpoch: 2, TargetEpoch: 9},
	}}
	alloc := &fakeAllocator{result: allocator.Result{Keys: keysOut}}
	rec := do(t, spHandler(t, alloc, keys, true), "POST", "/api/v1/keys/request", `{"pod_name":"validator-0","count":2}`)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got struct {
		Keys                  []json.RawMessage `json:"keys"`
		GenesisValidatorsRoot string            `json:"genesis_validators_root"`
		SlashingProtection    json.RawMessage   `json:"slashing_protection"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if got.GenesisValidatorsRoot != slashing.FormatRoot(spChain.GenesisValidatorsRoot) || len(got.Keys) != 2 {
		t.Fatalf("answer %s", rec.Body)
	}
	marks, err := slashing.Parse(got.SlashingProtection, spChain.GenesisValidatorsRoot, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Protection{HasBlock: true, BlockSlot: 225, HasAttestation: true, SourceEpoch: 7, TargetEpoch: 9}
	if len(marks) != 1 || marks[pk(0xd1, 1)] != want {
		t.Fatalf("watermarks %+v, want %+v for the released key only", marks, want)
	}
	for _, s := range alloc.handed {
		if strings.Trim(string(s), "\x00") != "" {
			t.Fatal("a secret was not wiped after the answer")
		}
	}

	// Without chain parameters neither field is there.
	rec = do(t, spHandler(t, alloc, keys, false), "POST", "/api/v1/keys/request", `{"pod_name":"validator-0","count":2}`)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "slashing_protection") || strings.Contains(rec.Body.String(), "genesis_validators_root") {
		t.Fatalf("unknown chain: %d %s", rec.Code, rec.Body)
	}
}
