package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// AuditLister reads the audit trail (store.Store.ListAudit).
type AuditLister interface {
	ListAudit(ctx context.Context, after uint64, limit int) ([]store.AuditEvent, error)
}

// maxAuditLimit bounds one page of GET /api/v1/audit.
const maxAuditLimit = 1000

// auditEvent is the JSON form of a store.AuditEvent.
type auditEvent struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Action  string    `json:"action"`
	Pod     string    `json:"pod,omitempty"`
	PodUID  string    `json:"pod_uid,omitempty"`
	Pubkeys []string  `json:"pubkeys,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Actor   string    `json:"actor,omitempty"`
}

// listAudit serves GET /api/v1/audit?after=SEQ&limit=N&pod=NAME&action=A:
// the decisions about keys (releases and their reasons, release-blocked
// decisions of the pod watcher, retirements), oldest first. The answer's
// "next" is the after of the following page (0 when this page is the last).
func (s *server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return invalidf("after %q is not a sequence number", truncate(v, 40))
		}
		after = n
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			return invalidf("limit %q: want 1 to %d", truncate(v, 40), maxAuditLimit)
		}
		limit = n
	}
	pod, action := q.Get("pod"), q.Get("action")
	events, next, err := filterAudit(r.Context(), s.cfg.Audit, after, limit, func(e store.AuditEvent) bool {
		return (pod == "" || e.Pod == pod) && (action == "" || e.Action == action)
	})
	if err != nil {
		return err
	}
	out := struct {
		Events []auditEvent `json:"events"`
		Next   uint64       `json:"next"`
	}{Events: []auditEvent{}, Next: next}
	for _, e := range events {
		ae := auditEvent{Seq: e.Seq, Time: e.Time.UTC(), Action: e.Action, Pod: e.Pod, PodUID: e.PodUID, Reason: e.Reason, Actor: e.Actor}
		for _, p := range e.Pubkeys {
			ae.Pubkeys = append(ae.Pubkeys, p.String())
		}
		out.Events = append(out.Events, ae)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, out)
}

// maxAuditScan bounds how many events one GET /api/v1/audit reads from the
// store to fill a filtered page.
const maxAuditScan = 10 * maxAuditLimit

// filterAudit returns up to limit events after a sequence number that match,
// reading further pages of the trail until the page is full, the trail ends,
// or maxAuditScan events were read. next is the after of the following
// page: 0 when the trail ended, otherwise the last event read (which may be
// past the last one returned when the scan bound stopped it).
func filterAudit(ctx context.Context, l AuditLister, after uint64, limit int, match func(store.AuditEvent) bool) (events []store.AuditEvent, next uint64, err error) {
	// One more than limit tells whether the trail goes on; a filter that
	// matches rarely reads batches twice as large each time.
	for scanned, size := 0, limit+1; ; size = min(2*size, maxAuditLimit) {
		n := min(size, maxAuditScan-scanned)
		batch, err := l.ListAudit(ctx, after, n)
		if err != nil {
			return nil, 0, err
		}
		scanned += len(batch)
		for i, e := range batch {
			after = e.Seq
			if !match(e) {
				continue
			}
			events = append(events, e)
			if len(events) == limit {
				if i == len(batch)-1 && len(batch) < n {
					return events, 0, nil // the trail ended with this event
				}
				return events, after, nil
			}
		}
		if len(batch) < n {
			return events, 0, nil
		}
		if scanned >= maxAuditScan {
			return events, after, nil
		}
	}
}

// releaseBlocked returns the pod watcher's release-blocked pods (or none).
func (s *server) releaseBlocked() map[string]string {
	if s.cfg.ReleaseBlocked == nil {
		return nil
	}
	return s.cfg.ReleaseBlocked()
}

// appendBlocked adds the release-blocked note to an escaped pod cell.
func appendBlocked(cell []byte, reason string) []byte {
	if reason == "" {
		return cell
	}
	rule, _, _ := strings.Cut(reason, ": ")
	cell = append(cell, ` <small class="release-blocked" style="color:#c60" title="`...)
	cell = appendHTML(cell, reason)
	cell = append(cell, `">(release-blocked: `...)
	cell = appendHTML(cell, rule)
	cell = append(cell, `)</small>`...)
	return cell
}
