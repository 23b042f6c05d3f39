// Package slashing carries validator keys' slashing-protection history from
// one holder to the next in the EIP-3076 interchange format (version 5):
// it reads and checks the interchange a validator client exports, reduces it
// to the watermarks the store keeps per key (store.Protection, EIP-3076's
// minimal form: the highest signed block slot and the highest attestation
// source and target epochs), and writes an interchange back from watermarks
// for the next holder's validator client to import.
//
// A validator client that imports such an interchange refuses to sign a
// block at or below the watermark slot, an attestation whose source epoch
// is below the watermark source, or one whose target epoch is at or below
// the watermark target (EIP-3076's conditions 2, 4 and 5, which every
// client enforces on import). So the watermarks are all the next holder
// needs to never sign what an earlier holder may have signed.
//
// Errors of Parse wrap ErrInvalid and say where in the file the problem is
// (e.g. data[2].signed_attestations[7]); they may quote public keys and
// numbers from the file, never more than a few dozen bytes of it.
package slashing

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pkmanager/pkmanager/internal/store"
)

// FormatVersion is the only interchange_format_version this package reads
// and writes (EIP-3076; earlier drafts used 1 to 4 and are incompatible).
const FormatVersion = "5"

// MaxFileBytes bounds an interchange the server accepts. A minimal
// interchange takes about 300 bytes per key; complete ones of clients that
// keep every signed message grow with time (export them minified, or
// pruned, when they get near this).
const MaxFileBytes = 16 << 20

// Errors. Returned errors wrap them.
var (
	// ErrInvalid: the interchange is malformed, for another chain, of an
	// unsupported version, or names a key it may not.
	ErrInvalid = errors.New("invalid slashing-protection interchange")
	// ErrChainUnknown: the server has no chain parameters (genesis
	// validators root, genesis time, slot and epoch lengths), so it can
	// neither check an interchange against the chain nor compute
	// release-time watermarks.
	ErrChainUnknown = errors.New("chain parameters unknown")
)

// Watermarks are one key's watermarks: the store's form.
type Watermarks = store.Protection

// FormatRoot writes a 32-byte root (a genesis validators root) as
// 0x-prefixed lower-case hex, as interchanges do.
func FormatRoot(r [32]byte) string { return "0x" + hex.EncodeToString(r[:]) }

// ParseRoot reads a 32-byte root written as 0x-prefixed hex (64 digits).
func ParseRoot(s string) ([32]byte, error) {
	var r [32]byte
	if err := parseHex(s, r[:]); err != nil {
		return r, fmt.Errorf("root %s: %w", quote(s), err)
	}
	return r, nil
}

// Allowed decides whether an interchange may carry watermarks for a key:
// nil for yes, else why not (e.g. "pod validator-0 does not hold it").
type Allowed func(store.Pubkey) error

// Parse reads an EIP-3076 interchange (format version 5) and returns each
// key's watermarks: the highest block slot, the highest attestation source
// epoch and the highest attestation target epoch among the key's records
// (a key listed more than once has its records merged). Keys without any
// record are left out.
//
// It checks that the file is one JSON object of the EIP's schema, that
// metadata.interchange_format_version is "5" and
// metadata.genesis_validators_root is gvr, that every pubkey is a 48-byte
// 0x-prefixed hex key that allowed accepts (nil allowed accepts every
// key), that every slot and epoch is a decimal string without sign,
// leading zeros or spaces that fits in 64 bits, that every optional
// signing_root is a 32-byte 0x-prefixed hex root (it is not used
// otherwise), and that no attestation's source epoch is after its target
// epoch. Any failure rejects the whole file with an error wrapping
// ErrInvalid. Fields the EIP does not define are ignored.
func Parse(data []byte, gvr [32]byte, allowed Allowed) (map[store.Pubkey]Watermarks, error) {
	if len(data) > MaxFileBytes {
		return nil, invalid("", "%d bytes, more than the %d accepted", len(data), MaxFileBytes)
	}
	var file struct {
		Metadata json.RawMessage `json:"metadata"`
		Data     json.RawMessage `json:"data"`
	}
	if err := unmarshalObject(data, &file); err != nil {
		return nil, invalid("", "%v", err)
	}
	if missing(file.Metadata) {
		return nil, invalid("metadata", "missing")
	}
	var meta struct {
		Version json.RawMessage `json:"interchange_format_version"`
		GVR     json.RawMessage `json:"genesis_validators_root"`
	}
	if err := unmarshalObject(file.Metadata, &meta); err != nil {
		return nil, invalid("metadata", "%v", err)
	}
	version, err := str(meta.Version)
	if err != nil {
		return nil, invalid("metadata.interchange_format_version", "%v", err)
	}
	if version != FormatVersion {
		return nil, invalid("metadata.interchange_format_version",
			"version %s is not supported: only version %s (EIP-3076) is; export the history again with a current validator client", quote(version), FormatVersion)
	}
	s, err := str(meta.GVR)
	if err != nil {
		return nil, invalid("metadata.genesis_validators_root", "%v", err)
	}
	root, err := ParseRoot(s)
	if err != nil {
		return nil, invalid("metadata.genesis_validators_root", "%v", err)
	}
	if root != gvr {
		return nil, invalid("metadata.genesis_validators_root",
			"%s is another chain's; this chain's genesis validators root is %s (was the history exported on another network?)", FormatRoot(root), FormatRoot(gvr))
	}
	if missing(file.Data) {
		return nil, invalid("data", "missing (want an array, [] for no keys)")
	}
	var entries []json.RawMessage
	if err := unmarshalArray(file.Data, &entries); err != nil {
		return nil, invalid("data", "%v", err)
	}
	out := make(map[store.Pubkey]Watermarks)
	for i, raw := range entries {
		at := fmt.Sprintf("data[%d]", i)
		pk, w, err := parseEntry(at, raw, allowed)
		if err != nil {
			return nil, err
		}
		out[pk] = out[pk].Merge(w)
	}
	for pk, w := range out {
		if w.Empty() {
			delete(out, pk)
		}
	}
	return out, nil
}

