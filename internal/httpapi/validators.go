package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/pkmanager/pkmanager/internal/exits"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/store"
)

// The validator lifecycle on the HTTP API: each key's last reading from the
// beacon node on /assignments and GET /api/v1/keys, and POST
// /api/v1/keys/exit.

// ValidatorReader returns the keys' stored validator readings
// (store.Lifecycle.Validators).
type ValidatorReader interface {
	Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error)
}

// Exiter signs and submits voluntary exits (*server.Server).
type Exiter interface {
	ExitKeys(ctx context.Context, req lifecycle.ExitRequest) ([]lifecycle.Signed, error)
}

// statusUnknown is the status filter value of keys without a reading.
const statusUnknown = lifecycle.StatusUnknown

// parseStatuses reads the repeated (or comma-separated) status parameter:
// beacon API validator statuses, or "unknown" for keys the node did not
// report.
func parseStatuses(values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if part != statusUnknown && !slices.Contains(store.ValidatorStatuses, part) {
				return nil, invalidf("unknown validator status %q; want one of %s or %s", truncate(part, 40),
					strings.Join(store.ValidatorStatuses, ", "), statusUnknown)
			}
			out = append(out, part)
		}
	}
	return out, nil
}

// readingChunk bounds one Validators call of a page.
const readingChunk = 10000

// readings returns the stored readings of pubkeys (none without a reader).
func (s *server) readings(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error) {
	out := map[store.Pubkey]store.ValidatorStatus{}
	if s.cfg.Validators == nil {
		return out, nil
	}
	for start := 0; start < len(pubkeys); start += readingChunk {
		got, err := s.cfg.Validators.Validators(ctx, pubkeys[start:min(start+readingChunk, len(pubkeys))])
		if err != nil {
			return nil, fmt.Errorf("read validator statuses: %w", err)
		}
		for pk, v := range got {
			out[pk] = v
		}
	}
	return out, nil
}

// addReadings fills the rows' validator statuses and keeps only the rows
// whose status is one of statuses (all when empty).
func (s *server) addReadings(ctx context.Context, data *assignData, statuses []string) error {
	if s.cfg.Validators == nil {
		if len(statuses) > 0 {
			return invalidf("this server reads no validator statuses (no --beacon-url)")
		}
		return nil
	}
	data.withStatus = true
	pks := make([]store.Pubkey, len(data.rows))
	for i := range data.rows {
		pks[i] = data.rows[i].pubkey
	}
	rs, err := s.readings(ctx, pks)
	if err != nil {
		return err
	}
	for i := range data.rows {
		if v, ok := rs[data.rows[i].pubkey]; ok {
			data.rows[i].status = v.Status
			data.rows[i].index = int64(v.Index)
		} else {
			data.rows[i].index = -1
		}
	}
	if len(statuses) > 0 {
		data.rows = slices.DeleteFunc(data.rows, func(r assignRow) bool {
			st := r.status
			if st == "" {
				st = statusUnknown
			}
			return !slices.Contains(statuses, st)
		})
	}
	return nil
}

// appendValidatorJSON appends ,"validator":{...} for a reading.
func appendValidatorJSON(b []byte, v store.ValidatorStatus) []byte {
	b = append(b, `,"validator":{"index":`...)
	b = strconv.AppendUint(b, v.Index, 10)
	b = appendJSONField(b, false, "status", v.Status)
	b = append(b, `,"balance_gwei":`...)
	b = strconv.AppendUint(b, v.Balance, 10)
	b = append(b, `,"activation_epoch":`...)
	b = appendEpoch(b, v.ActivationEpoch)
	b = append(b, `,"exit_epoch":`...)
	b = appendEpoch(b, v.ExitEpoch)
	b = append(b, `,"slashed":`...)
	b = strconv.AppendBool(b, v.Slashed)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendUint(b, v.Epoch, 10)
	b = append(b, `,"read_at":`...)
	b = appendJSONTime(b, v.At)
	return append(b, '}')
}

// appendEpoch writes an epoch, null for FAR_FUTURE_EPOCH (not set).
func appendEpoch(b []byte, e uint64) []byte {
	if e == ^uint64(0) {
		return append(b, "null"...)
	}
	return strconv.AppendUint(b, e, 10)
}

type exitBody struct {
	Pubkeys []string `json:"pubkeys"`
	Count   int      `json:"count"`
	Force   bool     `json:"force"`
	// Submit: send to the beacon node (default true); false only signs.
	Submit *bool  `json:"submit"`
	Reason string `json:"reason"`
}

type exitEntry struct {
	Pubkey         string     `json:"pubkey"`
	ValidatorIndex uint64     `json:"validator_index"`
	Submitted      bool       `json:"submitted"`
	SignedExit     exits.File `json:"signed_exit"`
}

// exitKeys serves POST /api/v1/keys/exit: {"pubkeys":[...]} or
// {"count":N}, "force", "submit" (default true), "reason" ->
// {"exits":[{"pubkey","validator_index","submitted","signed_exit"}]}.
func (s *server) exitKeys(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Exits == nil {
		return lifecycle.ErrNoBeacon
	}
	var body exitBody
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	req := lifecycle.ExitRequest{Count: body.Count, Force: body.Force, Submit: body.Submit == nil || *body.Submit, Reason: body.Reason}
	for _, p := range body.Pubkeys {
		pk, err := store.ParsePubkey(p)
		if err != nil {
			return invalidf("%w", err)
		}
		req.Pubkeys = append(req.Pubkeys, pk)
	}
	if body.Count < 0 {
		return invalidf("count %d is negative", body.Count)
	}
	out, err := s.cfg.Exits.ExitKeys(r.Context(), req)
	if err != nil && len(out) == 0 {
		return err
	}
	resp := struct {
		Exits []exitEntry `json:"exits"`
		Error string      `json:"error,omitempty"`
	}{Exits: []exitEntry{}}
	for _, e := range out {
		resp.Exits = append(resp.Exits, exitEntry{Pubkey: e.Pubkey.String(), ValidatorIndex: uint64(e.Exit.Message.ValidatorIndex),
			Submitted: e.Submitted, SignedExit: exits.FileOf(e.Exit)})
	}
	if err != nil {
		// Signed, some not submitted: the exits are the operator's to
		// submit again; say what failed.
		resp.Error = err.Error()
	}
	return writeJSON(w, resp)
}

// appendStatusCell closes the row's last cell and opens its validator
// cell: the status and index, or a note for keys the node did not report.
func appendStatusCell(b []byte, row *assignRow) []byte {
	if row.status == "" {
		return append(b, `</td><td><small title="the beacon node has no validator for this key (yet): a deposit appears hours after it is made, so this does not mean it was not deposited">not seen</small>`...)
	}
	switch row.status {
	case store.StatusPendingInitialized, store.StatusPendingQueued, store.StatusActiveOngoing:
		b = append(b, `</td><td>`...)
	default:
		b = append(b, `</td><td class="vs-bad">`...)
	}
	b = appendHTML(b, row.status)
	b = append(b, ` <small>#`...)
	b = strconv.AppendInt(b, row.index, 10)
	return append(b, `</small>`...)
}
