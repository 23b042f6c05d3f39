package slashing

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The example of EIP-3076 ("Example JSON Instance"), verbatim.
const eipExample = `{
  "metadata": {
    "interchange_format_version": "5",
    "genesis_validators_root": "0x04700007fabc8282644aed6d1c7c9e21d38a03a0c4ba193f3afe428824b3a673"
  },
  "data": [
    {
      "pubkey": "0xb845089a1457f811bfc000588fbb4e713669be8ce060ea6be3c6ece09afc3794106c91ca73acda5e5457122d58723bed",
      "signed_blocks": [
        {
          "slot": "81952",
          "signing_root": "0x4ff6f743a43f3b4f95350831aeaf0a122a1a392922c45d804280284a69eb850b"
        },
        {
          "slot": "81951"
        }
      ],
      "signed_attestations": [
        {
          "source_epoch": "2290",
          "target_epoch": "3007",
          "signing_root": "0x587d6a4f59a58fe24f406e0502413e77fe1babddee641fda30034ed37ecc884d"
        },
        {
          "source_epoch": "2290",
          "target_epoch": "3008"
        }
      ]
    }
  ]
}`

var (
	eipRoot   = mustRoot("0x04700007fabc8282644aed6d1c7c9e21d38a03a0c4ba193f3afe428824b3a673")
	eipPubkey = mustPubkey("0xb845089a1457f811bfc000588fbb4e713669be8ce060ea6be3c6ece09afc3794106c91ca73acda5e5457122d58723bed")
	// Public keys used by the EIP's conformance tests
	// (eth-clients/slashing-protection-interchange-tests).
	pkA = mustPubkey("0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c")
	pkB = mustPubkey("0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b")
	pkC = mustPubkey("0xa3a32b0f8b4ddb83f1a0a853d81dd725dfe577d4f4c3db8ece52ce2b026eca84815c1a7e8e92a4de3d755733bf7e4a9b")
)

const zeroRoot = "0x0000000000000000000000000000000000000000000000000000000000000000"

func mustRoot(s string) [32]byte {
	r, err := ParseRoot(s)
	if err != nil {
		panic(err)
	}
	return r
}

func mustPubkey(s string) store.Pubkey {
	pk, err := store.ParsePubkey(s)
	if err != nil {
		panic(err)
	}
	return pk
}