// parseEntry reads one element of data.
func parseEntry(at string, raw json.RawMessage, allowed Allowed) (store.Pubkey, Watermarks, error) {
	var pk store.Pubkey
	var w Watermarks
	var e struct {
		Pubkey json.RawMessage `json:"pubkey"`
		Blocks json.RawMessage `json:"signed_blocks"`
		Atts   json.RawMessage `json:"signed_attestations"`
	}
	if err := unmarshalObject(raw, &e); err != nil {
		return pk, w, invalid(at, "%v", err)
	}
	s, err := str(e.Pubkey)
	if err != nil {
		return pk, w, invalid(at+".pubkey", "%v", err)
	}
	if err := parseHex(s, pk[:]); err != nil {
		return pk, w, invalid(at+".pubkey", "%s: %v", quote(s), err)
	}
	if allowed != nil {
		if err := allowed(pk); err != nil {
			return pk, w, invalid(at+".pubkey", "key %s: %v", pk, err)
		}
	}
	if missing(e.Blocks) {
		return pk, w, invalid(at+".signed_blocks", "missing (want an array, [] when the key signed no block)")
	}
	var blocks []json.RawMessage
	if err := unmarshalArray(e.Blocks, &blocks); err != nil {
		return pk, w, invalid(at+".signed_blocks", "%v", err)
	}
	for j, raw := range blocks {
		bat := fmt.Sprintf("%s.signed_blocks[%d]", at, j)
		var b struct {
			Slot        json.RawMessage `json:"slot"`
			SigningRoot json.RawMessage `json:"signing_root"`
		}
		if err := unmarshalObject(raw, &b); err != nil {
			return pk, w, invalid(bat, "%v", err)
		}
		slot, err := number(b.Slot)
		if err != nil {
			return pk, w, invalid(bat+".slot", "%v", err)
		}
		if err := signingRoot(b.SigningRoot); err != nil {
			return pk, w, invalid(bat+".signing_root", "%v", err)
		}
		w = w.Merge(Watermarks{HasBlock: true, BlockSlot: slot})
	}
	if missing(e.Atts) {
		return pk, w, invalid(at+".signed_attestations", "missing (want an array, [] when the key signed no attestation)")
	}
	var atts []json.RawMessage
	if err := unmarshalArray(e.Atts, &atts); err != nil {
		return pk, w, invalid(at+".signed_attestations", "%v", err)
	}
	for j, raw := range atts {
		aat := fmt.Sprintf("%s.signed_attestations[%d]", at, j)
		var a struct {
			Source      json.RawMessage `json:"source_epoch"`
			Target      json.RawMessage `json:"target_epoch"`
			SigningRoot json.RawMessage `json:"signing_root"`
		}
		if err := unmarshalObject(raw, &a); err != nil {
			return pk, w, invalid(aat, "%v", err)
		}
		source, err := number(a.Source)
		if err != nil {
			return pk, w, invalid(aat+".source_epoch", "%v", err)
		}
		target, err := number(a.Target)
		if err != nil {
			return pk, w, invalid(aat+".target_epoch", "%v", err)
		}
		if source > target {
			return pk, w, invalid(aat, "key %s: source epoch %d is after target epoch %d (no honest attestation has that)", pk, source, target)
		}
		if err := signingRoot(a.SigningRoot); err != nil {
			return pk, w, invalid(aat+".signing_root", "%v", err)
		}
		w = w.Merge(Watermarks{HasAttestation: true, SourceEpoch: source, TargetEpoch: target})
	}
	return pk, w, nil
}

