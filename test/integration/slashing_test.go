package integration

import (
	"context"
	"crypto/sha256"
	bin "encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// spRecord is one key's signing history in a test interchange.
type spRecord struct {
	pubkey                    string
	slot, source, target      uint64
	extraSlot, extraAttSource uint64 // an older block and attestation, to make it a complete-form file
	extraAttTarget            uint64
	withRoots                 bool
}

// spFile writes an interchange of version for the chain root.
func spFile(t *testing.T, dir, name, version string, root [32]byte, recs ...spRecord) string {
	t.Helper()
	var entries []string
	for _, r := range recs {
		sr := ""
		if r.withRoots {
			sr = fmt.Sprintf(`,"signing_root":"0x%064x"`, r.slot)
		}
		entries = append(entries, fmt.Sprintf(`{"pubkey":%q,"signed_blocks":[{"slot":"%d"%s},{"slot":"%d"}],`+
			`"signed_attestations":[{"source_epoch":"%d","target_epoch":"%d"},{"source_epoch":"%d","target_epoch":"%d"%s}]}`,
			r.pubkey, r.extraSlot, "", r.slot, r.extraAttSource, r.extraAttTarget, r.source, r.target, sr))
	}
	doc := fmt.Sprintf(`{"metadata":{"interchange_format_version":%q,"genesis_validators_root":%q},"data":[%s]}`,
		version, slashing.FormatRoot(root), strings.Join(entries, ",\n"))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A pod's validator client history travels with its keys: pod A releases
// with its interchange, pod B gets the same keys and, in
// OUT/slashing_protection.json, at least A's watermarks and those of the
// release moment. Bad files are refused and A keeps its keys.
func TestSlashingProtectionHandoff(t *testing.T) {
	// A dev chain whose clock began 30 days ago, so that release-time
	// watermarks are far from zero.
	genesis := time.Now().Add(-30 * 24 * time.Hour).Truncate(time.Second)
	s := startServer(t, t.TempDir(), "--reuse-delay", "0s", "--dev-genesis-time", strconv.FormatInt(genesis.Unix(), 10))
	work := t.TempDir()
	slotAt := func(tm time.Time) uint64 { return uint64(tm.Sub(genesis) / (12 * time.Second)) }

	outA := filepath.Join(work, "a")
	msg, _ := request(t, s, "pod-a", 2, outA)
	if !strings.Contains(msg, "no slashing-protection history (the keys had no holder before)") {
		t.Fatalf("new keys: %s", msg)
	}
	if _, err := os.Stat(filepath.Join(outA, "slashing_protection.json")); !os.IsNotExist(err) {
		t.Fatalf("new keys got a slashing_protection.json: %v", err)
	}
	aKeys := s.assignments(t)["pod-a"]
	if len(aKeys) != 2 {
		t.Fatalf("pod-a holds %v", aKeys)
	}
	request(t, s, "pod-c", 1, filepath.Join(work, "c"))
	cKey := s.assignments(t)["pod-c"][0]

	// The chain the server names: the dev chain's made-up root (README).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api := pb.NewKeyServiceClient(dial(t, s.grpcAddr))
	resp, err := api.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: "pod-a", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte("pkmanager dev chain"))
	h.Write([]byte{0x10, 0x00, 0x00, 0x38})
	h.Write(bin.BigEndian.AppendUint64(nil, uint64(genesis.Unix())))
	var gvr [32]byte
	h.Sum(gvr[:0])
	if string(resp.GetGenesisValidatorsRoot()) != string(gvr[:]) || len(resp.GetSlashingProtection()) != 0 {
		t.Fatalf("genesis validators root %x (want %x), %d bytes of history", resp.GetGenesisValidatorsRoot(), gvr, len(resp.GetSlashingProtection()))
	}

	// A's validator client: key 0 signed far ahead of the chain's clock
	// (its clock ran fast), key 1 only long ago.
	now := slotAt(time.Now())
	a0 := spRecord{pubkey: aKeys[0], slot: now + 100_000, source: now/32 + 3000, target: now/32 + 3001,
		extraSlot: 7, extraAttSource: 1, extraAttTarget: 2, withRoots: true}
	a1 := spRecord{pubkey: aKeys[1], slot: 5, source: 0, target: 1, extraSlot: 3, extraAttSource: 0, extraAttTarget: 0}
	good := spFile(t, work, "a.json", "5", gvr, a0, a1)

	var mainnetRoot [32]byte
	copy(mainnetRoot[:], mustHex(t, "4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"))
	for _, tc := range []struct {
		name, file, want string
	}{
		{"another chain", spFile(t, work, "mainnet.json", "5", mainnetRoot, a0, a1), "is another chain's"},
		{"a key A does not hold", spFile(t, work, "c.json", "5", gvr, a0, spRecord{pubkey: cKey, slot: 1, target: 1}), "pod pod-a does not hold this key"},
		{"source after target", spFile(t, work, "st.json", "5", gvr, a0, spRecord{pubkey: aKeys[1], slot: 9, source: 8, target: 7}), "source epoch 8 is after target epoch 7"},
		{"format 4", spFile(t, work, "v4.json", "4", gvr, a0, a1), `version "4" is not supported`},
	} {
		out, err := run(t, "release", "--server", s.grpcAddr, "--pod-name", "pod-a", "--slashing-protection", tc.file)
		if err == nil || !strings.Contains(out, "invalid slashing-protection interchange") || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: %v, want a refusal saying %q:\n%s", tc.name, err, tc.want, out)
		}
		if got := s.assignments(t)["pod-a"]; !equalStrings(got, aKeys) {
			t.Fatalf("%s: a refused release changed pod-a's keys: %v", tc.name, got)
		}
	}

	before := time.Now()
	out := mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "pod-a", "--slashing-protection", good)
	after := time.Now()
	if !strings.Contains(out, "released 2 keys of pod pod-a") || !strings.Contains(out, "slashing-protection history of 2 keys recorded") {
		t.Fatalf("release: %s", out)
	}

	// Pod B gets A's keys (reuse delay 0) with their history.
	outB := filepath.Join(work, "b")
	msg, _ = request(t, s, "pod-b", 2, outB)
	if got := s.assignments(t)["pod-b"]; !equalStrings(got, aKeys) {
		t.Fatalf("pod-b holds %v, want pod-a's %v", got, aKeys)
	}
	spPath := filepath.Join(outB, "slashing_protection.json")
	if !strings.Contains(msg, "slashing-protection history of 2 keys in "+spPath) {
		t.Fatalf("request summary: %s", msg)
	}
	fi, err := os.Stat(spPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", spPath, fi, err)
	}
	data, err := os.ReadFile(spPath)
	if err != nil {
		t.Fatal(err)
	}
	marks, err := slashing.Parse(data, gvr, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	relLo, relHi := slotAt(before), slotAt(after)+1
	pk := func(s string) store.Pubkey {
		p, err := store.ParsePubkey(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if w := marks[pk(aKeys[0])]; !w.HasBlock || w.BlockSlot != a0.slot || !w.HasAttestation || w.SourceEpoch != a0.source || w.TargetEpoch != a0.target {
		t.Errorf("key 0: %+v, want A's watermarks %d %d->%d (above the release moment)", w, a0.slot, a0.source, a0.target)
	}
	// Key 1: A's history is older than the release: the release moment
	// (a block at the release slot, source = target = release epoch).
	if w := marks[pk(aKeys[1])]; !w.HasBlock || w.BlockSlot < relLo || w.BlockSlot > relHi || !w.HasAttestation ||
		w.SourceEpoch != w.TargetEpoch || w.TargetEpoch < relLo/32 || w.TargetEpoch > relHi/32 {
		t.Errorf("key 1: %+v, want release-time watermarks at slot %d..%d", w, relLo, relHi)
	}
	if len(marks) != 2 {
		t.Errorf("interchange covers %d keys, want pod-b's 2", len(marks))
	}

	// The HTTP API answers the same history.
	r, err := http.Post("http://"+s.httpAddr+"/api/v1/keys/request", "application/json", strings.NewReader(`{"pod_name":"pod-b","count":2}`))
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		GVR string          `json:"genesis_validators_root"`
		SP  json.RawMessage `json:"slashing_protection"`
	}
	err = json.NewDecoder(r.Body).Decode(&body)
	r.Body.Close()
	if err != nil || r.StatusCode != 200 || body.GVR != slashing.FormatRoot(gvr) {
		t.Fatalf("HTTP request: %d %v %+v", r.StatusCode, err, body)
	}
	if hm, err := slashing.Parse(body.SP, gvr, nil); err != nil || len(hm) != 2 || hm[pk(aKeys[0])] != marks[pk(aKeys[0])] || hm[pk(aKeys[1])] != marks[pk(aKeys[1])] {
		t.Fatalf("HTTP interchange %+v %v, want %+v", hm, err, marks)
	}

	// Pod B leaves without uploading; pod D still gets both keys with at
	// least what B's file held.
	mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "pod-b")
	outD := filepath.Join(work, "d")
	request(t, s, "pod-d", 2, outD)
	dData, err := os.ReadFile(filepath.Join(outD, "slashing_protection.json"))
	if err != nil {
		t.Fatal(err)
	}
	dMarks, err := slashing.Parse(dData, gvr, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pub, w := range marks {
		d := dMarks[pub]
		if d.BlockSlot < w.BlockSlot || d.SourceEpoch < w.SourceEpoch || d.TargetEpoch < w.TargetEpoch {
			t.Errorf("key %s: pod-d's watermarks %+v are below pod-b's %+v", pub, d, w)
		}
	}

	// When pod D's keys change to new ones, the stale history goes.
	mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "pod-d")
	// Two fresh keys (the recycled ones went to pod-e first).
	request(t, s, "pod-e", 2, filepath.Join(work, "e"))
	msg, _ = request(t, s, "pod-d", 1, outD)
	if !strings.Contains(msg, "stale "+filepath.Join(outD, "slashing_protection.json")+" removed") {
		t.Fatalf("stale history: %s", msg)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	var b []byte
	for i := 0; i+1 < len(s); i += 2 {
		v, err := strconv.ParseUint(s[i:i+2], 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, byte(v))
	}
	return b
}
