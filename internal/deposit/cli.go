package deposit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// CLIVersion is the deposit_cli_version written into deposit_data files.
//
// The staking launchpad used to reject files whose deposit_cli_version was
// below a minimum (MIN_DEPOSIT_CLI_VERSION: '1.0.0' by default in its
// source, set to 2.7.0 for the deployed launchpad) until
// ethereum/staking-launchpad#714 (merged January 2025) dropped the check.
// ethstaker-deposit-cli, the tool the launchpad now recommends, writes its
// own version (1.2.x, 1.3.0), and for a while wrote its major version + 10
// to get past that check (its issue #216). ethereum/staking-deposit-cli,
// now deprecated, wrote its own version, 2.7.0 in its later releases, in the
// same file format as this package.
//
// "2.7.0" passes the current launchpad (no check), the old launchpad's
// deployed minimum and the '1.0.0' minimum that forks of the launchpad and
// other validators copied, while naming a real release of the format.
const CLIVersion = "2.7.0"

// CLIEntry is one element of a deposit_data-*.json file as
// staking-deposit-cli and ethstaker-deposit-cli write it: hex fields are
// lower case without 0x, amount is a JSON number of gwei. Field order is the
// tools' order, which MarshalCLI keeps.
type CLIEntry struct {
	Pubkey                string `json:"pubkey"`
	WithdrawalCredentials string `json:"withdrawal_credentials"`
	Amount                uint64 `json:"amount"`
	Signature             string `json:"signature"`
	DepositMessageRoot    string `json:"deposit_message_root"`
	DepositDataRoot       string `json:"deposit_data_root"`
	ForkVersion           string `json:"fork_version"`
	NetworkName           string `json:"network_name"`
	DepositCLIVersion     string `json:"deposit_cli_version"`
}

// cliFields are the JSON names of CLIEntry's fields, in file order.
var cliFields = []string{
	"pubkey", "withdrawal_credentials", "amount", "signature",
	"deposit_message_root", "deposit_data_root", "fork_version",
	"network_name", "deposit_cli_version",
}

// ToCLIEntry writes deposit d of pubkey as a deposit_data entry, with
// deposit_cli_version CLIVersion.
func ToCLIEntry(pubkey [48]byte, d store.DepositData) CLIEntry {
	return CLIEntry{
		Pubkey:                hex.EncodeToString(pubkey[:]),
		WithdrawalCredentials: hex.EncodeToString(d.WithdrawalCredentials[:]),
		Amount:                d.AmountGwei,
		Signature:             hex.EncodeToString(d.Signature[:]),
		DepositMessageRoot:    hex.EncodeToString(d.DepositMessageRoot[:]),
		DepositDataRoot:       hex.EncodeToString(d.DepositDataRoot[:]),
		ForkVersion:           hex.EncodeToString(d.ForkVersion[:]),
		NetworkName:           d.NetworkName,
		DepositCLIVersion:     CLIVersion,
	}
}

// Deposit reads the entry back into its public key and deposit data. It
// checks every field's format, and every check of Verify that needs no BLS:
// the amount range, the withdrawal credentials, network_name against
// fork_version, deposit_message_root and deposit_data_root. The signature is
// left to Verify or CLIEntry.Verify.
func (e CLIEntry) Deposit() ([48]byte, store.DepositData, error) {
	var (
		pubkey [48]byte
		d      store.DepositData
	)
	fields := []struct {
		name string
		val  string
		dst  []byte
	}{
		{"pubkey", e.Pubkey, pubkey[:]},
		{"withdrawal_credentials", e.WithdrawalCredentials, d.WithdrawalCredentials[:]},
		{"signature", e.Signature, d.Signature[:]},
		{"deposit_message_root", e.DepositMessageRoot, d.DepositMessageRoot[:]},
		{"deposit_data_root", e.DepositDataRoot, d.DepositDataRoot[:]},
		{"fork_version", e.ForkVersion, d.ForkVersion[:]},
	}
	for _, f := range fields {
		if err := decodeLowerHex(f.name, f.val, f.dst); err != nil {
			return pubkey, d, err
		}
	}
	if err := validateCLIVersion(e.DepositCLIVersion); err != nil {
		return pubkey, d, err
	}
	d.AmountGwei = e.Amount
	d.NetworkName = e.NetworkName
	if err := checkMessage(pubkey, d); err != nil {
		return pubkey, d, err
	}
	if err := checkDataRoot(pubkey, d); err != nil {
		return pubkey, d, err
	}
	return pubkey, d, nil
}

// Verify reads the entry with Deposit and checks it, signature included,
// with the package-level Verify.
func (e CLIEntry) Verify(verify func(pub [48]byte, msg []byte, sig [96]byte) bool) error {
	pubkey, d, err := e.Deposit()
	if err != nil {
		return err
	}
	return Verify(pubkey, d, verify)
}

