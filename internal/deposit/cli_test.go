package deposit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

// wantCLIFields is the field order of staking-deposit-cli's deposit_data
// entries.
var wantCLIFields = []string{
	"pubkey", "withdrawal_credentials", "amount", "signature",
	"deposit_message_root", "deposit_data_root", "fork_version",
	"network_name", "deposit_cli_version",
}

// madeEntry makes a signed 32 ETH hoodi deposit with a random key.
func madeEntry(t *testing.T) CLIEntry {
	t.Helper()
	s := randomSigner(t)
	hoodi, _ := LookupNetwork("hoodi")
	d, err := Make(s, Params{Network: hoodi, WithdrawalCredentials: CompoundingCredentials([20]byte{0xab, 19: 0xcd}), AmountGwei: DefaultAmountGwei})
	if err != nil {
		t.Fatal(err)
	}
	return ToCLIEntry(s.PublicKey(), d)
}

// objectKeysAndTypes reads a JSON array of objects token by token and
// returns each object's keys in order and the Go type of each value.
func objectKeysAndTypes(t *testing.T, data []byte) ([][]string, []map[string]any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	next := func() json.Token {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("reading %s: %v", data, err)
		}
		return tok
	}
	if tok := next(); tok != json.Delim('[') {
		t.Fatalf("file starts with %v, want [", tok)
	}
	var keys [][]string
	var vals []map[string]any
	for dec.More() {
		if tok := next(); tok != json.Delim('{') {
			t.Fatalf("entry starts with %v, want {", tok)
		}
		var k []string
		v := map[string]any{}
		for dec.More() {
			name := next().(string)
			k = append(k, name)
			v[name] = next()
		}
		next() // }
		keys = append(keys, k)
		vals = append(vals, v)
	}
	next() // ]
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("data after the array: %v", err)
	}
	return keys, vals
}

func TestToCLIEntry(t *testing.T) {
	s := randomSigner(t)
	sepolia, _ := LookupNetwork("sepolia")
	d, err := Make(s, Params{Network: sepolia, WithdrawalCredentials: ExecutionCredentials([20]byte{0xfe}), AmountGwei: 5 * GweiPerETH})
	if err != nil {
		t.Fatal(err)
	}
	pub := s.PublicKey()
	e := ToCLIEntry(pub, d)
	want := CLIEntry{
		Pubkey:                hex.EncodeToString(pub[:]),
		WithdrawalCredentials: "01" + strings.Repeat("00", 11) + "fe" + strings.Repeat("00", 19),
		Amount:                5_000_000_000,
		Signature:             hex.EncodeToString(d.Signature[:]),
		DepositMessageRoot:    hex.EncodeToString(d.DepositMessageRoot[:]),
		DepositDataRoot:       hex.EncodeToString(d.DepositDataRoot[:]),
		ForkVersion:           "90000069",
		NetworkName:           "sepolia",
		DepositCLIVersion:     CLIVersion,
	}
	if e != want {
		t.Errorf("ToCLIEntry =\n %+v\nwant\n %+v", e, want)
	}
	gotPub, gotD, err := e.Deposit()
	if err != nil {
		t.Fatal(err)
	}
	if gotPub != pub || gotD != d {
		t.Errorf("Deposit() = %x %+v, want %x %+v", gotPub, gotD, pub, d)
	}
}

func TestCLIVersionPassesLaunchpadMinimums(t *testing.T) {
	// The launchpad compared deposit_cli_version against a minimum of
	// 1.0.0 (source default) or 2.7.0 (deployed) before dropping the check.
	parse := func(v string) (out [3]int) {
		if _, err := fmt.Sscanf(v, "%d.%d.%d", &out[0], &out[1], &out[2]); err != nil {
			t.Fatalf("version %q: %v", v, err)
		}
		return out
	}
	ours := parse(CLIVersion)
	for _, min := range []string{"1.0.0", "2.7.0"} {
		m := parse(min)
		if ours[0] < m[0] || ours[0] == m[0] && (ours[1] < m[1] || ours[1] == m[1] && ours[2] < m[2]) {
			t.Errorf("CLIVersion %s is below the launchpad minimum %s", CLIVersion, min)
		}
	}
}

