package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// requestBody is the body of POST /api/v1/keys/request.
type requestBody struct {
	PodName string `json:"pod_name"`
	Count   int    `json:"count"`
	PodUID  string `json:"pod_uid"`
}

// requestKeys hands the pod its keys, secrets included.
func (s *server) requestKeys(w http.ResponseWriter, r *http.Request) error {
	var body requestBody
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if body.Count < 0 {
		return invalidf("count must not be negative, got %d", body.Count)
	}
	res, err := s.cfg.Allocator.Request(r.Context(), body.PodName, body.PodUID, body.Count)
	if err != nil {
		return err
	}
	handed := make([]slashing.Handed, len(res.Keys))
	for i, k := range res.Keys {
		handed[i] = slashing.Handed{Pubkey: k.Pubkey, ReleasedAt: k.ReleasedAt}
	}
	exp, err := s.cfg.Slashing.ForRequest(r.Context(), handed)
	if err != nil {
		for i := range res.Keys {
			clear(res.Keys[i].Secret)
		}
		// The keys stay the pod's; its retry gets them with their history.
		return fmt.Errorf("pod %s: %w", body.PodName, err)
	}
	// Build the body by hand so the secrets exist only in byte slices that
	// are wiped once written.
	b := make([]byte, 0, 64+len(res.Keys)*256)
	b = append(b, `{"keys":[`...)
	for i := range res.Keys {
		k := &res.Keys[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"pubkey":"`...)
		b = appendPubkey(b, &k.Pubkey)
		b = append(b, `","secret_key":"0x`...)
		n := len(b)
		b = append(b, make([]byte, 2*len(k.Secret))...)
		hexEncode(b[n:], k.Secret)
		b = append(b, '"')
		if k.HasDerivationIndex {
			b = append(appendDerivationPath(append(b, `,"derivation_path":"`...), k.DerivationIndex), '"')
		}
		b = appendJSONField(b, false, "origin", string(k.Origin))
		b = append(b, '}')
		clear(k.Secret)
	}
	b = append(b, `],"recycled":`...)
	b = appendJSONInt(b, res.Recycled)
	b = append(b, `,"minted":`...)
	b = appendJSONInt(b, res.Minted)
	if exp.Known {
		b = appendJSONField(b, false, "genesis_validators_root", slashing.FormatRoot(exp.GenesisValidatorsRoot))
	}
	if len(exp.Interchange) > 0 {
		var sp bytes.Buffer
		if err := json.Compact(&sp, exp.Interchange); err != nil {
			clear(b)
			return fmt.Errorf("pod %s: slashing-protection interchange: %w", body.PodName, err)
		}
		b = append(b, `,"slashing_protection":`...)
		b = append(b, sp.Bytes()...)
	}
	b = append(b, "}\n"...)

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, err = w.Write(b)
	clear(b)
	if err != nil {
		// The keys are committed to the pod; a retry returns the same set.
		s.log.InfoContext(r.Context(), "http: write keys response", "pod", body.PodName, "error", err)
	}
	return nil
}

// releaseBody is the body of POST /api/v1/keys/release.
type releaseBody struct {
	PodName string `json:"pod_name"`
	PodUID  string `json:"pod_uid"`
	// SlashingProtection is the pod's validator client's EIP-3076
	// interchange (the JSON object as exported), optional.
	SlashingProtection json.RawMessage `json:"slashing_protection"`
}

// maxReleaseBody bounds a release body: an interchange and a little more.
const maxReleaseBody = slashing.MaxFileBytes + MaxBodyBytes

// releaseResponse answers POST /api/v1/keys/release.
type releaseResponse struct {
	Released     int    `json:"released"`
	CoolingUntil string `json:"cooling_until,omitempty"`
	Message      string `json:"message"`
	// SlashingProtectionKeys counts the keys whose uploaded watermarks
	// were recorded with the release.
	SlashingProtectionKeys int `json:"slashing_protection_keys,omitempty"`
}

// releaseKeys returns the pod's keys to the pool after the cooling-down period.
func (s *server) releaseKeys(w http.ResponseWriter, r *http.Request) error {
	var body releaseBody
	if err := decodeJSONLimit(w, r, &body, maxReleaseBody); err != nil {
		return err
	}
	var prot map[store.Pubkey]store.Protection
	if sp := bytes.TrimSpace(body.SlashingProtection); len(sp) > 0 && string(sp) != "null" {
		if err := allocator.ValidatePodName(body.PodName); err != nil {
			return err
		}
		var err error
		if prot, err = s.cfg.Slashing.Upload(r.Context(), body.PodName, sp); err != nil {
			return err
		}
	}
	res, err := s.cfg.Allocator.ReleaseWithProtection(r.Context(), body.PodName, body.PodUID, prot)
	if err != nil {
		return err
	}
	out := releaseResponse{Released: res.Released, Message: res.Message(body.PodName)}
	if res.Released > 0 {
		out.CoolingUntil = res.CoolingUntil.UTC().Format(time.RFC3339)
	}
	out.SlashingProtectionKeys = len(prot)
	return writeJSON(w, out)
}

// retireBody is the body of POST /api/v1/keys/{pubkey}/retire.
type retireBody struct {
	Reason string `json:"reason"`
}

// retireResponse answers POST /api/v1/keys/{pubkey}/retire.
type retireResponse struct {
	Pubkey string      `json:"pubkey"`
	State  store.State `json:"state"`
	Reason string      `json:"reason"`
}

// retireKey takes a key out of circulation for good.
func (s *server) retireKey(w http.ResponseWriter, r *http.Request) error {
	pubkey, err := store.ParsePubkey(r.PathValue("pubkey"))
	if err != nil {
		return invalidf("%w", err)
	}
	var body retireBody
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if err := s.cfg.Allocator.Retire(r.Context(), pubkey, body.Reason); err != nil {
		return err
	}
	return writeJSON(w, retireResponse{Pubkey: pubkey.String(), State: store.StateRetired, Reason: strings.TrimSpace(body.Reason)})
}

// parseStates reads the repeated (or comma-separated) state parameter.
func parseStates(values []string) ([]store.State, error) {
	var states []store.State
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			st := store.State(part)
			if !st.Valid() {
				return nil, invalidf("unknown state %q; want one of %s", truncate(part, 40), stateNames())
			}
			states = append(states, st)
		}
	}
	return states, nil
}

