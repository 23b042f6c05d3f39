package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/pkmanager/pkmanager/internal/store"
)

// podSizer is the part of a store that lists its pods (store.Store's
// PodSizes): with it the JSON of /assignments is written pod by pod as it
// is read.
type podSizer interface {
	PodSizes(ctx context.Context) (map[string]int, error)
}

// streamsJSON reports whether the query's JSON can be written pod by pod
// (serveAssignmentsJSON): unpaged (no total to announce), no filter by
// validator status (it needs every reading first), and only states whose
// keys are listed under Key.Pod, which PodSizes covers.
func (q *assignQuery) streamsJSON() bool {
	if q.format != formatJSON || q.keys.size > 0 || len(q.statuses) > 0 {
		return false
	}
	for _, st := range q.shownStates() {
		if st != store.StateAssigned && st != store.StatePendingDeposit {
			return false
		}
	}
	return true
}

// serveAssignmentsJSON writes the JSON of /assignments while it reads it:
// the counts and the pods (PodSizes) first, then the pods in natural name
// order, each pod's keys read with store.ListPages (a short read per page,
// nothing held while the client reads) and written about a page at a
// time. Memory stays bounded by that batch, and the first byte goes out
// before the store is read through. As with ListPages the listing is not
// one snapshot: a pod that appears meanwhile is not listed, and a key that
// moves between two pods meanwhile (released and claimed again within the
// listing, which cooling-down makes rare) can be shown under both.
func (s *server) serveAssignmentsJSON(w http.ResponseWriter, r *http.Request, q *assignQuery, sizer podSizer) error {
	ctx := r.Context()
	counts, err := s.cfg.Keys.Counts(ctx)
	if err != nil {
		err = fmt.Errorf("count keys: %w", err)
		s.assignmentsError(w, r, q.format, err)
		return err
	}
	sizes, err := sizer.PodSizes(ctx)
	if err != nil {
		err = fmt.Errorf("list pods: %w", err)
		s.assignmentsError(w, r, q.format, err)
		return err
	}
	pods := slices.Collect(maps.Keys(sizes))
	if q.pod != "" {
		pods = slices.DeleteFunc(pods, func(p string) bool { return !strings.Contains(strings.ToLower(p), q.pod) })
	}
	slices.SortFunc(pods, naturalCompare)

	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	err = s.writeAssignmentsStream(ctx, bw, q, counts, pods, sizes)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// The client went away or a read failed mid-listing: the body
		// is cut short, which a JSON client detects.
		s.log.InfoContext(ctx, "http: write assignments", slog.Any("error", err))
	}
	return err
}

// writeAssignmentsStream reads and writes the pods' keys in batches of
// about store.DefaultPage keys (whole pods), then the counts.
func (s *server) writeAssignmentsStream(ctx context.Context, bw *bufio.Writer, q *assignQuery, counts map[store.State]int, pods []string, sizes map[string]int) error {
	states := q.shownStates()
	blocked := s.releaseBlocked()
	var j jsonListing
	data := &assignData{counts: counts}
	b := rowBuilder{data: data, q: q, blocked: blocked, index: make(map[string]int32)}
	flush := func() error {
		if q.format != formatText {
			if err := s.addReadings(ctx, data, nil); err != nil {
				return err
			}
		}
		if err := j.rows(bw, data); err != nil {
			return err
		}
		data.rows, data.pods = data.rows[:0], data.pods[:0]
		clear(b.index)
		return nil
	}
	for _, pod := range pods {
		opts := store.ListOptions{States: states, Pod: pod}
		// A page one larger than the pod: one read for the pod that
		// holds what PodSizes said, and no page buffer larger than needed.
		page := min(sizes[pod]+1, store.DefaultPage)
		if err := store.ListPages(ctx, s.cfg.Keys, opts, page, func(page []store.Key) error {
			for i := range page {
				b.add(&page[i])
			}
			return nil
		}); err != nil {
			return fmt.Errorf("list keys of pod %s: %w", pod, err)
		}
		if len(data.rows) >= store.DefaultPage {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return j.end(bw, counts)
}