func TestMarshalCLIFormat(t *testing.T) {
	entries := []CLIEntry{madeEntry(t), madeEntry(t)}
	data, err := MarshalCLI(entries)
	if err != nil {
		t.Fatal(err)
	}
	keys, vals := objectKeysAndTypes(t, data)
	if len(keys) != 2 {
		t.Fatalf("%d objects written, want 2", len(keys))
	}
	for i := range keys {
		if strings.Join(keys[i], ",") != strings.Join(wantCLIFields, ",") {
			t.Errorf("entry %d fields %v, want %v", i, keys[i], wantCLIFields)
		}
		if n, ok := vals[i]["amount"].(json.Number); !ok || n.String() != "32000000000" {
			t.Errorf("entry %d amount = %#v, want the JSON number 32000000000", i, vals[i]["amount"])
		}
		for _, f := range []string{"pubkey", "withdrawal_credentials", "signature", "deposit_message_root", "deposit_data_root", "fork_version"} {
			s, ok := vals[i][f].(string)
			if !ok || strings.HasPrefix(s, "0x") || s != strings.ToLower(s) || len(s)%2 != 0 {
				t.Errorf("entry %d %s = %#v, want lower-case hex without 0x", i, f, vals[i][f])
			}
		}
	}
	// The Python tools' json.dump layout: one line, ", " and ": ".
	e := entries[0]
	prefix := fmt.Sprintf(`[{"pubkey": "%s", "withdrawal_credentials": "%s", "amount": 32000000000, "signature": "%s", `,
		e.Pubkey, e.WithdrawalCredentials, e.Signature)
	if !bytes.HasPrefix(data, []byte(prefix)) {
		t.Errorf("file does not start like the tool's:\n got %.200s\nwant %.200s", data, prefix)
	}
	suffix := fmt.Sprintf(`"fork_version": "10000910", "network_name": "hoodi", "deposit_cli_version": "%s"}]`, CLIVersion)
	if !bytes.HasSuffix(data, []byte(suffix)) {
		t.Errorf("file does not end like the tool's: ...%s", data[len(data)-120:])
	}
	if !bytes.Contains(data, []byte(`"}, {"pubkey": "`)) || bytes.ContainsAny(data, "\n\t") {
		t.Errorf("entries not joined like the tool's: %s", data)
	}
	// Plain encoding/json reads the file into the same entries.
	var back []CLIEntry
	if err := json.Unmarshal(data, &back); err != nil || len(back) != 2 || back[0] != entries[0] || back[1] != entries[1] {
		t.Errorf("encoding/json read back %+v, %v", back, err)
	}
}

// TestCLIEntryJSONTags: encoding/json of a CLIEntry uses the tool's names in
// the tool's order too.
func TestCLIEntryJSONTags(t *testing.T) {
	data, err := json.Marshal([]CLIEntry{madeEntry(t)})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := objectKeysAndTypes(t, data)
	if strings.Join(keys[0], ",") != strings.Join(wantCLIFields, ",") {
		t.Errorf("json.Marshal fields %v, want %v", keys[0], wantCLIFields)
	}
}

// field is one member of a hand-written JSON object.
type field struct{ name, raw string }

func entryFields(e CLIEntry) []field {
	q := func(s string) string { return `"` + s + `"` }
	return []field{
		{"pubkey", q(e.Pubkey)},
		{"withdrawal_credentials", q(e.WithdrawalCredentials)},
		{"amount", fmt.Sprint(e.Amount)},
		{"signature", q(e.Signature)},
		{"deposit_message_root", q(e.DepositMessageRoot)},
		{"deposit_data_root", q(e.DepositDataRoot)},
		{"fork_version", q(e.ForkVersion)},
		{"network_name", q(e.NetworkName)},
		{"deposit_cli_version", q(e.DepositCLIVersion)},
	}
}