func TestParseEIPExample(t *testing.T) {
	got, err := Parse([]byte(eipExample), eipRoot, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[store.Pubkey]Watermarks{eipPubkey: {HasBlock: true, BlockSlot: 81952, HasAttestation: true, SourceEpoch: 2290, TargetEpoch: 3008}}
	if !maps.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// interchange builds an interchange on the zero root from entries written
// as JSON fragments.
func interchange(version, root string, entries ...string) string {
	return fmt.Sprintf(`{"metadata":{"interchange_format_version":%q,"genesis_validators_root":%q},"data":[%s]}`,
		version, root, strings.Join(entries, ","))
}

func entry(pk store.Pubkey, blocks, atts string) string {
	return fmt.Sprintf(`{"pubkey":%q,"signed_blocks":[%s],"signed_attestations":[%s]}`, pk.String(), blocks, atts)
}

func TestParseWatermarks(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want map[store.Pubkey]Watermarks
	}{
		{"no keys", interchange("5", zeroRoot), map[store.Pubkey]Watermarks{}},
		{"a key without history is left out", interchange("5", zeroRoot, entry(pkA, "", "")), map[store.Pubkey]Watermarks{}},
		{"genesis attestation", interchange("5", zeroRoot, entry(pkA, "", `{"source_epoch":"0","target_epoch":"0"}`)),
			map[store.Pubkey]Watermarks{pkA: {HasAttestation: true}}},
		{"blocks only", interchange("5", zeroRoot, entry(pkA, `{"slot":"10"},{"slot":"3"}`, "")),
			map[store.Pubkey]Watermarks{pkA: {HasBlock: true, BlockSlot: 10}}},
		// Maximum source and maximum target, which may come from different
		// attestations (EIP-3076, advice for minimal databases).
		{"max source and max target", interchange("5", zeroRoot, entry(pkA, "",
			`{"source_epoch":"4","target_epoch":"5"},{"source_epoch":"0","target_epoch":"9"},{"source_epoch":"2","target_epoch":"4"}`)),
			map[store.Pubkey]Watermarks{pkA: {HasAttestation: true, SourceEpoch: 4, TargetEpoch: 9}}},
		// The records of one key listed twice are merged (the conformance
		// tests' duplicate_pubkey_not_slashable must import).
		{"duplicate pubkey merged", interchange("5", zeroRoot,
			entry(pkA, `{"slot":"10"},{"slot":"11"}`, `{"source_epoch":"0","target_epoch":"2"}`),
			entry(pkA, `{"slot":"12"},{"slot":"13"}`, `{"source_epoch":"1","target_epoch":"3"}`)),
			map[store.Pubkey]Watermarks{pkA: {HasBlock: true, BlockSlot: 13, HasAttestation: true, SourceEpoch: 1, TargetEpoch: 3}}},
		{"several keys", interchange("5", zeroRoot,
			entry(pkA, `{"slot":"10"},{"slot":"15"},{"slot":"20"}`, `{"source_epoch":"0","target_epoch":"1"},{"source_epoch":"4","target_epoch":"5"}`),
			entry(pkB, `{"slot":"100"}`, ""),
			entry(pkC, "", `{"source_epoch":"1","target_epoch":"2"}`)),
			map[store.Pubkey]Watermarks{
				pkA: {HasBlock: true, BlockSlot: 20, HasAttestation: true, SourceEpoch: 4, TargetEpoch: 5},
				pkB: {HasBlock: true, BlockSlot: 100},
				pkC: {HasAttestation: true, SourceEpoch: 1, TargetEpoch: 2},
			}},
		{"largest numbers", interchange("5", zeroRoot, entry(pkA, `{"slot":"18446744073709551615"}`,
			`{"source_epoch":"18446744073709551615","target_epoch":"18446744073709551615"}`)),
			map[store.Pubkey]Watermarks{pkA: {HasBlock: true, BlockSlot: 1<<64 - 1, HasAttestation: true, SourceEpoch: 1<<64 - 1, TargetEpoch: 1<<64 - 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.file), [32]byte{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// Unknown fields are ignored, hex digits may be upper case, an absent
	// or null signing_root is fine.
	file := `{"metadata":{"interchange_format_version":"5","genesis_validators_root":"` + zeroRoot + `","client":"x"},` +
		`"data":[{"pubkey":"0x` + strings.ToUpper(pkA.String()[2:]) + `","signed_blocks":[{"slot":"1","signing_root":null}],"signed_attestations":[],"extra":1}]}`
	got, err := Parse([]byte(file), [32]byte{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (map[store.Pubkey]Watermarks{pkA: {HasBlock: true, BlockSlot: 1}}); !maps.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestParseRefusesMalformed(t *testing.T) {
	okEntry := entry(pkA, `{"slot":"1"}`, `{"source_epoch":"1","target_epoch":"2"}`)
	withAtt := func(att string) string { return interchange("5", zeroRoot, entry(pkA, "", att)) }
	withBlock := func(block string) string { return interchange("5", zeroRoot, entry(pkA, block, "")) }
	otherRoot := "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"empty", ``, "want a JSON object, got nothing"},
		{"not JSON", `slashing`, "want a JSON object, got something that is not JSON"},
		{"broken JSON", `{"metadata":`, "not valid JSON"},
		{"array", `[]`, "want a JSON object, got an array"},
		{"trailing data", interchange("5", zeroRoot) + `{}`, "not valid JSON"},
		{"no metadata", `{"data":[]}`, "metadata: missing"},
		{"metadata not an object", `{"metadata":"5","data":[]}`, "metadata: want a JSON object, got a string"},
		{"no version", `{"metadata":{"genesis_validators_root":"` + zeroRoot + `"},"data":[]}`, "metadata.interchange_format_version: missing"},
		{"format 4", interchange("4", zeroRoot, okEntry), `metadata.interchange_format_version: version "4" is not supported: only version 5 (EIP-3076) is`},
		{"format 6", interchange("6", zeroRoot, okEntry), `version "6" is not supported`},
		{"version as a number", `{"metadata":{"interchange_format_version":5,"genesis_validators_root":"` + zeroRoot + `"},"data":[]}`,
			"metadata.interchange_format_version: want a string, got a number"},
		{"wrong genesis validators root", interchange("5", otherRoot, okEntry),
			"metadata.genesis_validators_root: " + otherRoot + " is another chain's; this chain's genesis validators root is " + zeroRoot},
		{"root without 0x", interchange("5", zeroRoot[2:]), "want 0x-prefixed hex"},
		{"short root", interchange("5", "0x00"), "want 64 hex digits after 0x, got 2"},
		{"root not hex", interchange("5", "0x"+strings.Repeat("zz", 32)), "not hex"},
		{"no root", `{"metadata":{"interchange_format_version":"5"},"data":[]}`, "metadata.genesis_validators_root: missing"},
		{"no data", `{"metadata":{"interchange_format_version":"5","genesis_validators_root":"` + zeroRoot + `"}}`, "data: missing"},
		{"data null", `{"metadata":{"interchange_format_version":"5","genesis_validators_root":"` + zeroRoot + `"},"data":null}`, "data: missing"},
		{"data an object", `{"metadata":{"interchange_format_version":"5","genesis_validators_root":"` + zeroRoot + `"},"data":{}}`, "data: want an array, got an object"},
		{"entry not an object", interchange("5", zeroRoot, `"x"`), "data[0]: want a JSON object, got a string"},
		{"no pubkey", interchange("5", zeroRoot, `{"signed_blocks":[],"signed_attestations":[]}`), "data[0].pubkey: missing"},
		{"pubkey without 0x", interchange("5", zeroRoot, `{"pubkey":"`+pkA.String()[2:]+`","signed_blocks":[],"signed_attestations":[]}`), "data[0].pubkey: " + `"` + pkA.String()[2:] + `"` + ": want 0x-prefixed hex"},
		{"short pubkey", interchange("5", zeroRoot, `{"pubkey":"0xabcd","signed_blocks":[],"signed_attestations":[]}`), "want 96 hex digits after 0x, got 4"},
		{"no signed_blocks", interchange("5", zeroRoot, `{"pubkey":"`+pkA.String()+`","signed_attestations":[]}`), "data[0].signed_blocks: missing (want an array, [] when the key signed no block)"},
		{"no signed_attestations", interchange("5", zeroRoot, `{"pubkey":"`+pkA.String()+`","signed_blocks":[]}`), "data[0].signed_attestations: missing"},
		{"signed_blocks not an array", interchange("5", zeroRoot, `{"pubkey":"`+pkA.String()+`","signed_blocks":{},"signed_attestations":[]}`), "data[0].signed_blocks: want an array, got an object"},
		{"block without slot", withBlock(`{}`), "data[0].signed_blocks[0].slot: missing"},
		{"unquoted slot", withBlock(`{"slot":81952}`), "data[0].signed_blocks[0].slot: want a string, got a number (EIP-3076 writes numbers as decimal strings"},
		{"negative slot", withBlock(`{"slot":"-1"}`), `"-1" is not a decimal number`},
		{"hex slot", withBlock(`{"slot":"0x10"}`), `"0x10" is not a decimal number`},
		{"fraction", withBlock(`{"slot":"1.5"}`), `"1.5" is not a decimal number`},
		{"spaces", withBlock(`{"slot":" 1"}`), `" 1" is not a decimal number`},
		{"leading zeros", withBlock(`{"slot":"007"}`), `"007" has leading zeros`},
		{"empty slot", withBlock(`{"slot":""}`), "empty number"},
		{"slot too large", withBlock(`{"slot":"18446744073709551616"}`), `"18446744073709551616" does not fit in 64 bits`},
		{"bad block signing root", withBlock(`{"slot":"1","signing_root":"0x12"}`), "data[0].signed_blocks[0].signing_root: root \"0x12\": want 64 hex digits"},
		{"attestation without target", withAtt(`{"source_epoch":"1"}`), "data[0].signed_attestations[0].target_epoch: missing"},
		{"attestation without source", withAtt(`{"target_epoch":"1"}`), "data[0].signed_attestations[0].source_epoch: missing"},
		{"source after target", withAtt(`{"source_epoch":"1","target_epoch":"2"},{"source_epoch":"8","target_epoch":"7"}`),
			"data[0].signed_attestations[1]: key " + pkA.String() + ": source epoch 8 is after target epoch 7"},
		{"bad attestation signing root", withAtt(`{"source_epoch":"1","target_epoch":"2","signing_root":5}`), "signing_root: want a string, got a number"},
		{"second entry bad", interchange("5", zeroRoot, okEntry, entry(pkB, `{"slot":"x"}`, "")), `data[1].signed_blocks[0].slot: "x" is not a decimal number`},
		{"too large", strings.Repeat(" ", MaxFileBytes+1), "more than the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.file), [32]byte{}, nil)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestParseAllowed(t *testing.T) {
	file := interchange("5", zeroRoot, entry(pkA, `{"slot":"1"}`, ""), entry(pkB, "", ""))
	allowed := func(pk store.Pubkey) error {
		if pk == pkA {
			return nil
		}
		return errors.New("pod validator-0 does not hold this key")
	}
	_, err := Parse([]byte(file), [32]byte{}, allowed)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "data[1].pubkey: key "+pkB.String()+": pod validator-0 does not hold this key") {
		t.Fatalf("a key the caller does not allow: %v", err)
	}
	// A key without any record is checked too: the file names it.
	if _, err := Parse([]byte(interchange("5", zeroRoot, entry(pkB, "", ""))), [32]byte{}, allowed); err == nil {
		t.Fatal("an empty entry of a key that is not allowed was accepted")
	}
	got, err := Parse([]byte(interchange("5", zeroRoot, entry(pkA, `{"slot":"1"}`, ""))), [32]byte{}, allowed)
	if err != nil || len(got) != 1 {
		t.Fatalf("allowed key: %v %v", got, err)
	}
}

// refuses applies a validator client's import conditions for the minimal
// form (EIP-3076 conditions 2, 4 and 5 with the watermarks as the only
// records): a block at or below the slot, an attestation with a source
// below the source or a target at or below the target.
func refusesBlock(w Watermarks, slot uint64) bool { return w.HasBlock && slot <= w.BlockSlot }
func refusesAttestation(w Watermarks, source, target uint64) bool {
	return w.HasAttestation && (source < w.SourceEpoch || target <= w.TargetEpoch)
}

// The watermarks refuse everything the conformance tests expect refused
// after importing their interchange (tests/generated/multiple_validators_
// multiple_blocks_and_attestations of eth-clients/slashing-protection-
// interchange-tests: the same records; the refused blocks and attestations
// are the test's "should_succeed": false ones). The minimal form refuses
// more than a complete database, never less.
func TestWatermarksRefuseWhatTheConformanceTestRefuses(t *testing.T) {
	file := interchange("5", zeroRoot,
		entry(pkA, `{"slot":"10"},{"slot":"15"},{"slot":"20"}`,
			`{"source_epoch":"0","target_epoch":"1"},{"source_epoch":"0","target_epoch":"2"},{"source_epoch":"1","target_epoch":"3"},{"source_epoch":"2","target_epoch":"4"},{"source_epoch":"4","target_epoch":"5"}`),
		entry(pkB, `{"slot":"3"},{"slot":"4"},{"slot":"100"}`,
			`{"source_epoch":"0","target_epoch":"0"},{"source_epoch":"0","target_epoch":"1"},{"source_epoch":"1","target_epoch":"2"},{"source_epoch":"2","target_epoch":"5"},{"source_epoch":"5","target_epoch":"6"}`),
		entry(pkC, `{"slot":"10"},{"slot":"15"},{"slot":"20"}`,
			`{"source_epoch":"1","target_epoch":"2"},{"source_epoch":"1","target_epoch":"3"},{"source_epoch":"2","target_epoch":"4"}`))
	w, err := Parse([]byte(file), [32]byte{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	type block struct {
		pk   store.Pubkey
		slot uint64
	}
	for _, b := range []block{{pkA, 9}, {pkA, 10}, {pkB, 2}, {pkB, 3}, {pkB, 0}, {pkC, 9}, {pkC, 10}} {
		if !refusesBlock(w[b.pk], b.slot) {
			t.Errorf("block of %s at slot %d not refused", b.pk, b.slot)
		}
	}
	type att struct {
		pk             store.Pubkey
		source, target uint64
	}
	for _, a := range []att{{pkA, 0, 5}, {pkA, 3, 6}, {pkB, 1, 7}, {pkC, 0, 0}, {pkC, 0, 1}} {
		if !refusesAttestation(w[a.pk], a.source, a.target) {
			t.Errorf("attestation of %s %d->%d not refused", a.pk, a.source, a.target)
		}
	}
	// What the test lets through after the highest records still passes.
	for _, b := range []block{{pkA, 21}, {pkB, 101}, {pkC, 22}} {
		if refusesBlock(w[b.pk], b.slot) {
			t.Errorf("block of %s at slot %d refused", b.pk, b.slot)
		}
	}
	for _, a := range []att{{pkA, 4, 6}, {pkA, 5, 7}, {pkA, 6, 8}, {pkB, 5, 7}, {pkC, 2, 5}} {
		if refusesAttestation(w[a.pk], a.source, a.target) {
			t.Errorf("attestation of %s %d->%d refused", a.pk, a.source, a.target)
		}
	}
}

func TestWriteRoundTrip(t *testing.T) {
	marks := map[store.Pubkey]Watermarks{
		pkA:       {HasBlock: true, BlockSlot: 81952, HasAttestation: true, SourceEpoch: 2290, TargetEpoch: 3008},
		pkB:       {HasBlock: true, BlockSlot: 7},
		pkC:       {HasAttestation: true, SourceEpoch: 0, TargetEpoch: 0},
		eipPubkey: {}, // empty: no entry
	}
	b, err := Write(eipRoot, marks)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b, eipRoot, nil)
	if err != nil {
		t.Fatalf("Parse(Write): %v\n%s", err, b)
	}
	delete(marks, eipPubkey)
	if !maps.Equal(got, marks) {
		t.Fatalf("round trip: got %+v, want %+v", got, marks)
	}
	// The complete form of the EIP, one record of each kind per key, no
	// signing roots, keys in pubkey order.
	var file struct {
		Metadata map[string]string `json:"metadata"`
		Data     []struct {
			Pubkey       string              `json:"pubkey"`
			Blocks       []map[string]string `json:"signed_blocks"`
			Attestations []map[string]string `json:"signed_attestations"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	if file.Metadata["interchange_format_version"] != "5" || file.Metadata["genesis_validators_root"] != FormatRoot(eipRoot) {
		t.Fatalf("metadata %v", file.Metadata)
	}
	if len(file.Data) != 3 || file.Data[0].Pubkey != pkC.String() || file.Data[1].Pubkey != pkA.String() || file.Data[2].Pubkey != pkB.String() {
		t.Fatalf("data not in pubkey order: %s", b)
	}
	a := file.Data[1]
	if len(a.Blocks) != 1 || a.Blocks[0]["slot"] != "81952" || len(a.Blocks[0]) != 1 ||
		len(a.Attestations) != 1 || a.Attestations[0]["source_epoch"] != "2290" || a.Attestations[0]["target_epoch"] != "3008" || len(a.Attestations[0]) != 2 {
		t.Fatalf("entry %+v", a)
	}
	if len(file.Data[2].Attestations) != 0 || file.Data[2].Attestations == nil || len(file.Data[0].Blocks) != 0 {
		t.Fatalf("missing kinds are written as empty arrays: %s", b)
	}
	if !strings.Contains(string(b), `"signed_attestations": []`) {
		t.Fatalf("empty list not written as []: %s", b)
	}

	// Nothing: a valid interchange without keys.
	b, err = Write(eipRoot, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Parse(b, eipRoot, nil); err != nil || len(got) != 0 {
		t.Fatalf("empty interchange: %v %v\n%s", got, err, b)
	}
	// Watermarks no validator client would import are refused.
	if _, err := Write(eipRoot, map[store.Pubkey]Watermarks{pkA: {HasAttestation: true, SourceEpoch: 3, TargetEpoch: 2}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("source after target written: %v", err)
	}
}