// stateNames lists the valid states for error messages.
func stateNames() string {
	names := make([]string, len(store.States))
	for i, s := range store.States {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// listKeys streams the public records of the selected keys, page by page:
// the store holds nothing while a page is written (store.ListPages), so a
// client that reads slowly or not at all holds up no one else. With
// ?limit= it lists one page.
func (s *server) listKeys(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	states, err := parseStates(q["state"])
	if err != nil {
		return err
	}
	opts := store.ListOptions{States: states, Pod: q.Get("pod")}
	// The deposit transactions of a pod's keys or of pending ones, as
	// gRPC's ListKeys; other listings stay lean.
	opts.WithDeposit = opts.Pod != "" || slices.Contains(states, store.StatePendingDeposit)
	// ?limit= (with ?after=) asks for one page of keys (keyspage.go).
	pages, err := s.keyPages(w, r, opts)
	if err != nil {
		return err
	}

	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	b := make([]byte, 0, 1024)
	b = append(b, `{"keys":[`...)
	first := true
	err = pages(func(page []store.Key) error {
		pks := make([]store.Pubkey, len(page))
		for i := range page {
			pks[i] = page[i].Pubkey
		}
		rs, err := s.readings(r.Context(), pks)
		if err != nil {
			return err
		}
		prog := s.depositProgress(r.Context(), page)
		for i := range page {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendKeyJSON(b, &page[i])
			if v, ok := rs[page[i].Pubkey]; ok {
				b = appendValidatorJSON(b[:len(b)-1], v)
				b = append(b, '}')
			}
			b = appendDepositJSON(b, &page[i], prog)
			if _, err := bw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	b = append(b, "]}\n"...)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// appendKeyJSON appends the public fields of k as a JSON object. Empty
// optional fields are left out.
func appendKeyJSON(b []byte, k *store.Key) []byte {
	b = append(b, `{"pubkey":"`...)
	b = appendPubkey(b, &k.Pubkey)
	b = append(b, '"')
	b = appendJSONField(b, false, "state", string(k.State))
	if k.Pod != "" {
		b = appendJSONField(b, false, "pod_name", k.Pod)
	}
	if k.PodUID != "" {
		b = appendJSONField(b, false, "pod_uid", k.PodUID)
	}
	if k.LastPod != "" {
		b = appendJSONField(b, false, "last_pod_name", k.LastPod)
	}
	if !k.Since.IsZero() {
		b = append(b, `,"since":`...)
		b = appendJSONTime(b, k.Since)
	}
	if !k.CoolingUntil.IsZero() {
		b = append(b, `,"cooling_until":`...)
		b = appendJSONTime(b, k.CoolingUntil)
	}
	if k.RetiredReason != "" {
		b = appendJSONField(b, false, "retired_reason", k.RetiredReason)
	}
	if k.Origin != "" {
		b = appendJSONField(b, false, "origin", string(k.Origin))
	}
	if k.HasDerivationIndex {
		b = append(appendDerivationPath(append(b, `,"derivation_path":"`...), k.DerivationIndex), '"')
	}
	return append(b, '}')
}

// hexEncode writes src as lower-case hex into dst (len 2*len(src)).
func hexEncode(dst, src []byte) {
	for i, c := range src {
		dst[2*i] = hexDigits[c>>4]
		dst[2*i+1] = hexDigits[c&0xf]
	}
}

// truncate shortens user input quoted in error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