// decodeLowerHex decodes s, which must be exactly 2*len(dst) lower-case hex
// digits without 0x, as the deposit tools write them, into dst.
func decodeLowerHex(name, s string, dst []byte) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%s: want %d lower-case hex digits without 0x, got %d characters", name, 2*len(dst), len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%s: character %q at %d is not lower-case hex", name, c, i)
		}
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// validateCLIVersion accepts a non-empty version of letters, digits and
// ".+-" ("2.7.0", "1.3.1-dev"): a value the launchpad's version comparison
// reads and that is written into JSON without escaping.
func validateCLIVersion(v string) error {
	if v == "" {
		return errors.New("deposit_cli_version is empty")
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '+') {
			return fmt.Errorf("deposit_cli_version %q may contain only letters, digits and .+-", v)
		}
	}
	return nil
}

// MarshalCLI writes entries as a deposit_data-*.json file, byte for byte as
// the Python tools write it (json.dump defaults: one line, ", " and ": "
// separators, no trailing newline). It refuses an empty list, an entry that
// CLIEntry.Deposit rejects, and a pubkey listed twice.
func MarshalCLI(entries []CLIEntry) ([]byte, error) {
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, e := range entries {
		if i > 0 {
			b.WriteString(", ")
		}
		// Every string was validated by checkEntries to need no JSON escaping.
		vals := []string{
			strconv.Quote(e.Pubkey),
			strconv.Quote(e.WithdrawalCredentials),
			strconv.FormatUint(e.Amount, 10),
			strconv.Quote(e.Signature),
			strconv.Quote(e.DepositMessageRoot),
			strconv.Quote(e.DepositDataRoot),
			strconv.Quote(e.ForkVersion),
			strconv.Quote(e.NetworkName),
			strconv.Quote(e.DepositCLIVersion),
		}
		b.WriteByte('{')
		for j, name := range cliFields {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(`"` + name + `": ` + vals[j])
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// checkEntries validates each entry with Deposit and rejects an empty list
// and repeated pubkeys.
func checkEntries(entries []CLIEntry) error {
	if len(entries) == 0 {
		return errors.New("deposit data: no entries")
	}
	seen := make(map[[48]byte]int, len(entries))
	for i, e := range entries {
		pubkey, _, err := e.Deposit()
		if err != nil {
			return fmt.Errorf("deposit data entry %d: %w", i, err)
		}
		if j, dup := seen[pubkey]; dup {
			return fmt.Errorf("deposit data entry %d: pubkey %s repeats entry %d", i, e.Pubkey, j)
		}
		seen[pubkey] = i
	}
	return nil
}

// ParseCLI reads a deposit_data-*.json file: a non-empty JSON array of
// objects with exactly CLIEntry's fields (names matched exactly), the hex
// fields lower case without 0x and amount a JSON integer. Each entry must
// pass CLIEntry.Deposit (formats, amount, withdrawal credentials, network,
// both roots) and no pubkey may repeat. Signatures are not checked: use
// CLIEntry.Verify.
func ParseCLI(data []byte) ([]CLIEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw []map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("deposit data: not a JSON array of objects: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("deposit data: unexpected data after the JSON array")
	}
	entries := make([]CLIEntry, len(raw))
	for i, obj := range raw {
		e, err := entryFromJSON(obj)
		if err != nil {
			return nil, fmt.Errorf("deposit data entry %d: %w", i, err)
		}
		entries[i] = e
	}
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	return entries, nil
}

// entryFromJSON reads one object of a deposit_data file, field by field.
func entryFromJSON(obj map[string]json.RawMessage) (CLIEntry, error) {
	var e CLIEntry
	if obj == nil {
		return e, errors.New("not a JSON object")
	}
	for name := range obj {
		known := false
		for _, f := range cliFields {
			known = known || name == f
		}
		if !known {
			return e, fmt.Errorf("unknown field %q", name)
		}
	}
	strs := map[string]*string{
		"pubkey":                 &e.Pubkey,
		"withdrawal_credentials": &e.WithdrawalCredentials,
		"signature":              &e.Signature,
		"deposit_message_root":   &e.DepositMessageRoot,
		"deposit_data_root":      &e.DepositDataRoot,
		"fork_version":           &e.ForkVersion,
		"network_name":           &e.NetworkName,
		"deposit_cli_version":    &e.DepositCLIVersion,
	}
	for _, name := range cliFields {
		v, ok := obj[name]
		if !ok {
			return e, fmt.Errorf("missing field %q", name)
		}
		if name == "amount" {
			amount, err := parseAmount(v)
			if err != nil {
				return e, err
			}
			e.Amount = amount
			continue
		}
		if len(v) == 0 || v[0] != '"' {
			return e, fmt.Errorf("%s must be a JSON string, got %s", name, v)
		}
		if err := json.Unmarshal(v, strs[name]); err != nil {
			return e, fmt.Errorf("%s: %w", name, err)
		}
	}
	return e, nil
}

// parseAmount reads amount, which must be a JSON integer (gwei), not a
// string, fraction or exponent.
func parseAmount(v json.RawMessage) (uint64, error) {
	if len(v) == 0 {
		return 0, errors.New("amount is empty")
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("amount must be a JSON integer of gwei, got %s", v)
		}
	}
	amount, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %s: %w", v, err)
	}
	return amount, nil
}

// CLIFileName names a deposit data file written at now as the tools do:
// deposit_data-<unix seconds>.json.
func CLIFileName(now time.Time) string {
	return fmt.Sprintf("deposit_data-%d.json", now.Unix())
}
