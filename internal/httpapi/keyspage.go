package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/pkmanager/pkmanager/internal/store"
)

// keyPages returns how GET /api/v1/keys walks its keys: the whole listing
// page by page (store.ListPages), or with ?limit=N (1 to maxPageSize) and
// optionally ?after=0x<pubkey> the first N keys after that public key, in
// public-key order, read in one short call before anything is written.
// A full page gets a Link header to the next one (RFC 8288, relative to
// the request: the same query with after = its last key); the body keeps
// its shape.
func (s *server) keyPages(w http.ResponseWriter, r *http.Request, opts store.ListOptions) (func(fn func([]store.Key) error) error, error) {
	q := r.URL.Query()
	whole := func(fn func([]store.Key) error) error {
		return store.ListPages(r.Context(), s.cfg.Keys, opts, 0, fn)
	}
	if !q.Has("limit") {
		if q.Has("after") {
			return nil, invalidf("after needs limit")
		}
		return whole, nil
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 || limit > maxPageSize {
		return nil, invalidf("limit %q: want 1 to %d", truncate(q.Get("limit"), 40), maxPageSize)
	}
	if a := q.Get("after"); a != "" {
		pk, err := store.ParsePubkey(a)
		if err != nil {
			return nil, invalidf("after: %w", err)
		}
		opts.After = &pk
	}
	opts.Limit = limit
	page, err := listPage(r.Context(), s.cfg.Keys, opts)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	if len(page) == limit {
		v := r.URL.Query()
		v.Set("after", page[len(page)-1].Pubkey.String())
		w.Header().Set("Link", "<?"+v.Encode()+`>; rel="next"`)
	}
	return func(fn func([]store.Key) error) error {
		if len(page) == 0 {
			return nil
		}
		return fn(page)
	}, nil
}

// listPage reads the keys opts selects (opts.Limit of them at most).
func listPage(ctx context.Context, l KeyLister, opts store.ListOptions) ([]store.Key, error) {
	page := make([]store.Key, 0, opts.Limit)
	err := l.ListKeys(ctx, opts, func(k store.Key) error {
		page = append(page, k)
		return nil
	})
	return page, err
}
