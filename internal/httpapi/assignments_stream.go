package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

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
// the pods (PodSizes) first, then the pods in natural name order, in
// batches of about a page of keys, each batch's keys read with
// store.ListPages (a short read per page, nothing held while the client
// reads) a few batches ahead of the one written, and last the counts, read
// beside the listing once its first batch is written (on PostgreSQL a scan
// of every key, which the first byte does not wait for; laterCounts).
// Memory stays bounded by those batches, and the first byte goes out
// before the store is read through. As with ListPages the listing is not
// one snapshot: a pod that appears meanwhile is not listed, and a key that
// moves between two pods meanwhile (released and claimed again within the
// listing, which cooling-down makes rare) can be shown under both.
func (s *server) serveAssignmentsJSON(w http.ResponseWriter, r *http.Request, q *assignQuery, sizer podSizer) error {
	ctx, cancel := context.WithCancel(r.Context())
	counts := &laterCounts{read: s.cfg.Keys.Counts}
	// No read outlives the request.
	defer func() {
		cancel()
		counts.wait()
	}()
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
	sent := &sentWriter{w: w}
	bw := bufio.NewWriterSize(sent, 64<<10)
	err = s.writeAssignmentsStream(ctx, bw, q, pods, sizes, counts)
	if err == nil {
		err = bw.Flush()
	}
	switch {
	case err != nil && !sent.any:
		// Nothing reached the client yet (the listing fit the buffer):
		// an error status instead of an empty or partial body.
		s.assignmentsError(w, r, q.format, err)
	case err != nil:
		// The client went away or a read failed mid-listing: the body
		// is cut short, which a JSON client detects.
		s.log.InfoContext(ctx, "http: write assignments", slog.Any("error", err))
	}
	return err
}

// laterCounts reads the store's counts in a goroutine of its own, from
// start (or the first get) on: the streamed listing starts it once its
// first batch is written, so that the scan of every key (PostgreSQL's
// Counts) runs beside the rest of the listing, not before its first byte
// or beside its first read.
type laterCounts struct {
	read   func(context.Context) (map[store.State]int, error)
	once   sync.Once
	done   chan struct{} // closed when the read returns; nil until it starts
	counts map[store.State]int
	err    error
}

func (c *laterCounts) start(ctx context.Context) {
	c.once.Do(func() {
		c.done = make(chan struct{})
		go func() {
			defer close(c.done)
			c.counts, c.err = c.read(ctx)
		}()
	})
}

// get starts the read if it has not started and returns its result.
func (c *laterCounts) get(ctx context.Context) (map[store.State]int, error) {
	c.start(ctx)
	<-c.done
	if c.err != nil {
		return nil, fmt.Errorf("count keys: %w", c.err)
	}
	return c.counts, nil
}

// wait returns once a started read has returned.
func (c *laterCounts) wait() {
	if c.done != nil {
		<-c.done
	}
}

// sentWriter notes whether anything was written through it.
type sentWriter struct {
	w   io.Writer
	any bool
}

func (s *sentWriter) Write(p []byte) (int, error) {
	s.any = s.any || len(p) > 0
	return s.w.Write(p)
}

// streamAhead is how many batches writeAssignmentsStream reads ahead of
// the one it writes: the reads (each a short read transaction of its own)
// run on other cores while the client is written to, and memory stays
// bounded by streamAhead+2 batches.
const streamAhead = 2

// streamBatch is one batch of the streamed listing: the rows of a few
// pods, read into data by a goroutine of its own, which closes done.
type streamBatch struct {
	data  *assignData
	spare []assignRow // rows to sort data.rows into
	b     rowBuilder
	err   error
	done  chan struct{}
}

// podBatches cuts pods, in listing order, into batches of whole pods of
// about store.DefaultPage keys together (by sizes); a larger pod is a
// batch alone (read page by page).
func podBatches(pods []string, sizes map[string]int) [][]string {
	var out [][]string
	for len(pods) > 0 {
		i, n := 0, 0
		for i < len(pods) && (i == 0 || n+sizes[pods[i]] <= store.DefaultPage) {
			n += sizes[pods[i]]
			i++
		}
		out = append(out, pods[:i:i])
		pods = pods[i:]
	}
	return out
}

// writeAssignmentsStream writes the pods' keys batch by batch
// (podBatches), each batch read in one ListKeys of its pods
// (ListOptions.Pods) up to streamAhead batches ahead of the writing, then
// the counts (started once the first batch is written).
func (s *server) writeAssignmentsStream(ctx context.Context, bw *bufio.Writer, q *assignQuery, pods []string, sizes map[string]int, counts *laterCounts) error {
	ctx, cancel := context.WithCancel(ctx)
	blocked := s.releaseBlocked()
	queue := make(chan *streamBatch, streamAhead)
	free := make(chan *streamBatch, streamAhead+2)
	go func() {
		defer close(queue)
		for _, batch := range podBatches(pods, sizes) {
			var sb *streamBatch
			select {
			case sb = <-free:
			default:
				data := &assignData{}
				sb = &streamBatch{data: data, b: rowBuilder{data: data, q: q, blocked: blocked, index: make(map[string]int32)}}
			}
			sb.done = make(chan struct{})
			select {
			case queue <- sb:
			case <-ctx.Done():
				return
			}
			go func() {
				defer close(sb.done)
				sb.err = s.readBatch(ctx, sb, q, batch, sizes)
			}()
		}
	}()
	// Whatever ends the listing, no read outlives it.
	defer func() {
		cancel()
		for sb := range queue {
			<-sb.done
		}
	}()
	var j jsonListing
	for sb := range queue {
		<-sb.done
		if sb.err != nil {
			return sb.err
		}
		if err := j.rows(bw, sb.data); err != nil {
			return err
		}
		counts.start(ctx)
		select {
		case free <- sb:
		default:
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := counts.get(ctx)
	if err != nil {
		return err
	}
	return j.end(bw, c)
}

// readBatch reads the keys of the batch's pods into sb.data, grouped by
// pod in the batch's order, each pod's keys in pubkey order, with their
// validator statuses.
func (s *server) readBatch(ctx context.Context, sb *streamBatch, q *assignQuery, batch []string, sizes map[string]int) error {
	data, b := sb.data, &sb.b
	data.rows, data.pods = data.rows[:0], data.pods[:0]
	clear(b.index)
	// The batch's pods first, in listing order, so that the rows (read
	// in pubkey order) are grouped by sorting them by pod id.
	n := 0
	for _, pod := range batch {
		b.podID(pod)
		n += sizes[pod]
	}
	opts := store.ListOptions{States: q.shownStates(), Pods: batch}
	// A page one larger than the batch: one read for the pods that hold
	// what PodSizes said, and no page buffer larger than needed.
	page := min(n, store.DefaultPage) + 1
	if err := store.ListPages(ctx, s.cfg.Keys, opts, page, func(page []store.Key) error {
		for i := range page {
			b.add(&page[i])
		}
		return nil
	}); err != nil {
		return fmt.Errorf("list keys of pods %s to %s: %w", batch[0], batch[len(batch)-1], err)
	}
	// Sorted into the spare array, the rows' array the next spare.
	rows := countingSortTo(sb.spare, data.rows, len(data.pods), func(r *assignRow) int { return int(r.pod) })
	data.rows, sb.spare = rows, data.rows[:0]
	if q.format != formatText {
		return s.addReadings(ctx, data, nil)
	}
	return nil
}