// Write returns an interchange (format version 5, the EIP's complete form,
// indented JSON with a final newline) for the chain of gvr that carries
// each key's watermarks: one signed block at the watermark slot and one
// signed attestation with the watermark source and target epochs, without
// signing roots, keys in pubkey order. Keys whose watermarks are empty get
// no entry. Write fails (ErrInvalid) on watermarks whose source epoch is
// after their target epoch, which no validator client would import.
func Write(gvr [32]byte, marks map[store.Pubkey]Watermarks) ([]byte, error) {
	type block struct {
		Slot string `json:"slot"`
	}
	type attestation struct {
		Source string `json:"source_epoch"`
		Target string `json:"target_epoch"`
	}
	type entry struct {
		Pubkey       string        `json:"pubkey"`
		Blocks       []block       `json:"signed_blocks"`
		Attestations []attestation `json:"signed_attestations"`
	}
	type metadata struct {
		Version string `json:"interchange_format_version"`
		GVR     string `json:"genesis_validators_root"`
	}
	file := struct {
		Metadata metadata `json:"metadata"`
		Data     []entry  `json:"data"`
	}{Metadata: metadata{Version: FormatVersion, GVR: FormatRoot(gvr)}, Data: []entry{}}
	for _, pk := range sortedPubkeys(marks) {
		w := marks[pk]
		if w.Empty() {
			continue
		}
		if err := store.ValidateProtection(pk, w); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		e := entry{Pubkey: pk.String(), Blocks: []block{}, Attestations: []attestation{}}
		if w.HasBlock {
			e.Blocks = append(e.Blocks, block{Slot: strconv.FormatUint(w.BlockSlot, 10)})
		}
		if w.HasAttestation {
			e.Attestations = append(e.Attestations, attestation{
				Source: strconv.FormatUint(w.SourceEpoch, 10), Target: strconv.FormatUint(w.TargetEpoch, 10),
			})
		}
		file.Data = append(file.Data, e)
	}
	b, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// invalid returns an error wrapping ErrInvalid at a place of the file.
func invalid(at, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if at != "" {
		msg = at + ": " + msg
	}
	return fmt.Errorf("%w: %s", ErrInvalid, msg)
}

// missing reports whether a field is absent or null.
func missing(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// unmarshalObject decodes a JSON object into v (a struct of raw fields).
func unmarshalObject(raw json.RawMessage, v any) error {
	if kind := jsonKind(raw); kind != "an object" {
		return fmt.Errorf("want a JSON object, got %s", kind)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("not valid JSON: %v", err)
	}
	return nil
}

// unmarshalArray decodes a JSON array.
func unmarshalArray(raw json.RawMessage, v *[]json.RawMessage) error {
	if kind := jsonKind(raw); kind != "an array" {
		return fmt.Errorf("want an array, got %s", kind)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("not valid JSON: %v", err)
	}
	return nil
}

// jsonKind names the kind of JSON value raw starts with.
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimLeft(raw, " \t\r\n")
	if len(t) == 0 {
		return "nothing"
	}
	switch c := t[0]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		return "a number (EIP-3076 writes numbers as decimal strings, e.g. \"81952\")"
	}
	return "something that is not JSON"
}

// str decodes a required JSON string.
func str(raw json.RawMessage) (string, error) {
	if missing(raw) {
		return "", errors.New("missing")
	}
	if kind := jsonKind(raw); kind != "a string" {
		return "", fmt.Errorf("want a string, got %s", kind)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("not a valid JSON string: %v", err)
	}
	return s, nil
}

// number decodes a required slot or epoch: a decimal string.
func number(raw json.RawMessage) (uint64, error) {
	s, err := str(raw)
	if err != nil {
		return 0, err
	}
	return ParseDecimal(s)
}

// ParseDecimal reads a slot or epoch as EIP-3076 writes it: decimal
// digits only, no sign, spaces or leading zeros ("0" is zero), at most
// 2^64-1.
func ParseDecimal(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%s is not a decimal number (digits only)", quote(s))
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%s has leading zeros", quote(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s does not fit in 64 bits", quote(s))
	}
	return n, nil
}

// signingRoot checks an optional signing_root.
func signingRoot(raw json.RawMessage) error {
	if missing(raw) {
		return nil
	}
	s, err := str(raw)
	if err != nil {
		return err
	}
	_, err = ParseRoot(s)
	return err
}

// parseHex reads 0x-prefixed hex into exactly len(dst) bytes.
func parseHex(s string, dst []byte) error {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		return errors.New("want 0x-prefixed hex")
	}
	if len(h) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits after 0x, got %d", 2*len(dst), len(h))
	}
	if _, err := hex.Decode(dst, []byte(h)); err != nil {
		return errors.New("not hex")
	}
	return nil
}

// quote quotes s for an error message, cut to a sensible length.
func quote(s string) string {
	const limit = 110 // a public key and a bit
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strconv.Quote(s)
}

// sortedPubkeys returns the keys of m in pubkey order.
func sortedPubkeys[V any](m map[store.Pubkey]V) []store.Pubkey {
	pks := make([]store.Pubkey, 0, len(m))
	for pk := range m {
		pks = append(pks, pk)
	}
	slices.SortFunc(pks, func(a, b store.Pubkey) int { return bytes.Compare(a[:], b[:]) })
	return pks
}