func objectJSON(fs []field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = fmt.Sprintf("%q: %s", f.name, f.raw)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// withField returns fs with name's raw value replaced (or, with raw "",
// removed).
func withField(fs []field, name, raw string) []field {
	var out []field
	for _, f := range fs {
		if f.name == name {
			if raw == "" {
				continue
			}
			f.raw = raw
		}
		out = append(out, f)
	}
	return out
}

func TestParseCLIRejects(t *testing.T) {
	e := madeEntry(t)
	good := entryFields(e)
	goodObj := objectJSON(good)
	if _, err := ParseCLI([]byte("[" + goodObj + "]")); err != nil {
		t.Fatalf("hand-written good file rejected: %v", err)
	}
	mainnetForkRoots := withField(good, "fork_version", `"00000000"`)
	cases := []struct {
		name, data, want string
		is               error
	}{
		{"empty input", "", "not a JSON array", nil},
		{"object, not array", goodObj, "not a JSON array", nil},
		{"empty array", "[]", "no entries", nil},
		{"null", "null", "no entries", nil},
		{"array of numbers", "[1]", "not a JSON array of objects", nil},
		{"null entry", "[null]", "not a JSON object", nil},
		{"trailing garbage", "[" + goodObj + "] x", "after the JSON array", nil},
		{"two arrays", "[" + goodObj + "][" + goodObj + "]", "after the JSON array", nil},
		{"truncated", "[" + goodObj[:100], "not a JSON array", nil},
		{"missing field", "[" + objectJSON(withField(good, "deposit_cli_version", "")) + "]", `missing field "deposit_cli_version"`, nil},
		{"legacy field name", "[" + objectJSON(append(withField(good, "network_name", ""), field{"eth2_network_name", `"hoodi"`})) + "]", `unknown field "eth2_network_name"`, nil},
		{"field name case", "[" + strings.Replace(goodObj, `"pubkey"`, `"Pubkey"`, 1) + "]", `unknown field "Pubkey"`, nil},
		{"amount as string", "[" + objectJSON(withField(good, "amount", `"32000000000"`)) + "]", "amount must be a JSON integer", nil},
		{"amount with exponent", "[" + objectJSON(withField(good, "amount", `3.2e10`)) + "]", "amount must be a JSON integer", nil},
		{"amount with fraction", "[" + objectJSON(withField(good, "amount", `32000000000.0`)) + "]", "amount must be a JSON integer", nil},
		{"negative amount", "[" + objectJSON(withField(good, "amount", `-1`)) + "]", "amount must be a JSON integer", nil},
		{"amount overflows uint64", "[" + objectJSON(withField(good, "amount", `18446744073709551616`)) + "]", "out of range", nil},
		{"amount below 1 ETH", "[" + objectJSON(withField(good, "amount", `999999999`)) + "]", "amount", ErrAmount},
		{"amount changed", "[" + objectJSON(withField(good, "amount", `31000000000`)) + "]", "deposit_message_root", ErrMessageRoot},
		{"pubkey with 0x", "[" + objectJSON(withField(good, "pubkey", `"0x`+e.Pubkey+`"`)) + "]", "pubkey: want 96 lower-case hex digits without 0x, got 98", nil},
		{"pubkey upper case", "[" + objectJSON(withField(good, "pubkey", `"`+strings.ToUpper(e.Pubkey)+`"`)) + "]", "pubkey: character", nil},
		{"pubkey as number", "[" + objectJSON(withField(good, "pubkey", `12`)) + "]", "pubkey must be a JSON string", nil},
		{"pubkey null", "[" + objectJSON(withField(good, "pubkey", `null`)) + "]", "pubkey must be a JSON string", nil},
		{"signature truncated", "[" + objectJSON(withField(good, "signature", `"`+e.Signature[:190]+`"`)) + "]", "signature: want 192", nil},
		{"fork_version with 0x", "[" + objectJSON(withField(good, "fork_version", `"0x10000910"`)) + "]", "fork_version: want 8", nil},
		{"network_name against fork_version", "[" + objectJSON(mainnetForkRoots) + "]", "network_name does not match fork_version", ErrNetwork},
		{"network_name unsafe", "[" + objectJSON(withField(good, "network_name", `"hoodi\n"`)) + "]", "network name", ErrNetwork},
		{"deposit_message_root changed", "[" + objectJSON(withField(good, "deposit_message_root", `"`+strings.Repeat("ab", 32)+`"`)) + "]", "deposit_message_root does not match", ErrMessageRoot},
		{"deposit_data_root changed", "[" + objectJSON(withField(good, "deposit_data_root", `"`+strings.Repeat("ab", 32)+`"`)) + "]", "deposit_data_root does not match", ErrDataRoot},
		{"withdrawal_credentials unknown prefix", "[" + objectJSON(withField(good, "withdrawal_credentials", `"`+"09"+e.WithdrawalCredentials[2:]+`"`)) + "]", "unknown prefix", ErrWithdrawalCredentials},
		{"empty deposit_cli_version", "[" + objectJSON(withField(good, "deposit_cli_version", `""`)) + "]", "deposit_cli_version is empty", nil},
		{"duplicate pubkey", "[" + goodObj + ", " + goodObj + "]", "repeats entry 0", nil},
	}
	for _, c := range cases {
		_, err := ParseCLI([]byte(c.data))
		if err == nil {
			t.Errorf("%s: ParseCLI accepted %.120q", c.name, c.data)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: error %v is not %v", c.name, err, c.is)
		}
	}
}

func TestMarshalCLIRejects(t *testing.T) {
	e := madeEntry(t)
	upper := e
	upper.Signature = strings.ToUpper(upper.Signature)
	quote := e
	quote.DepositCLIVersion = `2.7.0"`
	cases := []struct {
		name    string
		entries []CLIEntry
		want    string
	}{
		{"nil", nil, "no entries"},
		{"duplicate", []CLIEntry{e, e}, "repeats entry 0"},
		{"upper-case hex", []CLIEntry{upper}, "signature: character"},
		{"version needing escapes", []CLIEntry{quote}, "deposit_cli_version"},
		{"zero entry", []CLIEntry{{}}, "pubkey: want 96"},
	}
	for _, c := range cases {
		if out, err := MarshalCLI(c.entries); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: MarshalCLI = %.60q, %v; want error mentioning %q", c.name, out, err, c.want)
		}
	}
}

func TestCLIFileName(t *testing.T) {
	if got, want := CLIFileName(time.Unix(1785211449, 999_999_999)), "deposit_data-1785211449.json"; got != want {
		t.Errorf("CLIFileName = %q, want %q", got, want)
	}
	// The published files are named the same way.
	re := regexp.MustCompile(`^deposit_data-[0-9]+\.json$`)
	for _, vf := range vectorFiles {
		name := vf.file[strings.Index(vf.file, "deposit_data-"):]
		if !re.MatchString(name) {
			t.Errorf("fixture name %q does not match %v", name, re)
		}
	}
	if got := CLIFileName(time.Now()); !re.MatchString(got) {
		t.Errorf("CLIFileName(now) = %q", got)
	}
}
